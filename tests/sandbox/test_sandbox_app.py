"""Robustness of the emulator: Twilio-shaped errors for bad input, a catch-all for bugs, quiet logs."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gatekeeper.sandbox import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, Sandbox, SandboxServer

AUTH = (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)


def _is_twilio_error(body: dict[str, Any], status: int) -> bool:
    return set(body) == {"code", "message", "more_info", "status"} and body["status"] == status


def test_unknown_path_is_twilio_404(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """A path the sandbox does not serve answers 404 / 20404 in Twilio's shape."""
    response = requests.get(f"{sandbox_server.url}/v1/Nothing", auth=AUTH, timeout=5)
    assert response.status_code == 404
    assert _is_twilio_error(response.json(), 404)
    assert response.json()["code"] == 20404


def test_wrong_method_is_twilio_405(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """DELETE on a create route answers 405 in Twilio's shape."""
    response = requests.delete(
        f"{sandbox_server.url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json", auth=AUTH, timeout=5
    )
    assert response.status_code == 405
    assert _is_twilio_error(response.json(), 405)


def test_oversized_body_is_a_4xx(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """A request body over 1 MB is refused with a Twilio-shaped 413, not a crash."""
    response = requests.post(
        f"{sandbox_server.url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json",
        data={"Body": "x" * 2_000_000, "To": "+14155550100"},
        auth=AUTH,
        timeout=10,
    )
    assert response.status_code == 413
    assert _is_twilio_error(response.json(), 413)


def test_garbage_form_is_a_4xx(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """Undecodable form bytes still get a Twilio-shaped 4xx answer."""
    response = requests.post(
        f"{sandbox_server.url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json",
        data=b"To=%ff%fe&Body=\xff\xfe",
        auth=AUTH,
        timeout=5,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert 400 <= response.status_code < 500
    assert _is_twilio_error(response.json(), response.status_code)


def test_bugs_answer_a_twilio_shaped_500(
    client: Client, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception answers 500 / 20500 in Twilio's shape and is logged by type only."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail +14155550100")

    monkeypatch.setattr(sandbox, "profile", boom)
    with (
        caplog.at_level(logging.ERROR, logger="gatekeeper.sandbox"),
        pytest.raises(TwilioRestException) as caught,
    ):
        client.lookups.v2.phone_numbers("+14155550100").fetch()
    assert (caught.value.status, caught.value.code) == (500, 20500)
    assert "RuntimeError" in caplog.text
    assert "+14155550100" not in caplog.text


def test_responses_carry_a_request_id(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """Every Twilio-route answer has a Twilio-Request-Id header."""
    response = requests.get(f"{sandbox_server.url}/v2/PhoneNumbers/+14155550100", auth=AUTH, timeout=5)
    assert response.headers["Twilio-Request-Id"].startswith("RQ")


def test_logs_never_hold_full_numbers_or_tokens(
    client: Client, sandbox: Sandbox, receiver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, the sandbox's logs mask every number and never show the auth token."""
    with caplog.at_level(logging.DEBUG, logger="gatekeeper.sandbox"):
        client.lookups.v2.phone_numbers("+14155550100").fetch(fields="line_type_intelligence")
        client.messages.create(
            to="+14155550101", from_="+15005550006", body="hi", status_callback=f"{receiver.url}/status"
        )
        client.calls.create(to="+14155550102", from_="+15005550006", twiml="<Response/>")
        client.verify.v2.services("VA" + "6" * 32).verifications.create(to="+14155550103", channel="sms")
        sandbox.add_fault("error", number="+14155550100", times=1)
        with pytest.raises(Exception, match="500"):
            client.lookups.v2.phone_numbers("+14155550100").fetch()
        sandbox.flush_callbacks()
    assert caplog.records, "expected the sandbox to log something at DEBUG"
    for digits in ("4155550100", "4155550101", "4155550102", "4155550103"):
        assert digits not in caplog.text
    assert TEST_AUTH_TOKEN not in caplog.text


_PARAMS = st.sampled_from(
    [
        "To",
        "From",
        "Body",
        "MediaUrl",
        "MessagingServiceSid",
        "StatusCallback",
        "Twiml",
        "Url",
        "Channel",
        "Code",
        "VerificationSid",
        "CustomCode",
        "StatusCallbackEvent",
        "Fields",
        "CountryCode",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "+14155550100",
            "+14155550101",
            "+15005550001",
            "sms",
            "email",
            "<Response/>",
            "<x",
            "http://127.0.0.1:9/cb",
            "MG" + "0" * 32,
            "123456",
            "a@b.co",
            "line_type_intelligence",
        ]
    ),
)
_PATHS = [
    ("GET", "/v2/PhoneNumbers/{value}"),
    ("POST", f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"),
    ("POST", f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Calls.json"),
    ("POST", "/v2/Services/VA" + "8" * 32 + "/Verifications"),
    ("POST", "/v2/Services/VA" + "8" * 32 + "/VerificationCheck"),
    ("GET", f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages/{{value}}.json"),
]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(_PATHS),
    params=st.dictionaries(_PARAMS, _VALUES, max_size=6),
    value=st.text(max_size=20),
)
def test_arbitrary_input_never_crashes(
    sandbox_server: SandboxServer, route: tuple[str, str], params: dict[str, str], value: str
) -> None:
    """Whatever the parameters, every answer is a Twilio-shaped JSON body with a status below 500."""
    method, template = route
    path = template.replace("{value}", quote(value or "x", safe="+"))
    data = params if method == "POST" else None
    query = params if method == "GET" else None
    response = requests.request(method, sandbox_server.url + path, data=data, params=query, auth=AUTH, timeout=5)
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code >= 400:
        assert _is_twilio_error(body, response.status_code)
