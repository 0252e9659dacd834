"""Messages: create and fetch through the SDK, parameter errors, Twilio's magic numbers."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gatekeeper.sandbox import TEST_ACCOUNT_SID, Sandbox

SERVICE = "MG" + "1" * 32


def test_create_answers_a_queued_message(client: Client, sandbox: Sandbox) -> None:
    """A create answers Twilio's Message resource: SM sid, queued, outbound-api, RFC 2822 date."""
    message = client.messages.create(to="+14155550100", from_="+15005550006", body="Hello")
    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
    assert (message.status, message.direction, message.num_segments, message.num_media) == (
        "queued",
        "outbound-api",
        "1",
        "0",
    )
    assert (message.to, message.from_, message.body, message.api_version) == (
        "+14155550100",
        "+15005550006",
        "Hello",
        "2010-04-01",
    )
    assert message.account_sid == TEST_ACCOUNT_SID
    assert message.error_code is None
    assert message.uri == f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages/{message.sid}.json"
    raw = sandbox.message(message.sid)
    assert raw is not None
    assert parsedate_to_datetime(raw["date_created"]).utcoffset() is not None


def test_fetch_returns_the_stored_message(client: Client) -> None:
    """GET Messages/{sid}.json returns the message created before."""
    created = client.messages.create(to="+14155550100", from_="+15005550006", body="Hello")
    fetched = client.messages(created.sid).fetch()
    assert (fetched.sid, fetched.body, fetched.status) == (created.sid, "Hello", "queued")


def test_fetch_unknown_sid_is_404_20404(client: Client) -> None:
    """An unknown message SID answers 404 / 20404."""
    with pytest.raises(TwilioRestException) as caught:
        client.messages("SM" + "0" * 32).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_messaging_service_send_is_accepted(client: Client) -> None:
    """With MessagingServiceSid and no From the message is 'accepted' with from null."""
    message = client.messages.create(to="+14155550100", messaging_service_sid=SERVICE, body="Hi")
    assert (message.status, message.from_, message.messaging_service_sid) == ("accepted", None, SERVICE)


def test_media_message_is_mm(client: Client) -> None:
    """MediaUrl without Body makes an MM sid with num_media counted."""
    message = client.messages.create(
        to="+14155550100",
        from_="+15005550006",
        media_url=["https://example.com/a.png", "https://example.com/b.png"],
    )
    assert message.sid.startswith("MM")
    assert message.num_media == "2"


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("a" * 160, "1"),
        ("a" * 161, "2"),
        ("é" * 160, "1"),
        ("€" * 80, "1"),
        ("€" * 81, "2"),
        ("😀" * 35, "1"),
        ("😀" * 36, "2"),
    ],
)
def test_segments_follow_gsm7_and_ucs2(client: Client, body: str, segments: str) -> None:
    """num_segments counts GSM-7 (160/153, extension chars count double) or UCS-2 (70/67) parts."""
    assert client.messages.create(to="+14155550100", from_="+15005550006", body=body).num_segments == segments


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"from_": "+15005550006", "body": "x", "to": ""}, 21604),
        ({"to": "+14155550100", "body": "x"}, 21603),
        ({"to": "+14155550100", "from_": "+15005550006"}, 21602),
        ({"to": "+14155550100", "from_": "+15005550006", "body": "x" * 1601}, 21617),
        ({"to": "+14155550100", "messaging_service_sid": "MG123", "body": "x"}, 21701),
        ({"to": "+14155550100", "from_": "+15005550006", "body": "x", "status_callback": "ftp://x"}, 21609),
        ({"to": "+1415555", "from_": "+15005550006", "body": "x"}, 21211),
    ],
)
def test_bad_parameters_are_400s(client: Client, sandbox: Sandbox, kwargs: dict[str, str], code: int) -> None:
    """Missing To/From/Body, a long body, a bad service SID or callback URL, an invalid To: 400s."""
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(**kwargs)
    assert (caught.value.status, caught.value.code) == (400, code)
    assert sandbox.messages() == []


@pytest.mark.parametrize(
    ("to", "code"),
    [
        ("+15005550001", 21211),
        ("+15005550002", 21612),
        ("+15005550003", 21408),
        ("+15005550004", 21610),
        ("+15005550009", 21614),
    ],
)
def test_magic_to_numbers(client: Client, to: str, code: int) -> None:
    """Twilio's test To numbers fail at create with their codes, HTTP 400."""
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=to, from_="+15005550006", body="x")
    assert (caught.value.status, caught.value.code) == (400, code)


@pytest.mark.parametrize(("from_", "code"), [("+15005550001", 21212), ("+15005550007", 21606), ("+15005550008", 21611)])
def test_magic_from_numbers(client: Client, from_: str, code: int) -> None:
    """Twilio's test From numbers fail at create with their codes."""
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to="+14155550100", from_=from_, body="x")
    assert caught.value.code == code


def test_whatsapp_address_keeps_its_prefix(client: Client) -> None:
    """A whatsapp: To is resolved by its number and answered with the prefix kept."""
    message = client.messages.create(to="whatsapp:+14155550100", from_="whatsapp:+15005550006", body="hi")
    assert message.to == "whatsapp:+14155550100"


def test_requests_are_recorded_without_credentials(client: Client, sandbox: Sandbox) -> None:
    """The request log keeps method, path and params, and only the user name of the credentials."""
    client.messages.create(to="+14155550100", from_="+15005550006", body="hi")
    (recorded,) = sandbox.requests("messages.create", number="+14155550100")
    assert (recorded.method, recorded.form["Body"], recorded.username) == ("POST", ["hi"], TEST_ACCOUNT_SID)
    assert "token" not in str(recorded.to_dict()).lower()
