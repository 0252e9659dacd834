"""Channel addresses: whatsapp:, messenger:, sip: and client: reach their channel, with that channel's rules."""

from __future__ import annotations

from typing import Any

import pytest
from support import FakeClock, FakeTwilio
from twilio.rest import Client

from gatekeeper import Action, GatedClient, Gatekeeper, GateRefused, InvalidArgument, Settings, Stores
from gatekeeper.phone import normalize, sender_scope
from gatekeeper.stores.memory import MemoryStore

MOBILE, LANDLINE = "+14155552671", "+14155552672"
FROM = "+15005550006"
VA = "VA" + "0" * 32


def make(client: Client, clock: FakeClock, **settings: Any) -> Gatekeeper:
    stores = Stores.using(MemoryStore(clock=clock))
    return Gatekeeper(client, settings=Settings(**settings), clock=clock, sleep=clock.sleep, stores=stores)


@pytest.mark.parametrize(
    ("raw", "channel", "e164", "to"),
    [
        ("whatsapp:+14155552671", "whatsapp", MOBILE, "whatsapp:+14155552671"),
        ("WhatsApp:(415) 555-2671", "whatsapp", MOBILE, "whatsapp:+14155552671"),
        ("rcs:+447911123456", "rcs", "+447911123456", "rcs:+447911123456"),
        ("messenger:1234567890", "messenger", None, "messenger:1234567890"),
        ("sip:alice@example.com;transport=tls", "sip", None, "sip:alice@example.com;transport=tls"),
        ("client:alice_01", "client", None, "client:alice_01"),
    ],
)
def test_addresses_keep_their_channel(raw: str, channel: str, e164: str | None, to: str) -> None:
    """A prefix is kept on To; the number behind whatsapp:/rcs: is normalized, other addresses have none."""
    phone = normalize(raw, "US")
    assert (phone.ok, phone.channel, phone.e164, phone.to) == (True, channel, e164, to)
    assert phone.key == (e164 or to)


@pytest.mark.parametrize("raw", ["sip:", "sip:nobody", "client:", "client:al ice", "messenger:", "whatsapp:+1415"])
def test_malformed_addresses_are_refused_locally(raw: str, twilio_http: FakeTwilio, twilio_client: Client) -> None:
    """An address of the wrong shape is refused 21211 before any store or Lookup."""
    d = make(twilio_client, FakeClock()).decide(raw)
    assert (d.action, d.twilio_code) == (Action.REFUSE, 21211)
    assert sum(twilio_http.lookups.values()) == 0


