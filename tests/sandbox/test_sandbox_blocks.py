"""Fraud blocks and opt-outs: Messaging's 30450/30453/21610 at create, Verify's 60410 (verify_error)."""

from __future__ import annotations

from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gatekeeper.sandbox import Sandbox, SandboxControlClient, SandboxServer
from gatekeeper.sandbox.numbers import FIXTURES, NumberBook

SERVICE = "VA" + "4" * 32


def _verify(client: Client, to: str, channel: str = "sms") -> Any:
    return client.verify.v2.services(SERVICE).verifications.create(to=to, channel=channel)


@pytest.mark.parametrize(
    ("to", "code", "words"),
    [
        ("+15005550010", 30450, "Message delivery blocked"),
        ("+15005550011", 30453, "Message couldn't be delivered"),
        ("+15005550004", 21610, "unsubscribed recipient"),
    ],
)
def test_fixture_numbers_are_refused_at_create(
    client: Client, sandbox: Sandbox, to: str, code: int, words: str
) -> None:
    """The fraud-block and opt-out fixtures answer Messages create with 400, their code and message."""
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=to, from_="+15005550006", body="x")
    assert (caught.value.status, caught.value.code) == (400, code)
    assert words in caught.value.msg
    assert sandbox.messages() == []


@pytest.mark.parametrize("code", [30450, 30453, 21610])
def test_any_number_can_be_configured_with_a_block(client: Client, sandbox: Sandbox, code: int) -> None:
    """create_error set by override refuses the number; calls to it are still placed."""
    sandbox.override_numbers({"+14155559001": {"create_error": code}})
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to="+14155559001", from_="+15005550006", body="x")
    assert (caught.value.status, caught.value.code) == (400, code)
    assert client.calls.create(to="+14155559001", from_="+15005550006", twiml="<Response/>").status == "queued"


def test_blocked_fixtures_still_look_up_as_valid_mobiles(client: Client) -> None:
    """Fraud blocks are about sending: Lookup answers the numbers as valid mobiles."""
    for number in ("+15005550010", "+15005550011", "+14155550108"):
        facts = client.lookups.v2.phone_numbers(number).fetch(fields="line_type_intelligence")
        assert (facts.valid, facts.line_type_intelligence["type"]) == (True, "mobile")


@pytest.mark.parametrize("channel", ["sms", "call", "whatsapp"])
def test_verify_fraud_guard_fixture_is_403_60410(client: Client, sandbox: Sandbox, channel: str) -> None:
    """Verify create to +14155550108 answers 403 / 60410 on any phone channel and stores nothing."""
    with pytest.raises(TwilioRestException) as caught:
        _verify(client, "+14155550108", channel)
    assert (caught.value.status, caught.value.code) == (403, 60410)
    assert caught.value.msg.endswith("Verification delivery attempt blocked")
    assert sandbox.verifications() == []


def test_verify_error_is_configurable(sandbox_server: SandboxServer, client: Client, sandbox: Sandbox) -> None:
    """verify_error set over the control API applies to that number only; unknown codes answer 400."""
    control = SandboxControlClient(sandbox_server.url)
    try:
        control.override_numbers({"+14155559002": {"verify_error": 60605}, "+14155559003": {"verify_error": 60999}})
    finally:
        control.close()
    with pytest.raises(TwilioRestException) as geo:
        _verify(client, "+14155559002")
    assert (geo.value.status, geo.value.code) == (403, 60605)
    with pytest.raises(TwilioRestException) as other:
        _verify(client, "+14155559003")
    assert (other.value.status, other.value.code) == (400, 60999)
    assert _verify(client, "+14155550100").status == "pending"
    assert client.messages.create(to="+14155559002", from_="+15005550006", body="x").status == "queued"


def test_verify_error_must_be_an_integer(sandbox: Sandbox) -> None:
    """An override with a non-integer verify_error is refused."""
    with pytest.raises(ValueError, match="verify_error"):
        sandbox.override_numbers({"+14155559004": {"verify_error": "60410"}})


def test_new_fixtures_are_in_the_book() -> None:
    """The fixture table has the fraud-block and Fraud Guard numbers with their codes."""
    assert (FIXTURES["+15005550010"].create_error, FIXTURES["+15005550011"].create_error) == (30450, 30453)
    assert NumberBook().profile("+14155550108").verify_error == 60410
    assert NumberBook().profile("+14155550100").verify_error is None
