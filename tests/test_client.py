"""GatedClient: a one-line drop-in that keeps twilio's call shapes and error handling."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from support import API, FakeClock, FakeTwilio
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gatekeeper import Action, GatedClient, Gatekeeper, GateRefused, Settings, Stores
from gatekeeper.errors import GatekeeperError
from gatekeeper.stores.memory import MemoryStore

MOBILE, LANDLINE, VOIP = "+14155552671", "+14155552672", "+14155552673"
FROM = "+15005550006"
VA = "VA" + "0" * 32


def gated(client: Client, clock: FakeClock, **settings: Any) -> GatedClient:
    gate = Gatekeeper(
        client,
        settings=Settings(**settings),
        clock=clock,
        sleep=clock.sleep,
        stores=Stores.using(MemoryStore(clock=clock)),
    )
    return GatedClient(client, gate)


def refused(fn: Any) -> GateRefused:
    with pytest.raises(TwilioRestException) as info:  # what existing code already catches
        fn()
    assert isinstance(info.value, GateRefused)
    assert isinstance(info.value, GatekeeperError)
    assert info.value.status == 400
    return info.value


def test_messages_create_sends_e164(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """messages.create keeps twilio's signature and return type; to= goes out in E.164."""
    msg = gated(twilio_client, clock).messages.create(
        to="(415) 555-2671", from_=FROM, body="hello", status_callback="https://example.com/s"
    )
    assert type(msg).__name__ == "MessageInstance"
    assert msg.sid.startswith("SM")
    assert twilio_http.sent == [
        {"To": MOBILE, "From": FROM, "Body": "hello", "StatusCallback": "https://example.com/s"}
    ]


@pytest.mark.parametrize(
    ("to", "code", "setup"),
    [
        ("+1415", 21211, None),
        (LANDLINE, 21614, None),
        (MOBILE, 21610, "opt_out"),
        ("+447400123456", 21408, "us_only"),
    ],
)
def test_refusals_carry_twilios_codes(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock, to: str, code: int, setup: str | None
) -> None:
    """A refused send raises GateRefused with the code Twilio would have answered, and sends nothing."""
    client = gated(twilio_client, clock, policy={"allow_countries": ["US"]} if setup == "us_only" else {})
    if setup == "opt_out":
        client.gate.opt_out(MOBILE)
    err = refused(lambda: client.messages.create(to=to, from_=FROM, body="x"))
    assert err.code == code
    assert err.decision.action is Action.REFUSE
    assert err.uri.endswith("/Messages.json")
    assert twilio_http.sent == []


def test_landline_reroute_is_opt_in(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """With dropin_reroute = true, an SMS to a landline becomes a call and the CallInstance comes back."""
    call = gated(twilio_client, clock, routing={"dropin_reroute": True}).messages.create(
        to=LANDLINE, from_=FROM, body="Your table is ready"
    )
    assert type(call).__name__ == "CallInstance"
    assert "Your table is ready" in twilio_http.calls[0]["Twiml"]
    assert twilio_http.sent == []


def test_calls_create_reaches_mobiles_and_landlines(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """Voice is allowed to any allowed number; opted-out numbers are refused 21610."""
    client = gated(twilio_client, clock)
    for to in (MOBILE, LANDLINE):
        client.calls.create(to=to, from_=FROM, twiml="<Response><Say>Hi</Say></Response>")
    client.calls.create(to=VOIP, from_=FROM, url="https://example.com/twiml")
    assert [c["To"] for c in twilio_http.calls] == [MOBILE, LANDLINE, VOIP]
    client.gate.opt_out(LANDLINE)
    assert refused(lambda: client.calls.create(to=LANDLINE, from_=FROM, url="https://e.com/t")).code == 21610


def test_verify_codes(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Verify: SMS to landline or VoIP (TOTP policy) is 60205, a refused country 60605; calls to landlines pass."""
    client = gated(twilio_client, clock, policy={"deny_countries": ["GB"]})
    verifications = client.verify.v2.services(VA).verifications
    ok = verifications.create(to="(415) 555-2671", channel="sms")
    assert type(ok).__name__ == "VerificationInstance"
    assert refused(lambda: verifications.create(to=LANDLINE, channel="sms")).code == 60205
    assert refused(lambda: verifications.create(to=VOIP, channel="sms")).code == 60205
    assert refused(lambda: verifications.create(to="+447400123456", channel="sms")).code == 60605
    verifications.create(to=LANDLINE, channel="call")
    verifications.create(to="user@example.com", channel="email")
    assert [(v["To"], v["Channel"]) for v in twilio_http.verifications] == [
        (MOBILE, "sms"),
        (LANDLINE, "call"),
        ("user@example.com", "email"),
    ]


def test_lookup_down_on_mfa_is_20503(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """on_lookup_error = refuse (the MFA default) answers 20503 when Lookup cannot be had."""
    twilio_http.faults[MOBILE] = [(503, {}, {"code": 20503, "message": "down", "status": 503})] * 5
    client = gated(twilio_client, clock)
    assert refused(lambda: client.verify.v2.services(VA).verifications.create(to=MOBILE, channel="sms")).code == 20503


def test_reads_pass_through(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Reads answer as the client's own: attributes, list, fetch and Lookups, with nothing gated."""
    client = gated(twilio_client, clock)
    assert client.account_sid == twilio_client.account_sid
    assert client.api.v2010.account.messages._uri == twilio_client.messages._uri
    twilio_http.mock.add("GET", f"{API}/Messages.json", json={"messages": [], "next_page_uri": None})
    assert client.messages.list(limit=5) == []
    sid = "SM" + "1" * 32
    twilio_http.mock.add("GET", f"{API}/Messages/{sid}.json", json={"sid": sid, "status": "delivered"})
    fetched = client.messages(sid).fetch()
    assert (type(fetched._inner).__name__, fetched.status) == ("MessageInstance", "delivered")
    facts = client.lookups.v2.phone_numbers(MOBILE).fetch(fields="line_type_intelligence")
    assert facts.line_type_intelligence["type"] == "mobile"
    assert client.gate.stores.audit.recent(10) == []  # reads are not decisions


def test_observe_mode_passes_refusals_through(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """In observe mode the drop-in never raises; the would-be refusal is only recorded."""
    client = gated(twilio_client, clock, policy={"mode": "observe"})
    client.messages.create(to=LANDLINE, from_=FROM, body="x")
    assert twilio_http.sent[0]["To"] == LANDLINE
    record = client.gate.stores.audit.recent(1)[0]
    assert (record["action"], record["twilio_code"], record["enforced"]) == ("refuse", 21614, False)


def test_gate_refused_pickles(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """GateRefused survives pickling (task queues re-raise it in another process)."""
    err = refused(lambda: gated(twilio_client, clock).messages.create(to="+1415", from_=FROM, body="x"))
    again = pickle.loads(pickle.dumps(err))
    assert (again.code, again.status, again.decision) == (err.code, 400, err.decision)
