"""Twenty deliveries of one callback at once are processed exactly once, on the memory and the Redis store."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gatekeeper.gate import Gatekeeper

from .helpers import ALICE, BASE, PREFIX, Recorder, make_app, message_status, sign

THREADS = 20
URL = f"{BASE}{PREFIX}/messages/status"


class HeldStatuses:
    """A status store whose writer waits until every other delivery has been answered.

    That keeps the first delivery's claim pending while the 19 others arrive, so
    the test sees the race deterministically instead of hoping for it.
    """

    def __init__(self, inner: Any, others_answered: threading.Event) -> None:
        self._inner = inner
        self._others_answered = others_answered

    def apply_status(self, *args: Any, **kwargs: Any) -> bool:
        assert self._others_answered.wait(timeout=20), "the other deliveries never got an answer"
        return bool(self._inner.apply_status(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _check(gate: Gatekeeper) -> None:
    others_answered = threading.Event()
    gate.stores.statuses = HeldStatuses(gate.stores.statuses, others_answered)
    rec = Recorder()
    app = make_app(gate, rec)
    fields = message_status("undelivered", error=30003)
    headers = {"X-Twilio-Signature": sign(URL, fields)}
    barrier = threading.Barrier(THREADS)
    codes: list[int] = []
    lock = threading.Lock()

    def deliver() -> None:
        client = app.test_client()
        barrier.wait()  # release every delivery together
        code = client.post(f"{PREFIX}/messages/status", data=fields, headers=headers).status_code
        with lock:
            codes.append(code)
            if len(codes) == THREADS - 1:
                others_answered.set()

    threads = [threading.Thread(target=deliver) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert sorted(codes) == [200] + [503] * (THREADS - 1)  # one processed; the rest told to retry
    assert len(rec.status) == 1
    # Twilio's retry after the first has finished is a plain duplicate: 200, nothing processed again.
    retry = app.test_client().post(f"{PREFIX}/messages/status", data=fields, headers=headers)
    assert retry.status_code == 200
    assert len(rec.status) == 1
    now = gate.clock()
    assert gate.stores.failures.suppression(ALICE, now=now, window_seconds=3600, threshold=1) == "failures:1"
    assert gate.status_of(fields["MessageSid"]).status == "undelivered"  # type: ignore[union-attr]


def test_concurrent_duplicates_memory_store(gate: Gatekeeper) -> None:
    """Memory store: 20 simultaneous deliveries of one callback → processed exactly once."""
    _check(gate)


@pytest.mark.redis
def test_concurrent_duplicates_redis_store(redis_gate: Gatekeeper) -> None:
    """Redis store: 20 simultaneous deliveries of one callback → processed exactly once."""
    _check(redis_gate)
