"""The audit's write-behind for a networked store: a decision's record leaves with the next batch, not on the
caller's time.

An audit record is written after its decision and nothing waits on it, yet written in place it costs a send a
whole round trip to Redis (a third of a repeated number's decision, which otherwise is one screening round trip).
Here ``add`` only queues the record; a flusher (a daemon thread, or a task on the async store's loop) sends what is
queued as one command per batch of up to ``batch`` records, in the order they were added. It lingers ``linger``
seconds (50 ms) after the first record of a batch, unless the batch fills first: under load a batch carries many
records, so the audit costs a fraction of a round trip per decision, and the flusher wakes (and takes the GIL from
the deciding threads) a few times a second, not once per decision.

What it holds: at most ``max_pending`` records not yet sent (past that the oldest are dropped, counted and logged,
as a store that cannot be written drops them: the audit never blocks a send). What ends them: being sent, the
store's ``close`` (which sends what is left), or the process dying first — a crash loses the records of the last
moment, which a record written in place would have kept. Reads of the audit (``recent``, erasure) send what is
queued first, so a process reads its own records. A failed batch is dropped with a warning, as a failed in-place
write was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from gatekeeper.errors import StoreUnavailable
from gatekeeper.models import AuditEntry

log = logging.getLogger("gatekeeper.audit")

BATCH = 500
MAX_PENDING = 10_000
LINGER_SECONDS = 0.05


class _Queue:
    """The records waiting, bounded; what both flushers share."""

    def __init__(self, max_pending: int, batch: int) -> None:
        self._pending: deque[AuditEntry] = deque()
        self._max = max_pending
        self._batch = batch
        self._dropped = 0

    def add(self, entry: AuditEntry) -> None:
        if len(self._pending) >= self._max:
            self._pending.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("audit records dropped (%d so far): more queued than the store takes", self._dropped)
        self._pending.append(entry)

    def take(self) -> list[AuditEntry]:
        pending, n = self._pending, min(self._batch, len(self._pending))
        return [pending.popleft() for _ in range(n)]

    def __len__(self) -> int:
        return len(self._pending)


class AuditWriter:
    """Write-behind for a blocking store: ``send(entries)`` runs on a daemon thread (see the module docstring)."""

    def __init__(
        self,
        send: Callable[[Sequence[AuditEntry]], None],
        *,
        max_pending: int = MAX_PENDING,
        batch: int = BATCH,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self._send = send
        self._max_pending, self._batch_size, self._linger = max_pending, batch, linger
        self._reset()

    def _reset(self) -> None:
        self._queue = _Queue(self._max_pending, self._batch_size)
        self._lock = threading.Lock()  # guards the queue
        self._sending = threading.Lock()  # one batch at a time: records reach the stream in the order added
        self._wake = threading.Event()  # a record is queued
        self._now = threading.Event()  # a batch is full, or the writer closes: linger no more
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False

    def add(self, entry: AuditEntry) -> None:
        if self._pid != os.getpid():  # a forked worker: the parent's thread and queue are not this process's
            self._reset()
        with self._lock:
            self._queue.add(entry)
            full = len(self._queue) >= self._batch_size
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="gatekeeper-audit", daemon=True)
                self._thread.start()
        self._wake.set()
        if full:
            self._now.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._now.wait(self._linger)
            self._wake.clear()
            self._now.clear()
            self.flush()

    def flush(self) -> None:
        """Send every record queued so far (the caller waits)."""
        with self._sending:
            while True:
                with self._lock:
                    batch = self._queue.take()
                if not batch:
                    return
                try:
                    self._send(batch)
                except StoreUnavailable as exc:
                    log.warning("%d audit records dropped: %s", len(batch), exc)

    def close(self) -> None:
        """Send what is queued and stop the thread."""
        self._closed = True
        self._wake.set()
        self._now.set()
        self.flush()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


class AsyncAuditWriter:
    """Write-behind for an async store: ``send(entries)`` is awaited by a task on the store's loop."""

    def __init__(
        self,
        send: Callable[[Sequence[AuditEntry]], Awaitable[None]],
        *,
        max_pending: int = MAX_PENDING,
        batch: int = BATCH,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self._send = send
        self._queue = _Queue(max_pending, batch)
        self._batch_size, self._linger = batch, linger
        self._task: asyncio.Task[None] | None = None
        self._lingering = False
        self._sending: asyncio.Lock | None = None  # made on the loop that first sends

    def add(self, entry: AuditEntry) -> None:
        self._queue.add(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._lingered())

    async def _lingered(self) -> None:
        """Flush after the linger (the batch has time to fill), or at once when it is full already."""
        if len(self._queue) < self._batch_size:
            self._lingering = True
            try:
                await asyncio.sleep(self._linger)
            finally:
                self._lingering = False
        await self.flush()

    async def flush(self) -> None:
        """Send every record queued so far."""
        self._sending = self._sending or asyncio.Lock()
        async with self._sending:
            while batch := self._queue.take():
                try:
                    await self._send(batch)
                except StoreUnavailable as exc:
                    log.warning("%d audit records dropped: %s", len(batch), exc)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            if self._lingering:
                self._task.cancel()  # in its linger, not a send: the flush below sends what it would have
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
