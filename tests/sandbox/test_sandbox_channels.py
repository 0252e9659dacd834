"""Channel addresses on Messages: WhatsApp ignores line type, Messenger needs no number, SIP/Client are Voice-only."""

from __future__ import annotations

from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gatekeeper.sandbox import Sandbox

PAGE = "messenger:104598712345678"
USER = "messenger:6523412987654321"


def _send(client: Client, receiver: Any, to: str, from_: str = "whatsapp:+15005550006") -> Any:
    return client.messages.create(to=to, from_=from_, body="hi", status_callback=f"{receiver.url}/status")


def test_whatsapp_to_a_landline_is_delivered(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """WhatsApp to +14155550101 (Lookup: landline) is accepted and delivered; no 30006, prefix kept throughout."""
    message = _send(client, receiver, "whatsapp:+14155550101")
    assert (message.status, message.to, message.from_) == ("queued", "whatsapp:+14155550101", "whatsapp:+15005550006")
    sandbox.flush_callbacks()
    assert receiver.statuses("MessageStatus") == ["sent", "delivered"]
    assert {r.form["To"] for r in receiver.received} == {"whatsapp:+14155550101"}
    assert all("ErrorCode" not in r.form for r in receiver.received)
    fetched = client.messages(message.sid).fetch()
    assert (fetched.status, fetched.error_code, fetched.to) == ("delivered", None, "whatsapp:+14155550101")


def test_sms_to_the_same_landline_still_fails_30006(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """The plain number keeps its SMS behaviour: undelivered with ErrorCode 30006."""
    _send(client, receiver, "+14155550101", from_="+15005550006")
    sandbox.flush_callbacks()
    assert receiver.statuses("MessageStatus") == ["sent", "undelivered"]
    assert receiver.received[-1].form["ErrorCode"] == "30006"


@pytest.mark.parametrize(("to", "code"), [("+15005550009", 21614), ("+15005550010", 30450), ("+15005550011", 30453)])
def test_sms_only_create_errors_do_not_apply_on_whatsapp(client: Client, to: str, code: int) -> None:
    """Not-SMS-capable (21614) and SMS Pumping Protection (30450/30453) refuse SMS but not WhatsApp."""
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=to, from_="+15005550006", body="x")
    assert caught.value.code == code
    assert client.messages.create(to=f"whatsapp:{to}", from_="whatsapp:+15005550006", body="x").status == "queued"


def test_whatsapp_keeps_other_create_errors(client: Client) -> None:
    """Opt-out (21610) and invalid numbers (21211) refuse WhatsApp too."""
    for to, code in (("whatsapp:+15005550004", 21610), ("whatsapp:+1415555", 21211)):
        with pytest.raises(TwilioRestException) as caught:
            client.messages.create(to=to, from_="whatsapp:+15005550006", body="x")
        assert (caught.value.status, caught.value.code) == (400, code)


def test_messenger_needs_no_number_profile(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """messenger: To with a messenger: From is accepted as given, delivered, and callbacks carry both addresses."""
    message = _send(client, receiver, USER, from_=PAGE)
    assert (message.to, message.from_, message.status) == (USER, PAGE, "queued")
    assert sandbox.requests("messages.create")[0].number == USER
    sandbox.flush_callbacks()
    assert receiver.statuses("MessageStatus") == ["sent", "delivered"]
    assert {(r.form["To"], r.form["From"]) for r in receiver.received} == {(USER, PAGE)}
    assert all(r.signature_valid for r in receiver.received)
    assert sandbox.lookup_counts() == {}


@pytest.mark.parametrize(
    ("to", "from_", "code"),
    [
        (USER, "+15005550006", 21910),
        ("+14155550100", PAGE, 21910),
        ("messenger:", PAGE, 21211),
        ("messenger:abc-def", PAGE, 21211),
        (USER, "messenger:", 21212),
    ],
)
def test_messenger_address_errors(client: Client, sandbox: Sandbox, to: str, from_: str, code: int) -> None:
    """Mixed channels answer 21910; an empty or non-alphanumeric Messenger id 21211 (To) or 21212 (From)."""
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=to, from_=from_, body="x")
    assert (caught.value.status, caught.value.code) == (400, code)
    assert sandbox.messages() == []


@pytest.mark.parametrize("to", ["sip:alice@example.com", "client:alice", "sip:", "client:"])
def test_sip_and_client_cannot_be_messaged(client: Client, sandbox: Sandbox, to: str) -> None:
    """SIP and Client addresses are Voice destinations: a message to one answers 400 / 21211."""
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=to, from_="+15005550006", body="x")
    assert (caught.value.status, caught.value.code) == (400, 21211)
    assert sandbox.messages() == []


def test_plain_numbers_are_unchanged(client: Client) -> None:
    """A plain number still answers in E.164, whatever format it was given in."""
    assert client.messages.create(to="+1 (415) 555-0100", from_="+15005550006", body="x").to == "+14155550100"
