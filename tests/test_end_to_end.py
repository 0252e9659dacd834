"""End to end over loopback: the sandbox's signed, duplicated, reordered callbacks reach the blueprint."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from flask import Flask
from twilio.request_validator import RequestValidator

from gatekeeper import Action, Gatekeeper, Settings, Stores
from gatekeeper.sandbox import TEST_AUTH_TOKEN, BackgroundServer, Sandbox, SandboxServer
from gatekeeper.webhooks import StatusEvent, init_app

FAILING = "+14155550104"  # the sandbox ends its messages undelivered, 30003
LANDLINE = "+14155550101"
FROM = "+15005550006"


@pytest.fixture
def wired(sandbox_server: SandboxServer, sandbox: Sandbox) -> Iterator[tuple[Gatekeeper, str, list[StatusEvent]]]:
    loopback = Settings(webhooks={"allowed_hosts": ["127.0.0.1"]})  # the sandbox calls the app on loopback
    gate = Gatekeeper(sandbox_server.client(), settings=loopback, stores=Stores.memory())
    events: list[StatusEvent] = []
    app = Flask("e2e")
    init_app(app, gate, on_status=events.append)
    sandbox.configure_callbacks(duplicate=1.0, reorder=True, seed=7)
    with BackgroundServer(app, name="e2e-webhooks") as web:
        yield gate, web.url + "/twilio", events
    sandbox.configure_callbacks(duplicate=0.0, reorder=False)


def test_duplicated_reordered_callbacks_apply_once_and_suppress(
    wired: tuple[Gatekeeper, str, list[StatusEvent]], sandbox: Sandbox
) -> None:
    """Three undelivered messages: every status stored once, never backwards; the number is then suppressed."""
    gate, hooks, events = wired
    sids = []
    for _ in range(3):
        out = gate.notify(FAILING, "Your code is 1234", from_=FROM, status_callback=hooks + "/messages/status")
        assert out.action is Action.SMS
        sids.append(out.sid)
    deliveries = sandbox.flush_callbacks()
    assert deliveries and all(d.status_code == 200 for d in deliveries)
    assert sum(d.duplicate for d in deliveries) == len(deliveries) // 2  # every event came twice
    unique = {(e.sid, e.status) for e in events}
    assert len(unique) == len(events) == len(deliveries) // 2  # each unique event handed to the hook once
    for sid in sids:
        record = gate.status_of(sid or "")
        assert record is not None
        assert (record.status, record.error_code) == ("undelivered", 30003)
    refused = gate.decide(FAILING)
    assert (refused.action, refused.twilio_code) == (Action.REFUSE, 21610)

    # The person writes back: an inbound message lifts the suppression.
    url = hooks + "/messages/inbound"
    form = {"MessageSid": "SM" + "9" * 32, "From": FAILING, "To": FROM, "Body": "got a new phone, thanks"}
    signature = RequestValidator(TEST_AUTH_TOKEN).compute_signature(url, form)
    assert requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10).status_code == 200
    assert gate.decide(FAILING).action is Action.SMS


def test_call_status_callbacks(wired: tuple[Gatekeeper, str, list[StatusEvent]], sandbox: Sandbox) -> None:
    """A landline's voice fallback reports its call status through the calls route."""
    gate, hooks, events = wired
    out = gate.notify(
        LANDLINE,
        "Your table is ready",
        from_=FROM,
        status_callback=hooks + "/messages/status",  # for a text; a call has its own
        call_status_callback=hooks + "/calls/status",
    )
    assert out.action is Action.VOICE
    sandbox.flush_callbacks()
    record = gate.status_of(out.sid or "")
    assert record is not None and record.status == "completed"
    assert [e.kind for e in events if e.sid == out.sid] == ["call"]


def test_the_landline_fallback_says_a_body_xml_cannot_carry_cleaned(
    sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """notify to a landline with control characters and U+FFFE in the body: the call says the text without
    them (reason body:cleaned) instead of notify raising on malformed TwiML."""
    gate = Gatekeeper(sandbox_server.client(), stores=Stores.memory())
    outcome = gate.notify(LANDLINE, "Your code\x00 is 42\ufffe", from_=FROM)
    assert outcome.action is Action.VOICE
    assert outcome.decision.reasons[-1] == "body:cleaned"
    call = sandbox.call(outcome.sid or "")
    assert call is not None and "Your code is 42" in call["twiml"] and "\ufffe" not in call["twiml"]
