"""Status callbacks: the events a message or call goes through, and their signed delivery.

Every accepted message or call gets a batch of events. An event changes the stored
resource when it is processed; if the resource has a ``StatusCallback`` the event is also
POSTed there, form-encoded, signed with ``X-Twilio-Signature`` (the account's auth token,
computed by twilio's own ``RequestValidator``) and carrying an ``I-Twilio-Idempotency-Token``
that is unique per event and repeated when the event is duplicated or retried.

``manual`` mode holds batches until :meth:`CallbackDispatcher.flush` (tests); ``auto`` mode
has a daemon thread deliver them a little later (demos).
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped, unused-ignore]

from gatekeeper.sandbox.config import CallbackConfig
from gatekeeper.sandbox.numbers import mask_path

_log = logging.getLogger("gatekeeper.sandbox.callbacks")

Resource = Literal["message", "call"]


@dataclass
class CallbackEvent:
    """One status change of one resource; ``apply`` writes it to the stored resource."""

    resource: Resource
    sid: str
    status: str
    params: dict[str, str]
    url: str | None
    auth_token: str
    apply: Callable[[], None]
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __repr__(self) -> str:  # keep the auth token and the numbers out of reprs
        return f"CallbackEvent({self.resource} {self.sid} {self.status})"


@dataclass(frozen=True)
class CallbackDelivery:
    """What was sent for one event and what the receiver answered.

    ``status_code`` is the last HTTP status received (None when every attempt failed to
    connect); ``attempts`` counts tries including retries; ``duplicate`` marks the extra copy.
    """

    url: str
    params: dict[str, str]
    idempotency_token: str
    signature: str
    status_code: int | None
    attempts: int
    error: str | None = None
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        """True when the receiver answered 2xx."""
        return self.status_code is not None and 200 <= self.status_code < 300

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view, for the control API."""
        return {
            "url": self.url,
            "params": dict(self.params),
            "idempotency_token": self.idempotency_token,
            "signature": self.signature,
            "status_code": self.status_code,
            "attempts": self.attempts,
            "error": self.error,
            "duplicate": self.duplicate,
            "ok": self.ok,
        }


def split_fragment(url: str) -> tuple[str, dict[str, str]]:
    """Split Twilio connection overrides (``#rc=3&ct=1000``) off a callback URL.

    The fragment never reaches the receiver, so the signature covers the URL without it.
    """
    parts = urlsplit(url)
    overrides: dict[str, str] = {}
    for item in parts.fragment.split("&"):
        key, _, value = item.partition("=")
        if key:
            overrides[key] = value
    return urlunsplit(parts._replace(fragment="")), overrides


def _post(url: str, params: dict[str, str], headers: dict[str, str], timeout: float) -> requests.Response:
    # A fresh session per attempt: the worker and flush() may run at once, and proxy
    # variables must not send a local callback elsewhere.
    with requests.Session() as session:
        session.trust_env = False
        response = session.post(url, data=params, headers=headers, timeout=timeout, allow_redirects=False)
        response.close()
        return response


