"""The sandbox's strict rate limit: at most R requests in any one-second window, the first second included."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioRestException

from gatekeeper.sandbox import SandboxControlClient, SandboxServer, create_app, sandbox_client
from gatekeeper.sandbox.faults import FaultPlan, SlidingWindow


def test_the_window_admits_r_in_any_second_and_says_when_there_is_room(fake_clock: Any) -> None:
    """3/s: three at once pass, the fourth waits for the first to leave the window; no burst carried over after
    an idle time, unlike a token bucket (which would let 3 + 3 through in the first second)."""
    window = SlidingWindow(3, fake_clock)
    assert [window.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    fake_clock.advance(0.4)
    assert window.take() == pytest.approx(0.6)  # refused: the first three are still in the window
    fake_clock.advance(0.6)
    assert window.take() == 0.0  # exactly one second after the first: it has left
    fake_clock.advance(5)
    assert [window.take() for _ in range(4)][-1] > 0  # idle time saves nothing up


def test_strict_limit_through_the_sdk_answers_20429_with_retry_after(fake_clock: Any) -> None:
    """Past R in one second the SDK sees 429 / 20429 with Retry-After; other routes pass; a second later it answers."""
    with SandboxServer(create_app(clock=fake_clock)) as server:
        server.sandbox.set_rate_limit(2, route="lookup", strict=True)
        seen: list[requests.Response] = []
        client = sandbox_client(server.url, request_hooks={"response": [lambda r, *a, **k: seen.append(r)]})
        fetch = client.lookups.v2.phone_numbers("+14155550100").fetch
        fetch()
        fake_clock.advance(0.9)
        fetch()
        with pytest.raises(TwilioRestException) as caught:
            fetch()
        assert (caught.value.status, caught.value.code) == (429, 20429)
        assert seen[-1].headers["Retry-After"] == "1"
        client.messages.create(to="+14155550100", from_="+15005550006", body="x")  # other routes unaffected
        fake_clock.advance(0.1)
        assert fetch().valid is True
        assert [r.status for r in server.sandbox.requests("lookup")] == [200, 200, 429, 200]


def test_strict_limit_is_set_over_http_and_refuses_a_burst() -> None:
    """The control API takes ``strict``; a strict limit has no burst to set, and below 1/s it cannot be strict."""
    with SandboxServer() as server:
        control = SandboxControlClient(server.url)
        try:
            control.set_rate_limit(1, route="lookup", strict=True)
            client = server.client()
            client.lookups.v2.phone_numbers("+14155550100").fetch()
            with pytest.raises(TwilioRestException, match="Too Many Requests"):
                client.lookups.v2.phone_numbers("+14155550100").fetch()
        finally:
            control.close()
    plan = FaultPlan(lambda: 0.0)
    with pytest.raises(ValueError, match="no burst"):
        plan.set_rate_limit(5, burst=2, strict=True)
    with pytest.raises(ValueError, match=">= 1"):
        plan.set_rate_limit(0.5, strict=True)
