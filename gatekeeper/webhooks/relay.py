"""Webhook events the shared store cannot take now: journalled, answered 2xx, replayed in order.

With a journal (``gate.stores.journal``, see :mod:`gatekeeper.stores.journal`), a verified event
whose processing fails with :class:`~gatekeeper.errors.StoreUnavailable` is appended to it (on this
host's disk, fsync'd) and answered as if processed: 200, with the reply its words call for. While
events wait, every new event goes behind them, so a STOP and the START after it are applied in the
order they came. The waiting events are replayed through the same processing as a live request:
before each new request, and by a background thread every ``[webhooks] journal_retry_seconds``
until none waits. One process replays at a time (the journal's lease); an event cut short and
replayed is applied once, by its idempotency key in the shared store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from werkzeug.datastructures import ImmutableMultiDict

from gatekeeper import metrics
from gatekeeper.errors import IdempotencyConflict, MalformedEvent, StoreUnavailable
from gatekeeper.webhooks.request import Incoming

if TYPE_CHECKING:
    from flask import Response

    from gatekeeper.stores.base import EventJournal
    from gatekeeper.webhooks.events import EventProcessor

log = logging.getLogger("gatekeeper.webhooks")

Handler = Callable[[Incoming], "Response"]


class Relay:
    """Carries events to the shared store, through the journal when it cannot take them (module docstring)."""

    def __init__(
        self,
        journal: EventJournal,
        processor: EventProcessor,
        handlers: Mapping[str, Handler],
        deferred: Callable[[str, Incoming], Response],
        *,
        retry_seconds: float,
        lease_seconds: float = 60.0,
    ) -> None:
        self.journal = journal
        self.processor = processor
        self.handlers = handlers
        self.deferred = deferred  # the answer to an event journalled instead of processed
        self.retry_seconds = retry_seconds
        self.lease_seconds = lease_seconds
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def handle(self, kind: str, verified: Incoming) -> Response:
        """Process ``verified`` now, or journal it: behind events that still wait, or when the store is down."""
        if self.journal.count() and not self.replay():
            return self._defer(kind, verified)
        try:
            return self.handlers[kind](verified)
        except StoreUnavailable as exc:
            log.warning("store unavailable (%s): journalling the %s event", exc, kind)
            return self._defer(kind, verified)

    def _defer(self, kind: str, verified: Incoming) -> Response:
        subject = self.processor.subject_of(kind, verified)  # MalformedEvent here is a 400, journalled or not
        params = list(verified.params.items(multi=True))
        self.journal.append(kind, subject, params, verified.idempotency_token, verified.body)
        self._wake()
        return self.deferred(kind, verified)

    def replay(self) -> bool:
        """Apply waiting events, oldest first, while the store takes them; True when none waits any more (False
        also when another process holds the replay lease)."""
        with self.journal.replaying(self.lease_seconds) as mine:
            if not mine:
                return False
            while entries := self.journal.pending():
                for entry in entries:
                    incoming = Incoming(ImmutableMultiDict(entry.params), entry.token, entry.body)
                    try:
                        self.handlers[entry.kind](incoming)
                    except (StoreUnavailable, IdempotencyConflict) as exc:  # down, or a request processing it now
                        log.info("journal replay paused at event %s: %s", entry.seq, type(exc).__name__)
                        return False
                    except MalformedEvent as exc:  # verified, but it can never apply: kept in the log, not the journal
                        log.error("journalled %s event %s cannot be applied, dropped: %s", entry.kind, entry.seq, exc)
                        metrics.webhook_handled(entry.kind, "dropped")
                    else:
                        metrics.webhook_handled(entry.kind, "replayed")
                    self.journal.applied(entry.seq)
            return True

    def _wake(self) -> None:
        """Start the background replayer, unless it runs."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._drain, name="gatekeeper-journal", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        while not self._stop.wait(self.retry_seconds):
            try:
                if self.replay():
                    return
            except StoreUnavailable as exc:  # the journal itself failed: try again later
                log.error("journal unavailable: %s", exc)

    def stop(self) -> None:
        """Stop the background replayer (the journal keeps what waits)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
