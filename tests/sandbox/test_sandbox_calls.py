"""Calls: create with Twiml or Url, TwiML checks, fetch, magic numbers, outcomes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from gatekeeper.sandbox import Sandbox


def test_create_with_twiml_keeps_the_twiml(client: Client, sandbox: Sandbox) -> None:
    """A call created with Twiml is queued, and the sandbox keeps the TwiML for tests to read."""
    twiml = VoiceResponse()
    twiml.say("Your code is 1 2 3 <&>", voice="Polly.Joanna")
    call = client.calls.create(to="+14155550100", from_="+15005550006", twiml=str(twiml))
    assert re.fullmatch(r"CA[0-9a-f]{32}", call.sid)
    assert (call.status, call.direction, call.to, call.to_formatted) == (
        "queued",
        "outbound-api",
        "+14155550100",
        "(415) 555-0100",
    )
    assert sandbox.call_twiml(call.sid) == str(twiml)
    stored = sandbox.call(call.sid)
    assert stored is not None
    assert stored["twiml"] == str(twiml)


def test_create_with_url(client: Client, sandbox: Sandbox) -> None:
    """A call created with Url keeps the URL and no TwiML."""
    call = client.calls.create(to="+14155550100", from_="+15005550006", url="https://example.com/twiml")
    stored = sandbox.call(call.sid)
    assert stored is not None
    assert (stored["instructions_url"], stored["twiml"]) == ("https://example.com/twiml", None)


def test_fetch_call(client: Client) -> None:
    """GET Calls/{sid}.json returns the created call; an unknown SID is 404 / 20404."""
    call = client.calls.create(to="+14155550100", from_="+15005550006", twiml="<Response/>")
    assert client.calls(call.sid).fetch().status == "queued"
    with pytest.raises(TwilioRestException) as caught:
        client.calls("CA" + "0" * 32).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "+14155550100", "from_": "+15005550006"}, 21205),
        ({"to": "+14155550100", "from_": "+15005550006", "url": "not a url"}, 21205),
        ({"to": "", "from_": "+15005550006", "twiml": "<Response/>"}, 21201),
        ({"to": "+14155550100", "from_": "", "twiml": "<Response/>"}, 21213),
        ({"to": "+14155550100", "from_": "+15005550006", "twiml": "<Response><Say>hi</Response>"}, 12100),
        ({"to": "+14155550100", "from_": "+15005550006", "twiml": "<Reply/>"}, 12100),
        (
            {
                "to": "+14155550100",
                "from_": "+15005550006",
                "twiml": '<!DOCTYPE r [<!ENTITY a "aaaa">]><Response>&a;</Response>',
            },
            12100,
        ),
    ],
)
def test_bad_call_parameters_are_400s(client: Client, sandbox: Sandbox, kwargs: dict[str, str], code: int) -> None:
    """No instructions, a bad Url, missing To/From, malformed or non-Response TwiML, a DTD: 400s."""
    with pytest.raises(TwilioRestException) as caught:
        client.calls.create(**kwargs)
    assert (caught.value.status, caught.value.code) == (400, code)
    assert sandbox.calls() == []


@pytest.mark.parametrize(
    ("to", "code"),
    [("+15005550001", 21217), ("+15005550002", 21214), ("+15005550003", 21215), ("+15005550004", 21216)],
)
def test_magic_numbers_for_calls(client: Client, to: str, code: int) -> None:
    """Twilio's test To numbers fail a call create with the voice codes."""
    with pytest.raises(TwilioRestException) as caught:
        client.calls.create(to=to, from_="+15005550006", twiml="<Response/>")
    assert (caught.value.status, caught.value.code) == (400, code)


def test_sms_only_magic_number_can_be_called(client: Client) -> None:
    """+15005550009 (not SMS-capable) still takes calls."""
    assert client.calls.create(to="+15005550009", from_="+15005550006", twiml="<Response/>").status == "queued"


@pytest.mark.parametrize(
    ("to", "final", "duration"),
    [("+14155550100", "completed", "17"), ("+14155550105", "busy", "0"), ("+14155550106", "no-answer", "0")],
)
def test_call_ends_per_profile(client: Client, sandbox: Sandbox, to: str, final: str, duration: str) -> None:
    """After the lifecycle is flushed the call shows the profile's outcome."""
    call = client.calls.create(to=to, from_="+15005550006", twiml="<Response/>")
    sandbox.flush_callbacks()
    fetched = client.calls(call.sid).fetch()
    assert (fetched.status, fetched.duration) == (final, duration)


@pytest.mark.parametrize(
    "to",
    [
        "sip:alice@example.com",
        "sip:bob@example.com;transport=tls",
        "sips:carol@10.0.0.5:5061",
        "sip:dave@example.com?X-Custom=1",
        "client:alice",
        "client:agent_42",
    ],
)
def test_sip_and_client_targets_are_called(client: Client, sandbox: Sandbox, to: str) -> None:
    """A SIP URI or Client identity is a Voice destination: echoed as given, no profile, completes."""
    call = client.calls.create(to=to, from_="+15005550006", twiml="<Response/>")
    assert (call.status, call.to, call.to_formatted) == ("queued", to, to)
    assert sandbox.requests("calls.create")[0].number == to
    sandbox.flush_callbacks()
    fetched = client.calls(call.sid).fetch()
    assert (fetched.status, fetched.to, fetched.duration) == ("completed", to, "17")


def test_sip_call_callbacks_carry_the_address(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """Status callbacks of a SIP call report To/Called as the SIP URI given."""
    to = "sip:bob@example.com;transport=tls"
    client.calls.create(
        to=to,
        from_="+15005550006",
        twiml="<Response/>",
        status_callback=f"{receiver.url}/call",
        status_callback_event=["initiated", "completed"],
    )
    sandbox.flush_callbacks()
    forms = [r.form for r in receiver.received]
    assert [(f["CallStatus"], f["To"], f["Called"]) for f in forms] == [
        ("initiated", to, to),
        ("completed", to, to),
    ]


@pytest.mark.parametrize(
    "to",
    ["sip:", "sip:example.com", "sip:@example.com", "sip:bob@", "sip:bob smith@example.com", "client:", "client:a b"],
)
def test_malformed_sip_or_client_is_21211(client: Client, sandbox: Sandbox, to: str) -> None:
    """A SIP URI without user@host or an empty/blank Client identity answers 400 / 21211, nothing stored."""
    with pytest.raises(TwilioRestException) as caught:
        client.calls.create(to=to, from_="+15005550006", twiml="<Response/>")
    assert (caught.value.status, caught.value.code) == (400, 21211)
    assert to in caught.value.msg
    assert sandbox.calls() == []


def test_messenger_address_cannot_be_called(client: Client, sandbox: Sandbox) -> None:
    """A messenger: address is not a Voice destination, even when its id is all digits: 400 / 21211."""
    with pytest.raises(TwilioRestException) as caught:
        client.calls.create(to="messenger:4155550100", from_="+15005550006", twiml="<Response/>")
    assert (caught.value.status, caught.value.code) == (400, 21211)
    assert sandbox.calls() == []
