"""Fault injection: latency, HTTP errors, 20429s, connection drops, and a rate limit (a token bucket, or a
strict one-second window).

A fault matches a route (``"lookup"``, ``"messages.create"``, ``"calls"`` as a prefix, or
``"*"``) and optionally one number, and can be limited to the next ``times`` matching
requests, so "fail the next 2 Lookups with 500, then answer normally" is one call.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

FaultKind = Literal["latency", "error", "too_many_requests", "drop"]
FAULT_KINDS: frozenset[str] = frozenset({"latency", "error", "too_many_requests", "drop"})
#: Route names the emulator gives its Twilio endpoints; a fault's ``route`` may be a prefix ("calls").
ROUTES: tuple[str, ...] = (
    "lookup",
    "messages.create",
    "messages.fetch",
    "calls.create",
    "calls.fetch",
    "verifications.create",
    "verification_checks.create",
    "executions.create",
    "executions.fetch",
)
#: WSGI environ key a fault sets to have :class:`DropMiddleware` drop the connection.
DROP_KEY = "gatekeeper.sandbox.drop"


@dataclass
class Fault:
    """One injected fault. ``times=None`` keeps it active until cleared; ``hits`` counts uses."""

    id: int
    kind: FaultKind
    route: str = "*"
    number: str | None = None
    times: int | None = None
    status: int = 500
    code: int = 20500
    message: str = "Internal Server Error"
    latency_seconds: float = 0.0
    retry_after_seconds: int = 1
    hits: int = 0

    def matches(self, route: str, number: str | None) -> bool:
        """True if this fault applies to a request on ``route`` for ``number``."""
        if self.times is not None and self.hits >= self.times:
            return False
        if self.number is not None and self.number != number:
            return False
        return _route_matches(self.route, route)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view, for the control API."""
        return asdict(self)


def route_known(route: str) -> bool:
    """True for ``"*"``, a full route name, or a prefix of one (``"calls"``)."""
    return route == "*" or any(r == route or r.startswith(route + ".") for r in ROUTES)


class TokenBucket:
    """Requests-per-second limit with a burst allowance; the clock is injected for tests."""

    def __init__(self, rate_per_second: float, burst: int, clock: Callable[[], float]) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("rate_per_second must be > 0 and burst >= 1")
        self.rate_per_second = rate_per_second
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> float:
        """Take one token; returns 0.0 on success, else the seconds until one is available."""
        now = self._clock()
        elapsed = max(0.0, now - self._last)  # a clock that steps back must not mint tokens
        self._last = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_second)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_second


class SlidingWindow:
    """The strict limit: at most ``limit`` requests in any one-second window, the first second included.

    No burst at all: a token bucket starts full and lets ``burst`` through at once *and* refills meanwhile, so
    its first second admits up to ``burst + rate``; this window admits ``limit`` in every second, whenever it
    starts. It holds a client to the exact promise "never more than R per second".
    """

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        if limit < 1:
            raise ValueError("a strict rate limit needs rate_per_second >= 1")
        self.limit = limit
        self._clock = clock
        self._admitted: deque[float] = deque()

    def take(self) -> float:
        """Admit one request; returns 0.0 on success, else the seconds until the window has room."""
        now = self._clock()
        while self._admitted and self._admitted[0] <= now - 1.0:
            self._admitted.popleft()
        if len(self._admitted) < self.limit:
            self._admitted.append(now)
            return 0.0
        return self._admitted[0] + 1.0 - now


@dataclass(frozen=True)
class FaultDecision:
    """What to do with one request: sleep first, then maybe answer with a fault."""

    latency_seconds: float = 0.0
    fault: Fault | None = None
    retry_after_seconds: int | None = None  # set when the rate limit refused the request