def test_whatsapp_keeps_its_prefix_and_ignores_line_types(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """WhatsApp to a landline is sent as WhatsApp (no 21614, no voice fallback), To keeps its prefix."""
    g = make(twilio_client, clock, policy={"deny_line_types": ["landline"]})
    out = g.notify("whatsapp:" + LANDLINE, "hi", from_="whatsapp:" + FROM)
    assert (out.action, out.decision.to) == (Action.WHATSAPP, "whatsapp:" + LANDLINE)
    assert twilio_http.sent[-1]["To"] == "whatsapp:" + LANDLINE and twilio_http.calls == []
    client = GatedClient(twilio_client, g)
    client.messages.create(to="whatsapp:" + LANDLINE, from_="whatsapp:" + FROM, body="hi")
    assert twilio_http.sent[-1]["To"] == "whatsapp:" + LANDLINE
    assert twilio_http.lookups[LANDLINE] == 1  # the number behind it was looked up, once
    with pytest.raises(GateRefused) as sms:  # the same landline by SMS: the SMS rules apply
        client.messages.create(to=LANDLINE, from_=FROM, body="hi")
    assert sms.value.code == 21614


def test_whatsapp_is_screened_for_country_and_consent(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """The number behind whatsapp: meets the country rules and the account's opt-outs like any number."""
    g = make(twilio_client, clock, policy={"deny_countries": ["GB"]})
    assert g.decide("whatsapp:+447400123456").twilio_code == 21408
    g.opt_out(MOBILE)
    assert g.decide("whatsapp:" + MOBILE).reasons == ("opted_out:account",)


def test_a_whatsapp_stop_silences_whatsapp_only(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """An opt-out recorded on the WhatsApp channel refuses WhatsApp sends and leaves SMS alone."""
    g = make(twilio_client, clock)
    scope = g.suppression.scope_of(None, channel="whatsapp")
    g.suppression.record_consent(MOBILE, scope, opted_out=True, source="webhook:STOP:SM1")
    refused = g.notify("whatsapp:" + MOBILE, "hi", from_="whatsapp:" + FROM)
    assert (refused.action, refused.decision.twilio_code, refused.decision.reasons) == (
        Action.REFUSE,
        21610,
        ("opted_out:channel",),
    )
    assert g.notify(MOBILE, "hi", from_=FROM).action is Action.SMS


def test_channel_opt_outs_can_be_account_wide(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """With channel_opt_outs = "account" a WhatsApp STOP silences every channel."""
    g = make(twilio_client, clock, webhooks={"channel_opt_outs": "account"})
    scope = g.suppression.scope_of(None, channel="whatsapp")
    g.suppression.record_consent(MOBILE, scope, opted_out=True, source="webhook:STOP:SM1")
    assert g.decide(MOBILE).reasons == ("opted_out:account",)


def test_a_whatsapp_sender_is_its_own_scope() -> None:
    """With sender-scoped opt-outs, WhatsApp from a number and SMS from it are different senders."""
    assert sender_scope("whatsapp:" + FROM) == "whatsapp:" + FROM
    assert sender_scope(FROM) == FROM


@pytest.mark.parametrize("address", ["sip:alice@example.com", "client:alice"])
def test_sip_and_client_are_called_without_a_lookup(
    address: str, twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """calls.create to sip:/client: is an ordinary call: allowed, no Lookup; notify says the message on a call."""
    g = make(twilio_client, clock)
    client = GatedClient(twilio_client, g)
    client.calls.create(to=address, from_=FROM, url="https://example.com/twiml")
    out = g.notify(address, "Your table is ready", from_=FROM)
    channel = address.split(":", maxsplit=1)[0]
    assert out.action is Action.VOICE and out.decision.reasons == (f"address:{channel}", "fallback:voice")
    assert [c["To"] for c in twilio_http.calls] == [address, address]
    assert sum(twilio_http.lookups.values()) == 0
    with pytest.raises(GateRefused) as text:  # a text cannot reach a SIP or client address
        client.messages.create(to=address, from_=FROM, body="hi")
    assert text.value.code == 21211


def test_policy_can_deny_a_channel(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """deny_channels refuses that channel (21612), before any Lookup for an address."""
    g = make(twilio_client, clock, policy={"deny_channels": ["sip", "whatsapp"]})
    client = GatedClient(twilio_client, g)
    with pytest.raises(GateRefused) as sip:
        client.calls.create(to="sip:alice@example.com", from_=FROM, url="https://example.com/twiml")
    assert (sip.value.code, sip.value.decision.reasons) == (21612, ("channel:denied:sip",))
    assert g.decide("whatsapp:" + MOBILE).reasons == ("channel:denied:whatsapp",)
    assert sum(twilio_http.lookups.values()) == 0


def test_policy_can_deny_the_voice_fallback(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """With voice denied, a landline on notify is refused rather than called."""
    g = make(twilio_client, clock, policy={"deny_channels": ["voice"]})
    out = g.notify(LANDLINE, "hi", from_=FROM)
    assert (out.action, out.decision.twilio_code) == (Action.REFUSE, 21612)
    assert out.decision.reasons[-1] == "channel:denied:voice"
    assert twilio_http.calls == []


def test_messenger_is_sent_without_a_lookup(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """messenger:<id> goes out as a message on that channel; its opt-outs are kept under the address."""
    g = make(twilio_client, clock)
    out = g.notify("messenger:123456", "hi", from_="messenger:998877")
    assert (out.action, twilio_http.sent[-1]["To"]) == (Action.MESSAGE, "messenger:123456")
    assert sum(twilio_http.lookups.values()) == 0
    scope = g.suppression.scope_of(None, channel="messenger")
    g.suppression.record_consent("messenger:123456", scope, opted_out=True, source="webhook:STOP:SM2")
    assert g.notify("messenger:123456", "hi", from_="messenger:998877").action is Action.REFUSE


def test_verify_whatsapp_has_its_own_rules(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Verify's whatsapp ignores line types (a landline or VoIP number is sent a WhatsApp code), with Verify's name."""
    g = make(twilio_client, clock)
    out = g.start_verification(LANDLINE, verify_service_sid=VA, channel="whatsapp")
    assert out.action is Action.VERIFY_WHATSAPP
    assert (twilio_http.verifications[-1]["To"], twilio_http.verifications[-1]["Channel"]) == (LANDLINE, "whatsapp")
    client = GatedClient(twilio_client, g)
    client.verify.v2.services(VA).verifications.create(to=LANDLINE, channel="whatsapp")
    assert twilio_http.verifications[-1]["Channel"] == "whatsapp"


def test_verify_sna_needs_a_mobile_number(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Silent Network Auth asks the mobile carrier: a landline is refused 60205, a mobile goes through."""
    g = make(twilio_client, clock)
    client = GatedClient(twilio_client, g)
    verifications = client.verify.v2.services(VA).verifications
    with pytest.raises(GateRefused) as landline:
        verifications.create(to=LANDLINE, channel="sna")
    assert (landline.value.code, landline.value.decision.reasons[-1]) == (60205, "channel:sna_needs_mobile")
    verifications.create(to=MOBILE, channel="sna")
    assert twilio_http.verifications[-1]["Channel"] == "sna"


def test_verify_auto_is_gated_as_sms(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Verify's auto may end as an SMS, so it meets the SMS rules: a landline is refused 60205."""
    client = GatedClient(twilio_client, make(twilio_client, clock))
    verifications = client.verify.v2.services(VA).verifications
    with pytest.raises(GateRefused) as landline:
        verifications.create(to=LANDLINE, channel="auto")
    assert landline.value.code == 60205
    verifications.create(to=MOBILE, channel="auto")
    assert twilio_http.verifications[-1]["Channel"] == "auto"


def test_an_unknown_verify_channel_fails_closed(twilio_client: Client, clock: FakeClock) -> None:
    """A Verify channel the gate has no rules for is refused with InvalidArgument, never sent ungated."""
    client = GatedClient(twilio_client, make(twilio_client, clock))
    with pytest.raises(InvalidArgument, match="channel"):
        client.verify.v2.services(VA).verifications.create(to=MOBILE, channel="carrier-pigeon")
