"""Four processes share one Lookup budget on Redis against the sandbox's strict limit: no 20429, and the rate."""

from __future__ import annotations

import gc
import multiprocessing
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import clean_env, most_in_one_second

from gatekeeper import Gatekeeper, Stores
from gatekeeper.batch import enrich_file
from gatekeeper.sandbox import sandbox_client
from gatekeeper.sandbox.control import SandboxControlClient
from gatekeeper.stores.redis import RedisStore

RATE = 100.0  # Lookups per second for the four together: 25 each, so about 3.3 s for 320 rows
# Each process's first request leaves the bucket 20 ms of room (batch._COLD_SECONDS): 80 ms lost once per run. Over
# 160 rows that cost 5 % of the rate and left 0.9 within this host's noise (88.8-94.6 in 15 runs); over 320 rows
# the runs measured 94.5-95.4.
ROWS_EACH = 80


@pytest.fixture
def twilio() -> Iterator[tuple[str, SandboxControlClient]]:
    """A sandbox in a process of its own, as Twilio is: it dates each request when it reads it. In the test
    session's process it shared a GIL with the session's threads and heap, and a stall there dated a few requests
    late and together: the strict window then counted 101 (1 run in 6 after the webhook and store suites; in its
    own process, 0 in 12, and the rate 94.7-95.4 against 90.1-94.9)."""
    cmd = [sys.executable, "-m", "gatekeeper.cli", "sandbox", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=clean_env())
    try:
        assert proc.stdout is not None
        found = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())
        assert found, f"gatekeeper sandbox printed no URL (exit code {proc.poll()})"
        control = SandboxControlClient(found.group(0))
        yield found.group(0), control
        control.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def enrich_process(url: str, redis_url: str, prefix: str, src: str, out: str, ready: Any, go: Any, done: Any) -> None:
    """One enrich process: its own gate on the shared Redis prefix, warmed (connections opened, first-use costs
    paid) before the release, so the four start together."""
    gate = Gatekeeper(sandbox_client(url), stores=Stores.using(RedisStore.from_url(redis_url, prefix=prefix)))
    gate.decide(f"+1415555{abs(hash(src)) % 9000 + 1000}")
    ready.release()
    go.wait()
    summary = enrich_file(gate, src, out, rate_per_second=RATE)
    done.put(summary.looked_up)
    gate.close()


@pytest.mark.redis
def test_four_processes_on_one_bucket_get_no_20429_and_the_rate(twilio, redis_url, redis_prefix, files):
    """Four `enrich` processes on one Redis prefix against a sandbox that answers 20429 to any Lookup past RATE in
    a one-second window (no burst, the first second included): none is refused, no window holds more than RATE,
    and together they reach at least 0.9 of it."""
    url, sandbox = twilio
    # fork: the children start in milliseconds with everything imported. Freezing what the session holds first
    # spares them full collections of the test session's heap.
    ctx = multiprocessing.get_context("fork")
    ready, go, done = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    gc.freeze()
    procs = []
    try:
        for i in range(4):
            rows = "".join(f"+1415{3_000_000 + 100_000 * i + n:07d}\n" for n in range(ROWS_EACH))
            src, out = files.csv("phone\n" + rows, f"{i}.csv"), files.root / f"{i}.jsonl"
            args = (url, redis_url, redis_prefix, str(src), str(out), ready, go, done)
            procs.append(ctx.Process(target=enrich_process, args=args))
            procs[-1].start()
        for _ in procs:
            assert ready.acquire(timeout=30)
        sandbox.reset()  # forget the warm-up Lookups
        sandbox.set_rate_limit(RATE, route="lookup", strict=True)
        go.set()
        looked_up = [done.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=10)
    finally:
        gc.unfreeze()
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    assert looked_up == [ROWS_EACH] * 4 and [p.exitcode for p in procs] == [0] * 4

    requests = sandbox.requests("lookup")
    assert [r["status"] for r in requests if r["status"] != 200] == []  # no 20429, nor anything else
    times = sorted(r["received_at"] for r in requests)
    assert len(times) == 4 * ROWS_EACH
    assert most_in_one_second(times) <= RATE
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved >= 0.9 * RATE, achieved
    assert all(len(Path(files.root / f"{i}.jsonl").read_text().splitlines()) == ROWS_EACH for i in range(4))
