"""The audit's write-behind (``gatekeeper.stores.write_behind``): records leave in order, in batches, off the
caller's time; what is queued is sent by a read or a close; a failed batch or an overflow is dropped with a
warning, never raised to the decision that made the record."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
from stores.contract import T0, audit_entry

from gatekeeper.errors import StoreUnavailable
from gatekeeper.models import AuditEntry
from gatekeeper.stores.write_behind import AsyncAuditWriter, AuditWriter


class Sink:
    """A send that keeps the batches; held shut until ``opened`` is set, to let records pile up."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.opened = threading.Event()
        self.opened.set()
        self.entered = threading.Event()
        self.fail = False

    def __call__(self, entries: Sequence[AuditEntry]) -> None:
        self.entered.set()
        self.opened.wait(5)
        if self.fail:
            raise StoreUnavailable("the store is down")
        self.batches.append([e.at for e in entries])


def test_records_are_sent_in_order_in_batches_and_a_flush_waits_for_them() -> None:
    sink = Sink()
    sink.opened.clear()  # the first batch is held: the next records queue behind it
    writer = AuditWriter(sink, batch=4)
    for i in range(10):
        writer.add(audit_entry(T0 + i))
    sink.opened.set()
    writer.flush()
    sent = [at for batch in sink.batches for at in batch]
    assert sent == [T0 + i for i in range(10)]
    assert all(len(b) <= 4 for b in sink.batches) and len(sink.batches) >= 3
    writer.close()


def test_close_sends_what_is_queued_and_stops_the_thread() -> None:
    sink = Sink()
    writer = AuditWriter(sink)
    writer.add(audit_entry(T0))
    thread = writer._thread
    writer.close()
    assert [at for b in sink.batches for at in b] == [T0]
    assert thread is not None and not thread.is_alive()


def test_a_failed_batch_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    sink.fail = True
    writer = AuditWriter(sink)
    writer.add(audit_entry(T0))  # returns at once: the decision is not held by the audit
    writer.flush()
    assert "1 audit records dropped: the store is down" in caplog.text
    sink.fail = False
    writer.add(audit_entry(T0 + 1))
    writer.close()
    assert [at for b in sink.batches for at in b] == [T0 + 1]


def test_past_max_pending_the_oldest_are_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    sink.opened.clear()
    writer = AuditWriter(sink, max_pending=3, batch=100)
    writer.add(audit_entry(T0))
    assert sink.entered.wait(5)  # the thread took it and is held in the sink
    for i in range(1, 7):
        writer.add(audit_entry(T0 + i))
    sink.opened.set()
    writer.close()
    assert [at for b in sink.batches for at in b] == [T0, T0 + 4, T0 + 5, T0 + 6]  # the oldest queued dropped
    assert "audit records dropped (1 so far)" in caplog.text


def test_the_async_writer_sends_in_order_on_its_loop() -> None:
    batches: list[list[float]] = []

    async def send(entries: Sequence[AuditEntry]) -> None:
        await asyncio.sleep(0)
        batches.append([e.at for e in entries])

    async def main() -> None:
        writer = AsyncAuditWriter(send, batch=2)
        for i in range(5):
            writer.add(audit_entry(T0 + i))
        await writer.flush()
        assert [at for b in batches for at in b] == [T0 + i for i in range(5)]
        writer.add(audit_entry(T0 + 5))
        await writer.close()

    asyncio.run(main())
    assert [at for b in batches for at in b] == [T0 + i for i in range(6)]
    assert max(len(b) for b in batches) == 2