class CallbackDispatcher:
    """Queues event batches and delivers them, in manual or auto mode."""

    def __init__(self, config: CallbackConfig, *, sleep: Callable[[float], None]) -> None:
        self.config = config
        self._sleep = sleep
        self._cond = threading.Condition()
        self._pending: list[list[CallbackEvent]] = []
        self._history: list[CallbackDelivery] = []
        self._rng = random.Random(config.seed)  # noqa: S311  (test behaviour, not security)
        self._worker: threading.Thread | None = None
        self._closed = False
        self._busy = 0

    # -- queueing -----------------------------------------------------------------------------

    def enqueue(self, batch: list[CallbackEvent]) -> None:
        """Queue the events of one resource; auto mode wakes the worker."""
        if not batch:
            return
        with self._cond:
            self._pending.append(batch)
            if self.config.mode == "auto":
                self._ensure_worker()
            self._cond.notify_all()

    def configure(self, changes: dict[str, Any]) -> None:
        """Change settings (see :class:`CallbackConfig`); a new ``seed`` restarts the RNG."""
        with self._cond:
            self.config.update(changes)
            if "seed" in changes:
                self._rng = random.Random(self.config.seed)  # noqa: S311
            if self.config.mode == "auto" and self._pending:
                self._ensure_worker()
            self._cond.notify_all()

    def pending(self) -> int:
        """How many events wait for delivery."""
        with self._cond:
            return sum(len(batch) for batch in self._pending)

    def flush(self) -> list[CallbackDelivery]:
        """Process every queued event now, in this thread; return what was sent and answered."""
        with self._cond:
            batches, self._pending = self._pending, []
        return self._process([event for batch in batches for event in batch])

    def history(self) -> list[CallbackDelivery]:
        """Every delivery made so far, oldest first."""
        with self._cond:
            return list(self._history)

    def reset(self) -> None:
        """Drop queued events and history, and restart the RNG from the seed."""
        with self._cond:
            self._pending.clear()
            self._history.clear()
            self._rng = random.Random(self.config.seed)  # noqa: S311

    def wait_idle(self, timeout_seconds: float = 5.0) -> bool:
        """In auto mode, wait until the worker has nothing queued or in flight."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and self._busy == 0, timeout_seconds)

    def close(self) -> None:
        """Stop the auto-mode worker (queued events stay queued)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        worker = self._worker
        if worker is not None:
            worker.join(timeout=2.0)

    # -- delivery -----------------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._closed = False
            self._worker = threading.Thread(target=self._run, name="sandbox-callbacks", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or (self._pending and self.config.mode == "auto"))
                if self._closed:
                    return
                batch = self._pending.pop(0)
                self._busy += 1
                delay = self.config.delay_seconds
            try:
                self._sleep(delay)
                self._process(batch)
            except Exception:  # a worker that dies silently would stall every later demo callback
                _log.exception("callback worker failed on a batch")
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _process(self, events: list[CallbackEvent]) -> list[CallbackDelivery]:
        # The resource changes in true order; only the transport reorders and duplicates.
        for event in events:
            event.apply()
        with self._cond:
            planned: list[tuple[CallbackEvent, bool]] = []
            for event in events:
                if event.url is None:
                    continue
                planned.append((event, False))
                if self.config.duplicate > 0 and self._rng.random() < self.config.duplicate:
                    planned.append((event, True))
            if self.config.reorder and len(planned) > 1:
                original = list(planned)
                self._rng.shuffle(planned)
                if planned == original:  # a shuffle may keep the order; reordering was asked for
                    planned.reverse()
            retries, timeout = self.config.retries, self.config.timeout_seconds
        deliveries = [self._deliver(event, duplicate, retries, timeout) for event, duplicate in planned]
        with self._cond:
            self._history.extend(deliveries)
        return deliveries

    def _deliver(self, event: CallbackEvent, duplicate: bool, retries: int, timeout: float) -> CallbackDelivery:
        assert event.url is not None  # filtered by _process
        url, overrides = split_fragment(event.url)
        if overrides.get("rc", "").isdigit():
            retries = min(5, int(overrides["rc"]))
        signature = RequestValidator(event.auth_token).compute_signature(url, event.params)
        headers = {
            "X-Twilio-Signature": signature,
            "I-Twilio-Idempotency-Token": event.token,
            "User-Agent": "TwilioProxy/1.1",
            "Accept": "*/*",
        }
        status: int | None = None
        error: str | None = None
        attempts = 0
        for _ in range(1 + max(0, retries)):
            attempts += 1
            try:
                response = _post(url, event.params, headers, timeout)
            except requests.RequestException as exc:
                status, error = None, type(exc).__name__
                continue
            status, error = response.status_code, None
            if 200 <= status < 300:
                break
        parts = urlsplit(url)  # log no query string: it may carry anything
        _log.debug(
            "callback %s %s to %s://%s%s -> %s after %d attempt(s)",
            event.resource,
            event.status,
            parts.scheme,
            parts.netloc,
            mask_path(parts.path),
            status if status is not None else error,
            attempts,
        )
        return CallbackDelivery(url, dict(event.params), event.token, signature, status, attempts, error, duplicate)