class FaultPlan:
    """The active faults and rate limit of one sandbox. Thread-safe."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._bucket: TokenBucket | SlidingWindow | None = None
        self._bucket_route = "*"

    def add(self, kind: str, **options: Any) -> Fault:
        """Add a fault; ``options`` are :class:`Fault` fields. Raises ``ValueError`` on bad input."""
        fault = _build_fault(next(self._ids), kind, options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault and the rate limit."""
        with self._lock:
            self._faults.clear()
            self._bucket = None

    def faults(self) -> list[Fault]:
        """The faults still able to fire (exhausted ones are dropped)."""
        with self._lock:
            return [f for f in self._faults if f.times is None or f.hits < f.times]

    def set_rate_limit(
        self, rate_per_second: float, burst: int | None = None, route: str = "*", *, strict: bool = False
    ) -> None:
        """Answer 20429 beyond ``rate_per_second`` (burst defaults to one second's worth); ``strict``: at most
        ``floor(rate_per_second)`` in any one-second window, no burst (see :class:`SlidingWindow`)."""
        if not route_known(route):
            raise ValueError(f"unknown route {route!r}; use '*' or one of {', '.join(ROUTES)}")
        if strict and burst is not None:
            raise ValueError("a strict rate limit has no burst; leave burst out")
        bucket: TokenBucket | SlidingWindow
        if strict:
            bucket = SlidingWindow(math.floor(rate_per_second), self._clock)
        else:
            size = burst if burst is not None else max(1, math.ceil(rate_per_second))
            bucket = TokenBucket(rate_per_second, size, self._clock)
        with self._lock:
            self._bucket, self._bucket_route = bucket, route

    def clear_rate_limit(self) -> None:
        """Lift the rate limit."""
        with self._lock:
            self._bucket = None

    def decide(self, route: str, number: str | None) -> FaultDecision:
        """Consume whatever applies to this request and say what to do."""
        with self._lock:
            if self._bucket is not None and _route_matches(self._bucket_route, route):
                wait = self._bucket.take()
                if wait > 0:
                    return FaultDecision(retry_after_seconds=max(1, math.ceil(wait)))
            latency = 0.0
            terminal: Fault | None = None
            for fault in self._faults:
                if not fault.matches(route, number):
                    continue
                if fault.kind == "latency":
                    fault.hits += 1
                    latency += fault.latency_seconds
                elif terminal is None:
                    fault.hits += 1
                    terminal = fault
            return FaultDecision(latency_seconds=latency, fault=terminal)


def _route_matches(pattern: str, route: str) -> bool:
    return pattern in ("*", route) or route.startswith(pattern + ".")


_DEFAULTS: dict[str, dict[str, Any]] = {
    "error": {"status": 500, "code": 20500, "message": "Internal Server Error"},
    "too_many_requests": {"status": 429, "code": 20429, "message": "Too Many Requests"},
    "drop": {},
    "latency": {},
}


def _build_fault(fault_id: int, kind: str, options: Mapping[str, Any]) -> Fault:
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault kind must be one of {', '.join(sorted(FAULT_KINDS))}")
    allowed = {
        "route",
        "number",
        "times",
        "status",
        "code",
        "message",
        "latency_seconds",
        "retry_after_seconds",
    }
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown fault options: {', '.join(sorted(unknown))}")
    merged: dict[str, Any] = {**_DEFAULTS[kind], **options}
    route = merged.get("route", "*")
    if not isinstance(route, str) or not route_known(route):
        raise ValueError(f"unknown route {route!r}; use '*' or one of {', '.join(ROUTES)}")
    times = merged.get("times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError("times must be a positive integer or null")
    status = merged.get("status", 500)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError("status must be an HTTP error status (400-599)")
    for key in ("code", "retry_after_seconds"):
        value = merged.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be a non-negative integer")
    latency = merged.get("latency_seconds", 0.0)
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not 0 <= latency <= 60:
        raise ValueError("latency_seconds must be between 0 and 60")
    if kind == "latency" and latency <= 0:
        raise ValueError("a latency fault needs latency_seconds > 0")
    number = merged.get("number")
    if number is not None and not isinstance(number, str):
        raise ValueError("number must be a string")
    message = merged.get("message", "")
    if not isinstance(message, str):
        raise ValueError("message must be a string")
    return Fault(
        id=fault_id,
        kind=kind,  # type: ignore[arg-type]  # checked against FAULT_KINDS above
        route=route,
        number=number,
        times=times,
        status=status,
        code=merged.get("code", 20500),
        message=message,
        latency_seconds=float(latency),
        retry_after_seconds=merged.get("retry_after_seconds", 1),
    )


class DropMiddleware:
    """Closes the socket without an answer when a ``drop`` fault fired.

    With Werkzeug's server the socket is in ``environ["werkzeug.socket"]``; shutting it down
    and raising ``ConnectionAbortedError`` makes the server treat the request as a dropped
    connection and write nothing, so the client sees the connection closed mid-request.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = self.app(environ, start_response)
        if not environ.get(DROP_KEY):
            return body
        close = getattr(body, "close", None)
        if close is not None:
            close()
        sock = environ.get("werkzeug.socket")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # already closed by the peer: dropped either way
                sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionAbortedError("sandbox fault: connection dropped")
