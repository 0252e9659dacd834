"""Fault injection seen through the SDK: 500s, 429s, rate limits, dropped connections, latency."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gatekeeper.sandbox import Sandbox, SandboxServer, create_app, sandbox_client


def _fetch(client: Client, number: str = "+14155550100") -> Any:
    return client.lookups.v2.phone_numbers(number).fetch(fields="line_type_intelligence")


def _capturing_client(server: SandboxServer) -> tuple[Client, list[requests.Response]]:
    seen: list[requests.Response] = []

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        seen.append(response)

    return sandbox_client(server.url, request_hooks={"response": [hook]}), seen


def test_500_n_times_then_ok(client: Client, sandbox: Sandbox) -> None:
    """'Fail the next 2 Lookups with 500' fails exactly two, then answers; all three are counted."""
    sandbox.add_fault("error", route="lookup", times=2)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as caught:
            _fetch(client)
        assert (caught.value.status, caught.value.code) == (500, 20500)
    assert _fetch(client).valid is True
    assert sandbox.lookup_count("+14155550100") == 3
    assert [r.status for r in sandbox.requests("lookup")] == [500, 500, 200]
    assert sandbox.faults.faults() == []  # exhausted faults are gone


def test_429_carries_retry_after(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """A too_many_requests fault answers HTTP 429, code 20429 and a Retry-After header."""
    sandbox.add_fault("too_many_requests", route="messages.create", times=1, retry_after_seconds=3)
    client, seen = _capturing_client(sandbox_server)
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to="+14155550100", from_="+15005550006", body="x")
    assert (caught.value.status, caught.value.code) == (429, 20429)
    assert seen[-1].headers["Retry-After"] == "3"
    assert sandbox.messages() == []  # a refused create never stores a message
    assert client.messages.create(to="+14155550100", from_="+15005550006", body="x").status == "queued"


def test_rate_limit_token_bucket(fake_clock: Any) -> None:
    """Beyond rate x burst the sandbox answers 20429 with Retry-After; tokens refill as the clock moves."""
    with SandboxServer(create_app(clock=fake_clock)) as server:
        server.sandbox.set_rate_limit(1, burst=2, route="lookup")
        client, seen = _capturing_client(server)
        _fetch(client)
        _fetch(client)
        with pytest.raises(TwilioRestException) as caught:
            _fetch(client)
        assert (caught.value.status, caught.value.code) == (429, 20429)
        assert seen[-1].headers["Retry-After"] == "1"
        client.messages.create(to="+14155550100", from_="+15005550006", body="x")  # other routes unaffected
        fake_clock.advance(1.0)
        assert _fetch(client).valid is True


def test_dropped_connection_is_a_connection_error(client: Client, sandbox: Sandbox) -> None:
    """A drop fault closes the socket unanswered: the SDK sees requests' ConnectionError; then all is well."""
    assert _fetch(client).valid is True  # leaves a kept-alive connection in the SDK's pool
    sandbox.add_fault("drop", route="lookup", times=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        _fetch(client)
    assert _fetch(client).valid is True
    assert [r.status for r in sandbox.requests("lookup")] == [200, None, 200]


def test_dropped_send_is_not_stored(client: Client, sandbox: Sandbox) -> None:
    """A create dropped before handling leaves no message behind (Twilio never acted)."""
    sandbox.add_fault("drop", route="messages", times=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        client.messages.create(to="+14155550100", from_="+15005550006", body="x")
    assert sandbox.messages() == []


def test_latency_is_added(client: Client, sandbox: Sandbox) -> None:
    """A latency fault delays the answer (checked loosely) and then answers normally."""
    sandbox.add_fault("latency", route="lookup", latency_seconds=0.2, times=1)
    started = time.monotonic()
    assert _fetch(client).valid is True
    assert time.monotonic() - started >= 0.15


def test_faults_can_target_one_number(client: Client, sandbox: Sandbox) -> None:
    """A fault for one number (any format) leaves other numbers alone."""
    sandbox.add_fault("error", number="(415) 555-0101", status=503, code=20503, message="Service unavailable")
    assert _fetch(client, "+14155550100").valid is True
    with pytest.raises(TwilioRestException) as caught:
        _fetch(client, "+14155550101")
    assert (caught.value.status, caught.value.code) == (503, 20503)


def test_route_prefix_matches_every_verify_route(client: Client, sandbox: Sandbox) -> None:
    """route='verifications' hits creates; the check route is a different family."""
    sandbox.add_fault("error", route="verifications")
    service = client.verify.v2.services("VA" + "4" * 32)
    with pytest.raises(TwilioRestException):
        service.verifications.create(to="+14155550100", channel="sms")
    with pytest.raises(TwilioRestException) as caught:
        service.verification_checks.create(to="+14155550100", code="123456")
    assert caught.value.code == 20404  # reached the handler: nothing pending


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("meteor", {}),
        ("error", {"route": "nowhere"}),
        ("error", {"times": 0}),
        ("error", {"status": 200}),
        ("latency", {}),
        ("drop", {"colour": "red"}),
    ],
)
def test_bad_faults_are_refused(sandbox: Sandbox, kind: str, options: dict[str, Any]) -> None:
    """Unknown kinds, routes or options, and impossible values raise ValueError."""
    with pytest.raises(ValueError, match=r"."):
        sandbox.add_fault(kind, **options)


def test_reset_clears_faults(client: Client, sandbox: Sandbox) -> None:
    """reset() removes faults and the rate limit."""
    sandbox.add_fault("error", route="*")
    sandbox.set_rate_limit(0.001, burst=1)
    sandbox.reset()
    assert _fetch(client).valid is True
    assert _fetch(client).valid is True
