"""A process with its own Gatekeeper built from settings, for the SQLite store's cross-process tests.

* ``serve`` is a ``multiprocessing`` target (spawn): it builds a gate from a config file, then carries out
  the commands it receives on its pipe, one at a time, answering each.
* ``python sqlite_worker.py opt-out NUMBER`` builds a gate from the environment's settings, sends to the
  number, opts it out, prints ``done`` and sleeps (to be killed); ``python sqlite_worker.py notify NUMBER``
  prints what a notify to it does, as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from threading import Barrier
from typing import Any

from gatekeeper import Gatekeeper, Settings
from gatekeeper.aio import AsyncGatekeeper
from gatekeeper.stores.sqlite import SQLiteStore

FROM = "+15005550006"


def notify(gate: Gatekeeper, number: str) -> dict[str, Any]:
    """A notify to ``number``, and how many times it read the opt-out table."""
    store = gate.stores.opt_outs
    assert isinstance(store, SQLiteStore)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)  # type: ignore[union-attr]
    try:
        out = gate.notify(number, "hello", from_=FROM)
    finally:
        store._conn.set_trace_callback(None)  # type: ignore[union-attr]
    return {
        "action": out.action.value,
        "code": out.decision.twilio_code,
        "reasons": list(out.decision.reasons),
        "consent_reads": sum("FROM opt_outs" in s for s in statements),
    }


def serve(pipe: Connection, config: str, sandbox_url: str, barrier: Barrier) -> None:
    settings = Settings.load(config, env={"GATEKEEPER_SANDBOX_URL": sandbox_url})
    gate = Gatekeeper.from_settings(settings)

    def decide_async(number: str) -> str | None:
        """The same through an AsyncGatekeeper on the same file (its store run in worker threads)."""

        async def main() -> str | None:
            agate = AsyncGatekeeper.from_settings(settings)
            try:
                await asyncio.to_thread(barrier.wait, 30)
                facts = (await agate.decide(number)).facts
                return facts.source if facts else None
            finally:
                await agate.close()

        return asyncio.run(main())

    def decide(number: str) -> str | None:
        barrier.wait(timeout=30)  # every worker asks at once
        facts = gate.decide(number).facts
        return facts.source if facts else None

    def claim(key: str) -> bool:
        barrier.wait(timeout=30)
        return gate.stores.idempotency.claim(key, "fp", ttl_seconds=60).won

    commands: dict[str, Callable[..., Any]] = {
        "notify": lambda number: notify(gate, number),
        "opt_out": gate.opt_out,
        "decide": decide,
        "decide_async": decide_async,
        "claim": claim,
        "store": lambda: (type(gate.stores.opt_outs).__name__, str(gate.stores.opt_outs.path)),  # type: ignore[attr-defined]
    }
    try:
        while True:
            command, *args = pipe.recv()
            if command == "stop":
                return
            pipe.send(commands[command](*args))
    finally:
        gate.close()


def main(argv: list[str]) -> None:
    mode, number = argv
    gate = Gatekeeper.from_settings(Settings.load())
    if mode == "opt-out":
        assert gate.notify(number, "before", from_=FROM).sid
        gate.opt_out(number)
        print("done", flush=True)  # the opt-out call has returned: from here on it must survive anything
        time.sleep(60)
    else:
        print(json.dumps({**notify(gate, number), "store": str(gate.stores.opt_outs.path)}))  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
