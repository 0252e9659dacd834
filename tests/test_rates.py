"""Budgets on the live path and Lookup's breaker: shared through the store, counted by the sandbox, on a fake clock."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from support import FakeClock

from gatekeeper import Action, Gatekeeper, GatekeeperError, RateLimited, Settings, Stores
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.memory import MemoryStore

FROM = "+15005550006"


def numbers(n: int, start: int = 200) -> list[str]:
    """``n`` valid numbers the sandbox answers as mobiles (so a notify is an SMS), from ``+1415555<start>`` on."""
    from gatekeeper.sandbox.numbers import NumberBook

    book, found, i = NumberBook(), [], start
    while len(found) < n:
        number = f"+1415555{i:04d}"
        if book.profile(number).line_type == "mobile":
            found.append(number)
        i += 1
    return found


def gate(server: SandboxServer, clock: FakeClock, store: MemoryStore | None = None, **settings: Any) -> Gatekeeper:
    return Gatekeeper(
        server.client(),
        settings=Settings(**settings),
        clock=clock,
        sleep=clock.sleep,
        stores=Stores.using(store or MemoryStore(clock=clock)),
    )


# -- sends -----------------------------------------------------------------------------------------------
def test_sends_wait_for_their_permit_and_past_max_wait_raise_rate_limited(
    sandbox_server: SandboxServer, sandbox: Sandbox, clock: FakeClock
) -> None:
    """messages_per_second = 2 (a burst of 2): two sends go at once, the next waits half a second, and one that
    would wait past max_wait_ms raises RateLimited without reaching Twilio (and spends no permit)."""
    g = gate(sandbox_server, clock, rates={"messages_per_second": 2, "max_wait_ms": 600})
    for number in numbers(3):
        assert g.notify(number, "hi", from_=FROM).action is Action.SMS
    assert clock.sleeps == [pytest.approx(0.5)]  # the third waited its turn
    strict = gate(sandbox_server, clock, rates={"messages_per_second": 2, "max_wait_ms": 400})
    first, second, third = numbers(3, start=300)
    assert strict.notify(first, "hi", from_=FROM).sid and strict.notify(second, "hi", from_=FROM).sid
    with pytest.raises(RateLimited) as limited:
        strict.notify(third, "hi", from_=FROM)
    assert limited.value.api == "messages" and limited.value.retry_after_seconds == pytest.approx(0.5)
    assert isinstance(limited.value, GatekeeperError)  # exported from gatekeeper, as every error the gate raises
    assert len(sandbox.messages()) == 5
    clock.advance(0.5)  # the refused send spent no permit: the next one is due now
    assert strict.notify(third, "hi", from_=FROM).sid and clock.sleeps == [pytest.approx(0.5)]


def test_processes_sharing_a_store_share_the_budget(
    sandbox_server: SandboxServer, sandbox: Sandbox, clock: FakeClock
) -> None:
    """Two gates on one store (as two processes on one SQLite file or Redis): one bucket between them."""
    store = MemoryStore(clock=clock)
    settings = {"rates": {"messages_per_second": 1, "max_wait_ms": 0, "burst_seconds": 1}}
    first, second = gate(sandbox_server, clock, store, **settings), gate(sandbox_server, clock, store, **settings)
    assert first.notify(numbers(1)[0], "hi", from_=FROM).sid
    with pytest.raises(RateLimited):
        second.notify(numbers(1, start=400)[0], "hi", from_=FROM)


def test_a_429_on_a_send_pauses_the_bucket_for_its_retry_after(
    sandbox_server: SandboxServer, sandbox: Sandbox, clock: FakeClock
) -> None:
    """Twilio answers 429 with Retry-After: 30 (past max_wait): the send raises RateLimited at once instead of
    retrying after a fraction of a second, and the next send waits for the pause too (nothing reaches Twilio)."""
    sandbox.add_fault("too_many_requests", route="messages.create", times=1, retry_after_seconds=30)
    g = gate(sandbox_server, clock)
    with pytest.raises(RateLimited) as limited:
        g.notify(numbers(1)[0], "hi", from_=FROM)
    assert limited.value.retry_after_seconds == 30 and clock.sleeps == []
    with pytest.raises(RateLimited):
        g.notify(numbers(1, start=500)[0], "hi", from_=FROM)
    assert sandbox.request_count("messages.create") == 1
    clock.advance(31)
    assert g.notify(numbers(1, start=500)[0], "hi", from_=FROM).action is Action.SMS


def test_a_short_retry_after_is_waited_and_the_send_goes(
    sandbox_server: SandboxServer, sandbox: Sandbox, clock: FakeClock
) -> None:
    sandbox.add_fault("too_many_requests", route="messages.create", times=1, retry_after_seconds=1)
    g = gate(sandbox_server, clock)
    assert g.notify(numbers(1)[0], "hi", from_=FROM).action is Action.SMS
    assert clock.sleeps == [1.0]


# -- Lookups -------------------------------------------------------------------------------------------
def test_lookups_take_permits_and_past_max_wait_follow_on_lookup_error(
    sandbox_server: SandboxServer, sandbox: Sandbox, clock: FakeClock
) -> None:
    g = gate(sandbox_server, clock, rates={"lookups_per_second": 1, "max_wait_ms": 0})
    first, second = (g.decide(n) for n in numbers(2))
    assert first.facts is not None and first.facts.source == "lookup"
    assert second.facts is not None and second.facts.source == "local"
    assert "lookup:rate_limited" in second.reasons
    mfa = g.decide(numbers(1, start=600)[0], purpose="mfa")
    assert (mfa.action, mfa.twilio_code) == (Action.REFUSE, 20503)
    assert sum(sandbox.lookup_counts().values()) == 1


def test_at_most_max_concurrent_lookups_are_in_flight(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """Twelve threads, twelve new numbers, max_concurrent = 3: the sandbox never holds more than three at once."""
    g = Gatekeeper(sandbox_server.client(), settings=Settings(lookup={"max_concurrent": 3}), stores=Stores.memory())
    sandbox.add_fault("latency", route="lookup", latency_seconds=0.1)
    in_flight, peak, lock = 0, 0, threading.Lock()
    original = g.lookup._attempts

    def counted(*args: Any) -> Any:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            return original(*args)
        finally:
            with lock:
                in_flight -= 1

    g.lookup._attempts = counted  # type: ignore[method-assign]
    threads = [threading.Thread(target=g.decide, args=(n,)) for n in numbers(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert peak == 3
    assert sum(sandbox.lookup_counts().values()) == 12


def test_the_breaker_opens_after_failures_probes_once_per_interval_and_closes(
    sandbox_server: SandboxServer, sandbox: Sandbox, clock: FakeClock
) -> None:
    """Lookup answering 500: after breaker_failures failed Lookups the breaker opens, and new numbers cost no
    Lookup (lookup:breaker_open) for the interval; then one probe goes (still failing: open again), and once
    Lookup answers, the next probe closes it. A second gate on the same store sees the breaker open."""
    store = MemoryStore(clock=clock)
    settings = {"lookup": {"max_retries": 0, "breaker_failures": 3, "breaker_interval_seconds": 10}}
    g, other = gate(sandbox_server, clock, store, **settings), gate(sandbox_server, clock, store, **settings)
    sandbox.add_fault("error", route="lookup")
    for n in numbers(3):
        assert "lookup:unavailable:http_500" in g.decide(n).reasons
    assert sum(sandbox.lookup_counts().values()) == 3
    for n in numbers(5, start=300):
        assert "lookup:breaker_open" in g.decide(n).reasons
        assert "lookup:breaker_open" in other.decide(n).reasons
    assert sum(sandbox.lookup_counts().values()) == 3  # open: not one attempt more, in either gate

    clock.advance(11)
    probes = [g.decide(n).reasons for n in numbers(3, start=400)]
    assert sum(sandbox.lookup_counts().values()) == 4  # one probe, and it failed: open again
    assert "lookup:unavailable:http_500" in probes[0] and all("lookup:breaker_open" in r for r in probes[1:])

    sandbox.clear_faults()
    clock.advance(11)
    assert g.decide(numbers(1, start=500)[0]).facts.source == "lookup"  # the probe succeeds: closed
    assert [other.decide(n).facts.source for n in numbers(3, start=600)] == ["lookup"] * 3
