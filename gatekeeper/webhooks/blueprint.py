"""The Flask blueprint: routes only. Each view reads and verifies, calls one plain function, maps to a status.

=======  =====================  ============================================
POST     /messages/inbound      STOP/START/HELP and plain-words opt-outs → TwiML
POST     /messages/status       message status callbacks
POST     /calls/status          call status callbacks
POST     /verify/events         Verify events, deduplicated, to ``on_status``
GET      /healthz               store reachability (no signature)
=======  =====================  ============================================

Statuses: 200 processed or a duplicate of a processed event; 400 fields that
cannot be used; 403 bad signature (nothing stored); 413 body over
``max_body_bytes``; 503 a store could not be written or the same event is in
progress (Twilio retries). Every request is counted by route and outcome, and timed
(``gatekeeper_webhook_events_total``, ``gatekeeper_webhook_seconds``: :mod:`gatekeeper.metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, jsonify, request
from flask.sansio.blueprints import BlueprintSetupState
from twilio.twiml.messaging_response import MessagingResponse

from gatekeeper import metrics
from gatekeeper.errors import (
    BodyTooLarge,
    ConfigError,
    IdempotencyConflict,
    InvalidSignature,
    MalformedEvent,
    StoreUnavailable,
)
from gatekeeper.webhooks import request as incoming
from gatekeeper.webhooks.events import ConsentEvent, EventProcessor, InboundEvent, StatusEvent
from gatekeeper.webhooks.relay import Relay
from gatekeeper.webhooks.request import Incoming
from gatekeeper.webhooks.signature import SignatureVerifier, resolve_tokens

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper

log = logging.getLogger("gatekeeper.webhooks")

EXTENSION_KEY = "gatekeeper"

#: How the request being answered went, for the metrics: set by the handler (processed, duplicate) or by the
#: journal's answer (journaled), which the relay calls between the view and here and passes on only a Response.
_outcome: ContextVar[str] = ContextVar("gatekeeper_webhook_outcome", default="processed")


@dataclass(frozen=True)
class WebhookState:
    """What a mounted blueprint works with; also kept in ``app.extensions["gatekeeper"]``."""

    gate: Gatekeeper
    verifier: SignatureVerifier
    processor: EventProcessor
    blueprint_name: str
    handlers: Mapping[str, Callable[[Incoming], Response]]
    relay: Relay | None = None  # with a journal: events the store cannot take are journalled, answered 2xx


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")


def _twiml(text: str) -> Response:
    reply = MessagingResponse()
    if text:
        reply.message(text)
    return Response(str(reply), status=200, mimetype="text/xml")


def _guarded(state: WebhookState, kind: str) -> Response:
    """Answer one webhook request (:func:`_answer`), counted and timed by route and outcome."""
    started = perf_counter()
    outcome = "error"  # an exception no branch expects: Flask answers 500
    try:
        response, outcome = _answer(state, kind)
        return response
    finally:
        metrics.webhook_handled(kind, outcome, perf_counter() - started)


def _answer(state: WebhookState, kind: str) -> tuple[Response, str]:
    """Read and verify the request, process it (through the journal's relay when there is one), and map every
    expected failure to its status; with the outcome the metrics count."""
    _outcome.set("processed")  # a worker thread keeps the value of the request it served before
    try:
        limit = state.gate.settings.webhooks.max_body_bytes
        verified = incoming.read(request, state.verifier, max_body_bytes=limit)
        relay = state.relay
        response = relay.handle(kind, verified) if relay is not None else state.handlers[kind](verified)
        return response, _outcome.get()
    except BodyTooLarge:
        return _text(413, "request body too large"), "too_large"
    except InvalidSignature as exc:
        log.warning("rejected %s %s: invalid Twilio signature (%s)", request.method, request.path, exc.reason)
        return _text(403, "invalid X-Twilio-Signature"), "forbidden"
    except MalformedEvent as exc:
        return _text(400, str(exc)), "malformed"
    except IdempotencyConflict:  # the same event, still being processed by another request
        response = _text(503, "this event is being processed; retry")
        response.headers["Retry-After"] = "1"
        return response, "in_progress"
    except StoreUnavailable as exc:
        log.error("%s %s: store unavailable, answering 503 so Twilio retries: %s", request.method, request.path, exc)
        response = _text(503, "store unavailable; retry")
        response.headers["Retry-After"] = "5"
        return response, "unavailable"


ROUTES = {
    "incoming messages (the number's or Messaging Service's webhook)": "/messages/inbound",
    "message status callbacks ([routing] status_callback)": "/messages/status",
    "call status callbacks ([routing] call_status_callback)": "/calls/status",
    "Verify events (optional)": "/verify/events",
}


def webhook_urls(base_url: str, prefix: str, overrides: str) -> dict[str, str]:
    """The URL to give Twilio for each route: ``base_url`` (the public root) and ``prefix``, with the connection
    overrides as the fragment, so Twilio retries as they say (by default it retries once, and not every failure)."""
    fragment = f"#{overrides.lstrip('#')}" if overrides else ""
    return {what: f"{base_url.rstrip('/')}{prefix}{path}{fragment}" for what, path in ROUTES.items()}


def create_blueprint(
    gate: Gatekeeper,
    on_inbound: Callable[[InboundEvent], object] | None = None,
    on_consent: Callable[[ConsentEvent], object] | None = None,
    on_status: Callable[[StatusEvent], object] | None = None,
    auth_token: str | None = None,
    *,
    name: str = "gatekeeper_webhooks",
) -> Blueprint:
    """The webhook blueprint for ``gate``; register it with ``app.register_blueprint(bp, url_prefix="/twilio")``.

    ``auth_token`` defaults to ``[twilio] auth_token``, else the twilio client's
    password when it logs in with the account SID; ``[webhooks] auth_tokens``
    are accepted too (rotation). Raises :class:`~gatekeeper.errors.ConfigError`
    when no token can validate signatures (an API key's secret cannot), and, when
    registered, unless ``[webhooks] public_base_url`` or ``allowed_hosts`` pins the URL
    signatures are checked against (an app in debug or testing mode may leave both
    unset). Each hook is called once per unique event, after the event is stored.
    """
    wh = gate.settings.webhooks
    verifier = SignatureVerifier(
        resolve_tokens(gate, auth_token),
        public_base_url=wh.public_base_url,
        trusted_proxy_hops=wh.trusted_proxy_hops,
        allowed_hosts=wh.allowed_hosts,
        url_fragment=wh.connection_overrides,
        shared_keys={key: secret.get_secret_value() for key, secret in wh.shared_keys.items()},
    )
    processor = EventProcessor(gate, on_inbound=on_inbound, on_consent=on_consent, on_status=on_status)

    def inbound_message(verified: Incoming) -> Response:
        result = processor.inbound(verified)
        _outcome.set("duplicate" if result.duplicate else "processed")
        return _twiml(getattr(wh.replies, result.reply) if result.reply else "")

    def message_status(verified: Incoming) -> Response:
        _outcome.set("processed" if processor.status("message", verified) else "duplicate")
        return _text(200, "ok")

    def call_status(verified: Incoming) -> Response:
        _outcome.set("processed" if processor.status("call", verified) else "duplicate")
        return _text(200, "ok")

    def verify_event(verified: Incoming) -> Response:
        _outcome.set("processed" if processor.verify_event(verified) else "duplicate")
        return _text(200, "ok")

    def journalled(kind: str, verified: Incoming) -> Response:
        """The answer to an event kept in the journal: what processing it would answer, decided without the store."""
        _outcome.set("journaled")
        if kind == "inbound":
            reply = processor.reply_without_store(verified)
            return _twiml(getattr(wh.replies, reply) if reply else "")
        return _text(200, "ok")

    handlers = {"inbound": inbound_message, "message": message_status, "call": call_status, "verify": verify_event}
    journal = gate.stores.journal
    relay = (
        Relay(journal, processor, handlers, journalled, retry_seconds=wh.journal_retry_seconds)
        if journal is not None
        else None
    )
    state = WebhookState(
        gate=gate, verifier=verifier, processor=processor, blueprint_name=name, handlers=handlers, relay=relay
    )
    bp = Blueprint(name, __name__)

    def registered(setup: BlueprintSetupState) -> None:
        app = setup.app
        if not verifier.pinned and not (app.debug or app.testing):
            raise ConfigError(
                "the webhooks would check signatures against the URL the request's Host header names, so a "
                "request Twilio signed for another of the account's hosts could be replayed here: set [webhooks] "
                "public_base_url (the public URL of this app) or allowed_hosts (the host names Twilio calls)",
                key="webhooks.public_base_url",
            )
        app.extensions.setdefault(EXTENSION_KEY, state)
        if wh.public_base_url:
            prefix = setup.url_prefix or ""
            for what, url in webhook_urls(wh.public_base_url, prefix, wh.connection_overrides).items():
                log.info("give Twilio, for %s: %s", what, url)

    bp.record_once(registered)

    @bp.post("/messages/inbound")
    def messages_inbound() -> Response:
        return _guarded(state, "inbound")

    @bp.post("/messages/status")
    def messages_status() -> Response:
        return _guarded(state, "message")

    @bp.post("/calls/status")
    def calls_status() -> Response:
        return _guarded(state, "call")

    @bp.post("/verify/events")
    def verify_events() -> Response:
        return _guarded(state, "verify")

    @bp.get("/healthz")
    def healthz() -> tuple[Response, int]:
        """503 when a store cannot be reached; 200 otherwise, with the ways the stores may lose an opt-out
        (``durable``, ``durability``) for the operator to see (they do not take the webhooks out of service)."""
        health = gate.health()
        body = {"status": "ok" if health["ok"] else "unavailable", **health}
        return jsonify(body), 200 if health["ok"] else 503

    return bp


def init_app(
    app: Flask,
    gate: Gatekeeper,
    url_prefix: str = "/twilio",
    *,
    on_inbound: Callable[[InboundEvent], object] | None = None,
    on_consent: Callable[[ConsentEvent], object] | None = None,
    on_status: Callable[[StatusEvent], object] | None = None,
    auth_token: str | None = None,
    name: str = "gatekeeper_webhooks",
) -> Blueprint:
    """Mount the webhooks on ``app`` under ``url_prefix`` (the Flask-extension way); returns the blueprint.

    The state (gate, verifier, processor) is kept in ``app.extensions["gatekeeper"]``.
    """
    bp = create_blueprint(gate, on_inbound, on_consent, on_status, auth_token, name=name)
    app.register_blueprint(bp, url_prefix=url_prefix)
    return bp
