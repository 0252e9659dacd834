"""Prometheus metrics move with what the gate does, never carry a number, and are served only where they should be."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from support import FakeClock, FakeTwilio, free_port
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from gatekeeper import Action, Gatekeeper, Settings, Stores, metrics
from gatekeeper.errors import ConfigError, StoreUnavailable
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.webhooks.wsgi import create_app, metrics_note, serve_metrics


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_decisions_lookups_and_cache_are_counted(twilio_http: FakeTwilio, twilio_client: Client) -> None:
    """A miss then a hit: one Lookup request, one miss, one hit, two SMS decisions; a refusal counts by code."""
    before = {
        "sms": value("gatekeeper_decisions_total", purpose="notify", action="sms", code=""),
        "refused": value("gatekeeper_decisions_total", purpose="notify", action="refuse", code="21211"),
        "answered": value("gatekeeper_lookup_requests_total", outcome="answered"),
        "hit": value("gatekeeper_lookup_cache_total", result="hit"),
        "miss": value("gatekeeper_lookup_cache_total", result="miss"),
    }
    gate = Gatekeeper(twilio_client)
    gate.decide("+14155552671")
    gate.decide("+14155552671")
    gate.decide("+1415")
    assert value("gatekeeper_decisions_total", purpose="notify", action="sms", code="") - before["sms"] == 2
    assert value("gatekeeper_decisions_total", purpose="notify", action="refuse", code="21211") - before["refused"] == 1
    assert value("gatekeeper_lookup_requests_total", outcome="answered") - before["answered"] == 1
    assert value("gatekeeper_lookup_cache_total", result="hit") - before["hit"] == 1
    assert value("gatekeeper_lookup_cache_total", result="miss") - before["miss"] == 1
    exposition = "\n".join(str(m) for m in REGISTRY.collect())
    assert "4155552671" not in exposition


# -- latencies: Lookup and sends --------------------------------------------------------------------------------
def test_each_lookup_request_is_timed_by_outcome(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """A network error then an answer (one decision, two HTTP requests), and a 404: each request is one
    observation of gatekeeper_lookup_seconds under the outcome gatekeeper_lookup_requests counts it by."""
    names = {o: ("gatekeeper_lookup_seconds_count", {"outcome": o}) for o in ("answered", "invalid", "error")}
    before = {o: value(n, **labels) for o, (n, labels) in names.items()}
    twilio_http.faults["+14155552671"] = [requests.ConnectionError("connection reset")]
    twilio_http.faults["+14155552672"] = [(404, {}, {"code": 20404, "message": "not found", "status": 404})]
    gate = Gatekeeper(twilio_client, stores=Stores.memory(), clock=clock, sleep=clock.sleep)
    gate.decide("+14155552671")
    gate.decide("+14155552672")
    grown = {o: value(n, **labels) - before[o] for o, (n, labels) in names.items()}
    assert grown == {"answered": 1, "invalid": 1, "error": 1}
    assert value("gatekeeper_lookup_seconds_bucket", outcome="answered", le="10.0") - before["answered"] >= 1


def test_each_send_attempt_is_timed_by_api_and_outcome(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """A 429 and a refused connection, then the send: three requests to Messages, two errors and one sent
    (the retries' backoff is not in them); a call is timed under calls."""
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    def sends(api: str, outcome: str) -> float:
        return value("gatekeeper_send_seconds_count", api=api, outcome=outcome)

    before = (sends("messages", "sent"), sends("messages", "error"), sends("calls", "sent"))
    refused = requests.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "Connection refused")))  # type: ignore[arg-type]
    twilio_http.send_faults = [(429, {}, {"code": 20429, "message": "busy", "status": 429}), refused]
    twilio_http.line_types["+14155552672"] = "landline"
    gate = Gatekeeper(twilio_client, stores=Stores.memory(), clock=clock, sleep=clock.sleep)
    assert gate.notify("+14155552671", "hi", from_="+15005550006").action is Action.SMS
    assert gate.notify("+14155552672", "hi", from_="+15005550006").action is Action.VOICE
    after = (sends("messages", "sent"), sends("messages", "error"), sends("calls", "sent"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 2, 1]


def test_the_async_gate_times_its_lookups_and_sends(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """AsyncGatekeeper: its Lookup and its awaited sends (one sent, one Twilio refused: 21610) are observed too."""
    from gatekeeper.aio import AsyncGatekeeper

    keys = [
        ("gatekeeper_lookup_seconds_count", {"outcome": "answered"}),
        ("gatekeeper_send_seconds_count", {"api": "messages", "outcome": "sent"}),
        ("gatekeeper_send_seconds_count", {"api": "messages", "outcome": "error"}),
    ]
    before = [value(name, **labels) for name, labels in keys]

    async def main() -> None:
        gate = AsyncGatekeeper(sandbox_server.async_client(), stores=Stores.memory())
        try:
            assert (await gate.notify("+14155550100", "hi", from_="+15005550006")).action is Action.SMS
            refused = await gate.notify("+15005550004", "hi", from_="+15005550006")  # Messages answers 21610
            assert refused.decision.twilio_code == 21610
        finally:
            await gate.close()

    asyncio.run(main())
    grown = [value(name, **labels) - b for (name, labels), b in zip(keys, before, strict=True)]
    assert grown[1:] == [1, 1]
    assert grown[0] >= 1  # each number is looked up once


# -- the webhooks ---------------------------------------------------------------------------------------------
WEBHOOK_TOKEN = "metrics-webhook-token-5f1e2d3c"
SCRAPE_TOKEN = "scrape-token-0123456789abcdef"
BASE = "http://localhost"
WRITER = "+14155552671"


def webhook_gate(stores: Stores | None = None, **metrics: Any) -> Gatekeeper:
    settings = Settings(
        lookup={"enabled": False},
        webhooks={"public_base_url": BASE, "max_body_bytes": 1024},
        metrics=metrics,
    )
    client = Client("AC" + "0" * 32, WEBHOOK_TOKEN, environment={})
    return Gatekeeper(client, settings=settings, stores=stores or Stores.memory())


def post_signed(client: FlaskClient, path: str, form: dict[str, str], token: str = WEBHOOK_TOKEN) -> int:
    signature = RequestValidator(token).compute_signature(f"{BASE}/twilio{path}", form)
    return client.post(f"/twilio{path}", data=form, headers={"X-Twilio-Signature": signature}).status_code


def inbound(body: str, n: int, writer: str = WRITER) -> dict[str, str]:
    return {"MessageSid": f"SM{n:032x}", "From": writer, "To": "+14155550100", "Body": body}


def events(route: str, outcome: str) -> float:
    return value("gatekeeper_webhook_events_total", route=route, outcome=outcome)


def test_webhook_requests_are_counted_by_route_and_outcome() -> None:
    """Each answer the webhooks give is one count under what happened (processed, duplicate, forbidden,
    malformed, too_large) and one observation of gatekeeper_webhook_seconds; no number in any label."""
    outcomes = ("processed", "duplicate", "forbidden", "malformed", "too_large")
    before = {o: events("inbound", o) for o in outcomes}
    before_status = events("message_status", "processed")
    before_seconds = value("gatekeeper_webhook_seconds_count", route="inbound")
    client = create_app(webhook_gate()).test_client()
    assert post_signed(client, "/messages/inbound", inbound("STOP", 1)) == 200
    assert post_signed(client, "/messages/inbound", inbound("STOP", 1)) == 200  # Twilio's retry of it
    assert post_signed(client, "/messages/inbound", inbound("STOP", 2), token="another-accounts-token") == 403
    assert post_signed(client, "/messages/inbound", inbound("STOP", 3, writer="not a number")) == 400
    assert post_signed(client, "/messages/inbound", inbound("x" * 2048, 4)) == 413
    status = {"MessageSid": f"SM{5:032x}", "MessageStatus": "delivered", "To": WRITER}
    assert post_signed(client, "/messages/status", status) == 200
    assert {o: events("inbound", o) - before[o] for o in outcomes} == dict.fromkeys(outcomes, 1)
    assert events("message_status", "processed") - before_status == 1
    assert value("gatekeeper_webhook_seconds_count", route="inbound") - before_seconds == 5
    exposition = metrics.exposition()[0].decode()
    assert "4155552671" not in exposition


class _Down:
    """An idempotency store whose claims fail while ``down``: the shared store cannot take an event."""

    def __init__(self, inner: Any) -> None:
        self._inner, self.down = inner, True

    def __getattr__(self, name: str) -> Any:
        if name == "claim" and self.down:
            raise StoreUnavailable("injected: the shared store is down")
        return getattr(self._inner, name)


def test_journalled_events_are_counted_then_replayed(tmp_path: Path) -> None:
    """A STOP the store cannot take is journaled (answered 200); applied later, it counts as replayed."""
    from gatekeeper.stores.journal import Journal

    stores = Stores.memory()
    down = _Down(stores.idempotency)
    stores.idempotency = down
    stores.journal = journal = Journal(tmp_path / "journal.db")
    before = (events("inbound", "journaled"), events("inbound", "replayed"))
    app = create_app(webhook_gate(stores))
    relay = app.extensions["gatekeeper"].relay
    try:
        assert post_signed(app.test_client(), "/messages/inbound", inbound("STOP", 1)) == 200
        assert events("inbound", "journaled") - before[0] == 1
        down.down = False
        assert relay.replay() is True
        assert events("inbound", "replayed") - before[1] == 1
    finally:
        relay.stop()
        journal.close()


# -- where /metrics is served -----------------------------------------------------------------------------------
def test_the_webhook_port_serves_no_metrics_without_a_token() -> None:
    """/metrics is not a route of the webhook app by default, nor when [metrics] port serves it apart."""
    assert create_app(webhook_gate()).test_client().get("/metrics").status_code == 404
    apart = create_app(webhook_gate(port=free_port(), bearer_token=SCRAPE_TOKEN))
    assert apart.test_client().get("/metrics").status_code == 404


def test_with_a_bearer_token_the_webhook_port_serves_metrics_only_to_it() -> None:
    """[metrics] bearer_token and no port: /metrics answers 401 without the token or with another, 200 with it."""
    client = create_app(webhook_gate(bearer_token=SCRAPE_TOKEN)).test_client()
    bare = client.get("/metrics")
    assert bare.status_code == 401 and bare.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 29}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Basic {SCRAPE_TOKEN}"}).status_code == 401
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert scraped.status_code == 200 and b"gatekeeper_webhook_events_total" in scraped.data


def test_the_metrics_port_serves_metrics_apart() -> None:
    """serve_metrics: [metrics] port 0 serves nothing; a port serves /metrics (behind the token when set), any
    other path is a 404, and the start-up note names where, never the token."""
    assert serve_metrics(webhook_gate().settings) is None
    settings = webhook_gate(port=free_port(), bearer_token=SCRAPE_TOKEN).settings
    server = serve_metrics(settings)
    assert server is not None
    try:
        assert requests.get(server.url, timeout=5).status_code == 401
        scraped = requests.get(server.url, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}, timeout=5)
        assert scraped.status_code == 200 and "gatekeeper_send_seconds_bucket" in scraped.text
        assert scraped.headers["Content-Type"].startswith("text/plain")
        assert requests.get(server.url.replace("/metrics", "/twilio"), timeout=5).status_code == 404
        note = metrics_note(settings, server)
        assert server.url in note and SCRAPE_TOKEN not in note
    finally:
        server.close()


def test_a_weak_bearer_token_is_refused_at_load() -> None:
    """A short token (or one with spaces) is a ConfigError naming the setting and its variable."""
    with pytest.raises(ConfigError) as info:
        Settings.load(env={"GATEKEEPER_METRICS__BEARER_TOKEN": "short"})
    assert info.value.key == "metrics.bearer_token" and "GATEKEEPER_METRICS__BEARER_TOKEN" in str(info.value)
    assert "short" not in str(info.value)
