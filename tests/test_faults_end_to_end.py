"""Retries and fail-modes against the sandbox's injected faults, over real HTTP through the real SDK."""

from __future__ import annotations

import pytest
import requests
from support import FakeClock

from gatekeeper import Action, Gatekeeper, SendUnavailable, Settings, Stores
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.memory import MemoryStore

MOBILE, FROM = "+14155550100", "+15005550006"


def gate(server: SandboxServer, clock: FakeClock, **settings: object) -> Gatekeeper:
    return Gatekeeper(
        server.client(),
        settings=Settings(**settings),
        clock=clock,
        sleep=clock.sleep,
        stores=Stores.using(MemoryStore(clock=clock)),
    )


def test_lookup_survives_500s_and_a_dropped_connection(
    sandbox_server: SandboxServer, sandbox: Sandbox, clock: FakeClock
) -> None:
    """Two 500s, then a dropped connection, then an answer: four Lookups, facts from Lookup."""
    sandbox.add_fault("error", route="lookup", number=MOBILE, times=2)
    sandbox.add_fault("drop", route="lookup", number=MOBILE, times=1)
    d = gate(sandbox_server, clock, lookup={"max_retries": 3}).decide(MOBILE)
    assert (d.action, d.facts.source) == (Action.SMS, "lookup")
    assert sandbox.lookup_count(MOBILE) == 4
    assert len(clock.sleeps) == 3


def test_lookup_honours_retry_after_from_the_sandbox(
    sandbox_server: SandboxServer, sandbox: Sandbox, clock: FakeClock
) -> None:
    """20429 with Retry-After: 3, within [rates] max_wait_ms: waits three seconds, then succeeds."""
    sandbox.add_fault("too_many_requests", route="lookup", number=MOBILE, times=1, retry_after_seconds=3)
    d = gate(sandbox_server, clock, rates={"max_wait_ms": 5000}).decide(MOBILE)
    assert d.facts.source == "lookup"
    assert clock.sleeps == [3.0]


def test_a_long_retry_after_pauses_lookups_instead_of_stalling(
    sandbox_server: SandboxServer, sandbox: Sandbox, clock: FakeClock
) -> None:
    """Retry-After: 60, past max_wait: no wait at all; this decision and the next new number's follow
    on_lookup_error at once (lookup:rate_limited) without asking Lookup, until the minute is over."""
    sandbox.add_fault("too_many_requests", route="lookup", times=1, retry_after_seconds=60)
    g = gate(sandbox_server, clock)
    first = g.decide(MOBILE)
    assert (first.action, first.facts.source) == (Action.SMS, "local")
    assert "lookup:rate_limited" in first.reasons and clock.sleeps == []
    other = g.decide("+14155550103")
    assert "lookup:rate_limited" in other.reasons
    assert sum(sandbox.lookup_counts().values()) == 1  # the one 429; the pause asked nothing more
    clock.advance(61)
    assert g.decide("+14155550103").facts.source == "lookup"


def test_lookup_down_follows_on_lookup_error(sandbox_server: SandboxServer, sandbox: Sandbox, clock: FakeClock) -> None:
    """Lookup answering 500 throughout: notify routes on local facts, MFA refuses 20503."""
    sandbox.add_fault("error", route="lookup")
    g = gate(sandbox_server, clock)
    notify, mfa = g.decide(MOBILE), g.decide(MOBILE, purpose="mfa")
    assert (notify.action, notify.facts.source) == (Action.SMS, "local")
    assert (mfa.action, mfa.twilio_code) == (Action.REFUSE, 20503)


def test_send_retried_on_20429_never_after_a_drop(
    sandbox_server: SandboxServer, sandbox: Sandbox, clock: FakeClock
) -> None:
    """A 429 on Messages create is retried (Twilio did not act); a dropped connection is not (it may have)."""
    g = gate(sandbox_server, clock)
    sandbox.add_fault("too_many_requests", route="messages.create", times=1)
    assert g.notify(MOBILE, "hi", from_=FROM).action is Action.SMS
    assert len(sandbox.messages()) == 1
    sandbox.add_fault("drop", route="messages.create", times=1)
    with pytest.raises(SendUnavailable) as failed:
        g.notify(MOBILE, "hi", from_=FROM)
    assert failed.value.may_have_sent is True
    assert isinstance(failed.value, requests.RequestException)  # old `except requests...` clauses still match
    assert isinstance(failed.value.__cause__, requests.exceptions.ConnectionError)
    assert sandbox.request_count(route="messages.create") == 3
