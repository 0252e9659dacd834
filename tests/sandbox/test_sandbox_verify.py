"""Verify v2: start a verification, read its code, check it, and Verify's errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gatekeeper.sandbox import Sandbox, SandboxServer, create_app

SERVICE = "VA" + "2" * 32


def _service(client: Client) -> Any:
    return client.verify.v2.services(SERVICE)


def test_start_and_approve(client: Client, sandbox: Sandbox) -> None:
    """An sms verification is pending with the default code; the right code approves it."""
    verification = _service(client).verifications.create(to="+14155550100", channel="sms")
    assert re.fullmatch(r"VE[0-9a-f]{32}", verification.sid)
    assert (verification.status, verification.valid, verification.channel) == ("pending", False, "sms")
    assert verification.lookup["carrier"]["type"] == "mobile"
    assert verification.send_code_attempts[0]["channel"] == "SMS"
    assert sandbox.verification_code("+14155550100") == "123456"
    check = _service(client).verification_checks.create(to="+14155550100", code="123456")
    assert (check.status, check.valid, check.sid) == ("approved", True, verification.sid)


def test_wrong_code_stays_pending(client: Client) -> None:
    """A wrong code answers 200 with status pending, and the right one still works after."""
    _service(client).verifications.create(to="+14155550100", channel="sms")
    wrong = _service(client).verification_checks.create(to="+14155550100", code="000000")
    assert (wrong.status, wrong.valid) == ("pending", False)
    assert _service(client).verification_checks.create(to="+14155550100", code="123456").status == "approved"


def test_check_without_pending_verification_is_404(client: Client) -> None:
    """Checking when nothing is pending (never started, or already approved) is 404 / 20404."""
    with pytest.raises(TwilioRestException) as caught:
        _service(client).verification_checks.create(to="+14155550100", code="123456")
    assert (caught.value.status, caught.value.code) == (404, 20404)
    _service(client).verifications.create(to="+14155550100", channel="sms")
    _service(client).verification_checks.create(to="+14155550100", code="123456")
    with pytest.raises(TwilioRestException) as again:
        _service(client).verification_checks.create(to="+14155550100", code="123456")
    assert again.value.code == 20404


def test_check_by_verification_sid(client: Client) -> None:
    """A check can name the VerificationSid instead of To."""
    verification = _service(client).verifications.create(to="+14155550100", channel="call")
    check = _service(client).verification_checks.create(verification_sid=verification.sid, code="123456")
    assert (check.status, check.channel) == ("approved", "call")


def test_codes_are_settable(client: Client, sandbox: Sandbox) -> None:
    """Tests can set the code per number (also for a pending one), and CustomCode is honoured."""
    sandbox.set_verify_code("4242", to="+14155550100")
    _service(client).verifications.create(to="+14155550100", channel="sms")
    assert sandbox.verification_code("+14155550100") == "4242"
    _service(client).verifications.create(to="+14155550102", channel="sms", custom_code="987654")
    assert sandbox.verification_code("+14155550102") == "987654"
    sandbox.set_verify_code("1111", to="(415) 555-0102")
    assert _service(client).verification_checks.create(to="+14155550102", code="1111").status == "approved"
    verification = _service(client).verifications.create(to="+14155550103", channel="sms")
    sandbox.set_verify_code("2222", sid=verification.sid)
    assert sandbox.verification_code("+14155550103") == "2222"


def test_landline_sms_is_403_60205(client: Client) -> None:
    """SMS to a landline answers 403 / 60205; a call to the same landline is fine."""
    with pytest.raises(TwilioRestException) as caught:
        _service(client).verifications.create(to="+14155550101", channel="sms")
    assert (caught.value.status, caught.value.code) == (403, 60205)
    assert _service(client).verifications.create(to="+14155550101", channel="call").status == "pending"


def test_email_channel(client: Client, sandbox: Sandbox) -> None:
    """Email verifications need an email To; the lookup object is empty."""
    verification = _service(client).verifications.create(to="user@example.com", channel="email")
    assert (verification.status, verification.lookup) == ("pending", {})
    assert _service(client).verification_checks.create(to="user@example.com", code="123456").valid is True


@pytest.mark.parametrize(
    ("to", "channel"),
    [("not-an-email", "email"), ("+14155550100", "pigeon"), ("+1415555", "sms"), ("", "sms")],
)
def test_bad_verification_parameters_are_400_60200(client: Client, to: str, channel: str) -> None:
    """A bad email, an unknown channel, an invalid number or no To: 400 / 60200."""
    with pytest.raises(TwilioRestException) as caught:
        _service(client).verifications.create(to=to, channel=channel)
    assert (caught.value.status, caught.value.code) == (400, 60200)


def test_check_needs_code_and_target(client: Client) -> None:
    """A check without To or VerificationSid is 400 / 60200."""
    with pytest.raises(TwilioRestException) as caught:
        _service(client).verification_checks.create(code="123456")
    assert (caught.value.status, caught.value.code) == (400, 60200)


def test_resend_reuses_the_verification_until_max_sends(client: Client) -> None:
    """Starting again while pending reuses the SID and adds an attempt; the sixth send is 429 / 60203."""
    sids = {_service(client).verifications.create(to="+14155550100", channel="sms").sid for _ in range(5)}
    assert len(sids) == 1
    with pytest.raises(TwilioRestException) as caught:
        _service(client).verifications.create(to="+14155550100", channel="sms")
    assert (caught.value.status, caught.value.code) == (429, 60203)


def test_max_check_attempts(client: Client) -> None:
    """Five wrong checks are allowed; the sixth is 429 / 60202 and the verification is gone."""
    _service(client).verifications.create(to="+14155550100", channel="sms")
    for _ in range(5):
        _service(client).verification_checks.create(to="+14155550100", code="000000")
    with pytest.raises(TwilioRestException) as caught:
        _service(client).verification_checks.create(to="+14155550100", code="123456")
    assert (caught.value.status, caught.value.code) == (429, 60202)


def test_unknown_service_sid_is_404(client: Client) -> None:
    """A service SID that is not VA + 32 hex digits is 404 / 20404."""
    with pytest.raises(TwilioRestException) as caught:
        client.verify.v2.services("VA123").verifications.create(to="+14155550100", channel="sms")
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_verifications_expire_after_ten_minutes(fake_clock: Any) -> None:
    """A verification older than ten minutes can no longer be checked (404), on a fake clock."""
    with SandboxServer(create_app(clock=fake_clock)) as server:
        client = server.client()
        _service(client).verifications.create(to="+14155550100", channel="sms")
        fake_clock.advance(601)
        with pytest.raises(TwilioRestException) as caught:
            _service(client).verification_checks.create(to="+14155550100", code="123456")
    assert caught.value.code == 20404
