"""The control API over HTTP (/_sandbox), as another process would drive it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from twilio.rest import Client

from gatekeeper.sandbox import Sandbox, SandboxControlClient, SandboxServer


@pytest.fixture
def control(sandbox_server: SandboxServer, sandbox: Sandbox) -> Iterator[SandboxControlClient]:
    remote = SandboxControlClient(sandbox_server.url)
    yield remote
    remote.close()


def test_lookup_counts_and_requests(control: SandboxControlClient, client: Client) -> None:
    """Lookup counts and the request log are readable over HTTP."""
    client.lookups.v2.phone_numbers("+14155550100").fetch()
    assert control.lookup_count("+14155550100") == 1
    assert control.lookup_count("+14155550101") == 0
    (recorded,) = control.requests(route="lookup")
    assert (recorded["method"], recorded["number"], recorded["status"]) == ("GET", "+14155550100", 200)


def test_messages_calls_and_twiml(control: SandboxControlClient, client: Client) -> None:
    """Stored messages and calls (with their TwiML) are listed over HTTP."""
    client.messages.create(to="+14155550100", from_="+15005550006", body="hi")
    client.calls.create(to="+14155550100", from_="+15005550006", twiml="<Response><Say>x</Say></Response>")
    assert [m["body"] for m in control.messages()] == ["hi"]
    assert [c["twiml"] for c in control.calls()] == ["<Response><Say>x</Say></Response>"]


def test_faults_over_http(control: SandboxControlClient, client: Client) -> None:
    """A fault added over HTTP fires, then the fault list is empty again."""
    fault = control.add_fault("error", route="lookup", times=1)
    assert fault["kind"] == "error"
    assert fault["times"] == 1
    with pytest.raises(Exception, match="500"):
        client.lookups.v2.phone_numbers("+14155550100").fetch()
    assert client.lookups.v2.phone_numbers("+14155550100").fetch().valid is True
    control.set_rate_limit(100, burst=10)
    control.clear_faults()


def test_numbers_and_codes_over_http(control: SandboxControlClient, client: Client) -> None:
    """Number overrides and verification codes are settable and readable over HTTP."""
    control.override_numbers({"+14155550100": {"line_type": "landline"}})
    lti = client.lookups.v2.phone_numbers("+14155550100").fetch(fields="line_type_intelligence")
    assert lti.line_type_intelligence["type"] == "landline"
    control.set_verify_code("8642")
    client.verify.v2.services("VA" + "5" * 32).verifications.create(to="+14155550102", channel="sms")
    assert control.verification_code("+14155550102") == "8642"


def test_callbacks_over_http(control: SandboxControlClient, client: Client, receiver: Any) -> None:
    """Callback settings and flushing work over HTTP."""
    control.configure_callbacks(duplicate=1.0)
    client.messages.create(to="+14155550100", from_="+15005550006", body="hi", status_callback=f"{receiver.url}/status")
    deliveries = control.flush_callbacks()
    assert [d["duplicate"] for d in deliveries] == [False, True, False, True]
    assert all(d["ok"] for d in deliveries)


def test_reset_over_http(control: SandboxControlClient, client: Client) -> None:
    """POST /_sandbox/reset forgets messages and requests."""
    client.messages.create(to="+14155550100", from_="+15005550006", body="hi")
    control.reset()
    assert control.messages() == []
    assert control.requests() == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/faults", {"kind": "meteor"}),
        ("PUT", "/callbacks", {"mode": "sometimes"}),
        ("POST", "/numbers", {"+14155550100": {"colour": "red"}}),
        ("PUT", "/rate_limit", {"rate_per_second": "x"}),
        ("POST", "/faults", None),
        ("PUT", "/verifications/code", {"code": "1"}),
    ],
)
def test_bad_control_input_is_400(
    sandbox_server: SandboxServer, sandbox: Sandbox, method: str, path: str, body: Any
) -> None:
    """Bad control input answers 400 with an error message, never a crash."""
    response = requests.request(method, f"{sandbox_server.url}/_sandbox{path}", json=body, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"]


def test_profile_and_callback_state_are_readable(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """GET /_sandbox/numbers/<n> shows a profile; GET /_sandbox/callbacks shows settings."""
    profile = requests.get(f"{sandbox_server.url}/_sandbox/numbers/+14155550101", timeout=5).json()
    assert profile["line_type"] == "landline"
    state = requests.get(f"{sandbox_server.url}/_sandbox/callbacks", timeout=5).json()
    assert (state["config"]["mode"], state["pending"], state["deliveries"]) == ("manual", 0, [])
