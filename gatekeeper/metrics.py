"""Prometheus metrics: what the gate decided, what Lookup and the sends cost, what the webhooks received.

The metrics live in prometheus-client's default registry, as an application's own metrics do, and any app can
expose them with ``prometheus_client``. ``gatekeeper serve`` and ``deploy/gunicorn.conf.py`` serve them with
:func:`serve` on ``[metrics] port`` (a port of its own, never the public webhook port; see ``docs/deploy.md``).
Under gunicorn's workers prometheus-client writes each process's samples to ``PROMETHEUS_MULTIPROC_DIR`` and
:func:`registry` merges them, so one scrape counts every worker. No label ever holds a phone number.
"""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from enum import Enum
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST, ThreadingWSGIServer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

T = TypeVar("T")

#: Seconds: from a millisecond (a webhook answered from Redis on the same host) to the 10 s of the default
#: ``[twilio] timeout_ms``; Lookup's 3 s timeout and Twilio's usual 100-500 ms answers fall in between.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

DECISIONS = Counter(
    "gatekeeper_decisions",
    "Decisions made by the gate, by purpose and action (refusals by Twilio code).",
    ["purpose", "action", "code"],
)
LOOKUPS = Counter(
    "gatekeeper_lookup_requests",
    "Lookup v2 requests sent to Twilio, by outcome (answered, invalid: 404, error: network or HTTP error).",
    ["outcome"],
)
CACHE = Counter(
    "gatekeeper_lookup_cache",
    "Lookup cache reads on the decision path, by result (hit, miss).",
    ["result"],
)
LOOKUP_SECONDS = Histogram(
    "gatekeeper_lookup_seconds",
    "Seconds each Lookup v2 HTTP request took (every attempt), by outcome as gatekeeper_lookup_requests.",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
SEND_SECONDS = Histogram(
    "gatekeeper_send_seconds",
    "Seconds each request a channel made to send took (every attempt), by API and outcome (sent, error).",
    ["api", "outcome"],
    buckets=LATENCY_BUCKETS,
)
WEBHOOK_SECONDS = Histogram(
    "gatekeeper_webhook_seconds",
    "Seconds each webhook request took to answer, by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
WEBHOOK_EVENTS = Counter(
    "gatekeeper_webhook_events",
    "Webhook requests by route and outcome (what was answered, see docs/deploy.md); replayed and dropped count "
    "journalled events as the journal applies them.",
    ["route", "outcome"],
)

LOOKUP_OUTCOMES = ("answered", "invalid", "error")
SEND_APIS = ("messages", "calls", "verify", "studio")
#: ``kind`` as the webhook views name it -> the ``route`` label.
WEBHOOK_ROUTES = {"inbound": "inbound", "message": "message_status", "call": "call_status", "verify": "verify_events"}
#: processed, duplicate (of an event already processed: answered 200, nothing done), journaled (the store could not
#: take it: kept in the local journal, answered 200), forbidden (bad signature: 403), too_large (413), malformed
#: (400), in_progress (the same event being processed: 503), unavailable (store down, no journal: 503), error (an
#: unexpected exception: 500); replayed / dropped: a journalled event applied later / that can never apply.
WEBHOOK_OUTCOMES = (
    "processed",
    "duplicate",
    "journaled",
    "forbidden",
    "too_large",
    "malformed",
    "in_progress",
    "unavailable",
    "error",
    "replayed",
    "dropped",
)

# Label children resolved once: on the hot path an increment is then a lock and an add. The label sets below
# are closed, so every series exists from the start (at 0): rate() sees the first event of each.
CACHE_HIT = CACHE.labels("hit")
_CACHE_MISS = CACHE.labels("miss")
_LOOKUPS = {outcome: LOOKUPS.labels(outcome) for outcome in LOOKUP_OUTCOMES}
_LOOKUP_SECONDS = {outcome: LOOKUP_SECONDS.labels(outcome) for outcome in LOOKUP_OUTCOMES}
_SEND_SECONDS = {(api, o): SEND_SECONDS.labels(api, o) for api in SEND_APIS for o in ("sent", "error")}
_WEBHOOK_SECONDS = {kind: WEBHOOK_SECONDS.labels(route) for kind, route in WEBHOOK_ROUTES.items()}
_WEBHOOK_EVENTS = {
    (kind, outcome): WEBHOOK_EVENTS.labels(route, outcome)
    for kind, route in WEBHOOK_ROUTES.items()
    for outcome in WEBHOOK_OUTCOMES
}


_decision_children: dict[tuple[str, str, int | None], Any] = {}


def decision_counter(purpose: str, action: str, code: int | None) -> Any:
    """The decisions counter for these labels (a handful of combinations: each resolved once).

    ``action`` may be an ``Action`` member, a ``str`` enum equal to its value, as the hot path passes it.
    """
    key = (purpose, action, code)
    child = _decision_children.get(key)
    if child is None:
        label = action.value if isinstance(action, Enum) else action
        child = _decision_children[key] = DECISIONS.labels(purpose, label, "" if code is None else str(code))
    return child


def decided(purpose: str, action: str, code: int | None) -> None:
    decision_counter(purpose, action, code).inc()


SPEND_REFUSALS = Counter(
    "gatekeeper_spend_refusals",
    "Sends that would have passed a [spend] cap (refused, or let through in observe mode), by period and scope.",
    ["period", "scope"],
)


def spend_refused(period: str, scope: str) -> None:
    SPEND_REFUSALS.labels(period, scope).inc()


QUIET_HOURS = Counter(
    "gatekeeper_quiet_hours",
    "Notifications in the recipient's quiet hours, by what [quiet] did (refuse, defer, observe: sent) and country.",
    ["mode", "country"],
)


def quiet_hours(mode: str, country: str | None) -> None:
    QUIET_HOURS.labels(mode, country or "unknown").inc()


def cache_read(hit: bool) -> None:
    (CACHE_HIT if hit else _CACHE_MISS).inc()


def lookup_request(outcome: str) -> None:
    _LOOKUPS[outcome].inc()


def lookup_timed(status: int | None, seconds: float) -> None:
    """One Lookup HTTP request took ``seconds``: Twilio answered ``status``, or nothing (None: a network error)."""
    if status is None or not (200 <= status < 300 or status == 404):
        _LOOKUP_SECONDS["error"].observe(seconds)
    else:
        _LOOKUP_SECONDS["invalid" if status == 404 else "answered"].observe(seconds)


def _send_children(api: str) -> tuple[Any, Any]:
    pair = _SEND_SECONDS.get((api, "sent")), _SEND_SECONDS.get((api, "error"))
    if pair[0] is None:  # an API this module does not list yet: resolved here, once per send
        return SEND_SECONDS.labels(api, "sent"), SEND_SECONDS.labels(api, "error")
    return pair


def timed_send(create: Callable[..., T], api: str) -> Callable[..., T]:
    """``create`` (one SDK create on ``api``), each call observed in ``gatekeeper_send_seconds``: a retried send
    is observed per attempt, so the histogram is Twilio's latency without the backoff between attempts."""
    sent, failed = _send_children(api)

    def call(*args: Any, **kwargs: Any) -> T:
        started = perf_counter()
        try:
            result = create(*args, **kwargs)
        except Exception:
            failed.observe(perf_counter() - started)
            raise
        sent.observe(perf_counter() - started)
        return result

    return call


def timed_send_async(create: Callable[..., Awaitable[T]], api: str) -> Callable[..., Awaitable[T]]:
    """:func:`timed_send` for an SDK ``create_async``."""
    sent, failed = _send_children(api)

    async def call(*args: Any, **kwargs: Any) -> T:
        started = perf_counter()
        try:
            result = await create(*args, **kwargs)
        except Exception:
            failed.observe(perf_counter() - started)
            raise
        sent.observe(perf_counter() - started)
        return result

    return call


def webhook_handled(kind: str, outcome: str, seconds: float | None = None) -> None:
    """One webhook request of ``kind`` (inbound, message, call, verify) answered with ``outcome`` in ``seconds``
    (None: a journalled event applied outside any request, counted only)."""
    _WEBHOOK_EVENTS[kind, outcome].inc()
    if seconds is not None:
        _WEBHOOK_SECONDS[kind].observe(seconds)


# -- exposition ------------------------------------------------------------------------------
_merged: CollectorRegistry | None = None


def registry() -> CollectorRegistry:
    """What ``/metrics`` shows: this process's registry or, when prometheus-client writes its samples to
    ``PROMETHEUS_MULTIPROC_DIR`` (it decides at import, from the environment), every process's files merged."""
    global _merged  # noqa: PLW0603 - one collector per process, made on the first scrape
    if values.ValueClass is values.MutexValue:
        return REGISTRY
    if _merged is None:
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        _merged = merged
    return _merged


def exposition() -> tuple[bytes, str]:
    """The body of a scrape and its content type (Prometheus's text format)."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def authorized(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>``, compared in constant time."""
    scheme, _, given = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def wsgi_app(bearer_token: str | None = None) -> WSGIApplication:
    """A WSGI app answering ``GET /metrics`` (with ``bearer_token``: only to ``Authorization: Bearer <token>``)."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found; metrics are at /metrics\n"]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")])
            return [b"GET /metrics\n"]
        if bearer_token is not None and not authorized(environ.get("HTTP_AUTHORIZATION"), bearer_token):
            start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer"), ("Content-Type", "text/plain")])
            return [b"a bearer token is required\n"]
        body, content_type = exposition()
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the logs (wsgiref writes each request to stderr)."""


class MetricsServer:
    """``/metrics`` served on a port of its own by a daemon thread; :meth:`close` stops it."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server
        self.host = str(server.server_address[0])
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, name="gatekeeper-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(host: str, port: int, *, bearer_token: str | None = None) -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` (0: a free port) until closed. Raises OSError when it cannot listen."""

    class Server(ThreadingWSGIServer):  # prometheus-client's: a thread per scrape, daemon threads
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return MetricsServer(make_server(host, port, wsgi_app(bearer_token), Server, _Quiet))
