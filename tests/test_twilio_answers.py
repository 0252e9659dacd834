"""What Twilio answers back is kept: opt-outs, not-SMS-capable numbers and fraud blocks; and callbacks are wired."""

from __future__ import annotations

from typing import Any

import pytest
from support import FakeClock, FakeTwilio
from twilio.rest import Client

from gatekeeper import Action, GatedClient, Gatekeeper, GateRefused, SendRejected, Settings, Stores
from gatekeeper.stores.memory import MemoryStore

MOBILE, LANDLINE = "+14155552671", "+14155552672"
FROM = "+15005550006"
VA = "VA" + "0" * 32
MESSAGES_ROUTE = "https://hooks.example.com/twilio/messages/status"
CALLS_ROUTE = "https://hooks.example.com/twilio/calls/status"


def make(client: Client, clock: FakeClock, **settings: Any) -> Gatekeeper:
    stores = Stores.using(MemoryStore(clock=clock))
    return Gatekeeper(client, settings=Settings(**settings), clock=clock, sleep=clock.sleep, stores=stores)


def twilio_refuses(twilio_http: FakeTwilio, code: int, status: int = 400) -> None:
    twilio_http.send_faults.append((status, {}, {"code": code, "message": f"refused {code}", "status": status}))


def test_twilios_21610_is_the_persons_opt_out(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A 21610 from Twilio records the opt-out: notify returns a refusal, and the next send pays nothing."""
    g = make(twilio_client, clock)
    twilio_refuses(twilio_http, 21610)
    out = g.notify(MOBILE, "hi", from_=FROM)
    assert (out.action, out.decision.twilio_code, out.decision.reasons) == (
        Action.REFUSE,
        21610,
        ("opted_out:account", "twilio:21610"),
    )
    assert [c.source for c in g.stores.opt_outs.consent_history(MOBILE)] == ["twilio:21610"]
    again = g.notify(MOBILE, "hi", from_=FROM)
    assert again.decision.reasons == ("opted_out:account",)
    assert twilio_http.sent == []  # neither send went out; the second never reached Twilio


def test_twilios_21610_raises_gate_refused_from_the_drop_in(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """Through the drop-in the same answer is a GateRefused 21610, chained from Twilio's own error."""
    client = GatedClient(twilio_client, make(twilio_client, clock))
    twilio_refuses(twilio_http, 21610)
    with pytest.raises(GateRefused) as refused:
        client.messages.create(to=MOBILE, from_=FROM, body="hi")
    assert refused.value.code == 21610
    assert isinstance(refused.value.__cause__, SendRejected)
    assert client.gate.is_opted_out(MOBILE)


def test_twilios_21614_corrects_the_cached_facts(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """Twilio saying 'not SMS-capable' about a number Lookup called mobile: the next notify calls it, no Lookup."""
    g = make(twilio_client, clock)
    twilio_refuses(twilio_http, 21614)
    with pytest.raises(SendRejected) as rejected:
        g.notify(MOBILE, "hi", from_=FROM)
    assert rejected.value.code == 21614
    out = g.notify(MOBILE, "hi", from_=FROM)
    assert (out.action, out.decision.reasons) == (Action.VOICE, ("line_type:landline", "fallback:voice"))
    assert twilio_http.lookups[MOBILE] == 1
    # The correction is in the Lookup cache itself: another gate over the same store routes by it too.
    other = Gatekeeper(twilio_client, clock=clock, sleep=clock.sleep, stores=g.stores)
    assert other.decide(MOBILE).facts.line_type == "landline"  # type: ignore[union-attr]
    assert twilio_http.lookups[MOBILE] == 1


@pytest.mark.parametrize("code", [30450, 30453])
def test_fraud_blocks_count_as_hard_failures(
    code: int, twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """Messaging's fraud blocks count as failures: the third suppresses the number, so no fourth send is paid."""
    g = make(twilio_client, clock)
    for _ in range(3):
        twilio_refuses(twilio_http, code)
        with pytest.raises(SendRejected):
            g.notify(MOBILE, "hi", from_=FROM)
    out = g.notify(MOBILE, "hi", from_=FROM)
    assert (out.action, out.decision.reasons) == (Action.REFUSE, (f"suppressed:delivery_failures:{code}",))
    assert twilio_http.sent == []


def test_verify_fraud_guard_counts_as_a_failure(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """Verify's 60410 (Fraud Guard) is counted against the number like a Messaging fraud block."""
    g = make(twilio_client, clock)
    twilio_refuses(twilio_http, 60410, status=403)
    with pytest.raises(SendRejected):
        g.start_verification(MOBILE, verify_service_sid=VA)
    assert g.stores.failures.suppression(MOBILE, now=clock(), window_seconds=86_400, threshold=1) == "failures:1"


def test_configured_callbacks_are_added_to_every_send(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """Routed and drop-in sends without a callback get [routing]'s: messages the messages route, calls the calls'."""
    g = make(twilio_client, clock, routing={"status_callback": MESSAGES_ROUTE, "call_status_callback": CALLS_ROUTE})
    client = GatedClient(twilio_client, g)
    g.notify(MOBILE, "hi", from_=FROM)
    client.messages.create(to=MOBILE, from_=FROM, body="hi")
    client.calls.create(to=MOBILE, from_=FROM, url="https://example.com/twiml")
    g.notify(LANDLINE, "hi", from_=FROM)  # the voice fallback
    assert [m["StatusCallback"] for m in twilio_http.sent] == [MESSAGES_ROUTE, MESSAGES_ROUTE]
    assert [c["StatusCallback"] for c in twilio_http.calls] == [CALLS_ROUTE, CALLS_ROUTE]


def test_a_callers_own_callback_wins_and_never_reaches_the_wrong_api(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """A callback the caller gave is used; a message's callback is not put on the call a landline falls back to."""
    g = make(twilio_client, clock, routing={"call_status_callback": CALLS_ROUTE})
    g.notify(MOBILE, "hi", from_=FROM, status_callback="https://mine.example.com/status")
    g.notify(LANDLINE, "hi", from_=FROM, status_callback="https://mine.example.com/status")
    g.notify(LANDLINE, "hi", from_=FROM, call_status_callback="https://mine.example.com/calls")
    assert twilio_http.sent[0]["StatusCallback"] == "https://mine.example.com/status"
    assert [c["StatusCallback"] for c in twilio_http.calls] == [CALLS_ROUTE, "https://mine.example.com/calls"]
