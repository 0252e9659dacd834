"""A number decided again and again: consent screened on every decision, facts and routes from memory.

Every decision screens opt-outs and delivery failures, so a STOP, a failure or another process's
write applies to the very next send. The store is read for it each time, unless the store vouches
with a trusted suppression version that nothing suppressing was written since the number was found
clear. The Lookup answer is held in process until its fields age out or this process fetches the
number again, and a route made from it is kept as long as those very facts are held.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from support import FakeClock, FakeTwilio
from twilio.rest import Client

from gatekeeper import Action, GatedClient, Gatekeeper, GateRefused, Settings, Stores, router
from gatekeeper.lookup import LookupConfig, LookupService
from gatekeeper.phone import normalize
from gatekeeper.stores.memory import MemoryStore
from gatekeeper.stores.redis import RedisStore

MOBILE, LANDLINE = "+14155552671", "+14155552672"
FROM, OTHER_FROM = "+15005550006", "+15005550007"
WEEK = 7 * 86_400


class CountingStore(MemoryStore):
    """A memory store that counts the reads the decision path makes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reads: Counter[str] = Counter()

    def get_lookup(self, key: str) -> Any:
        self.reads["lookup"] += 1
        return super().get_lookup(key)

    def opted_out_scope(self, e164: str, scopes: Any) -> str | None:
        self.reads["opt_outs"] += 1
        return super().opted_out_scope(e164, scopes)

    def suppression(self, e164: str, *, now: float, window_seconds: float, threshold: int) -> str | None:
        self.reads["suppression"] += 1
        return super().suppression(e164, now=now, window_seconds=window_seconds, threshold=threshold)


def make_gate(client: Client, clock: FakeClock, store: MemoryStore | None = None, **settings: Any) -> Gatekeeper:
    return Gatekeeper(
        client,
        settings=Settings(**settings),
        clock=clock,
        sleep=clock.sleep,
        stores=Stores.using(store or CountingStore(clock=clock)),
    )


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_repeat_decisions_screen_consent_every_time_and_read_facts_from_memory(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """A store whose reads are its own (no version vouches for them) is read on every repeat; the Lookup cache
    is not; each decision is audited and counted."""
    store = CountingStore(clock=clock)
    g = make_gate(twilio_client, clock, store)
    first = g.decide(MOBILE)
    store.reads.clear()
    hits = counted("gatekeeper_lookup_cache_total", result="hit")
    decided = counted("gatekeeper_decisions_total", purpose="notify", action="sms", code="")
    repeats = [g.decide(MOBILE) for _ in range(5)]

    assert first.facts is not None and first.facts.source == "lookup"
    assert all(d == repeats[0] and d.facts is not None and d.facts.source == "cache" for d in repeats)
    assert store.reads == Counter({"opt_outs": 5, "suppression": 5})
    assert twilio_http.lookups[MOBILE] == 1
    audit = g.stores.audit.recent(100)
    assert len(audit) == 6
    latest = audit[0]
    assert (latest["cache_hit"], latest["to"], latest["action"]) == (True, "+1415555****", "sms")
    timings = latest["timings_us"]
    assert timings["total"] >= timings["normalize"] + timings["suppress"] + timings["enrich"] - 1
    # The first repeat reads the facts held in memory (a hit); the rest reuse the route made from them.
    assert counted("gatekeeper_lookup_cache_total", result="hit") == hits + 1
    assert counted("gatekeeper_decisions_total", purpose="notify", action="sms", code="") == decided + 5


class VersionedStore(CountingStore):
    """Counts reads, and vouches for them with the memory store's own suppression version."""

    suppression_version = MemoryStore.suppression_version


def test_a_trusted_version_spares_the_screen_until_something_is_written(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """While the version stands, a number found clear is not read again; any suppressing write reads it once more."""
    store = VersionedStore(clock=clock)
    g = make_gate(twilio_client, clock, store)
    for _ in range(3):  # fetched; read from memory, the route kept; found clear under the kept route
        g.decide(MOBILE)
    store.reads.clear()
    assert [g.decide(MOBILE).action for _ in range(3)] == [Action.SMS] * 3
    assert store.reads == Counter()
    g.opt_out(LANDLINE)  # another number: the version moves, so MOBILE is screened once more
    assert [g.decide(MOBILE).action for _ in range(3)] == [Action.SMS] * 3
    assert store.reads == Counter({"opt_outs": 1, "suppression": 1})
    g.opt_out(MOBILE)
    assert g.decide(MOBILE).twilio_code == 21610


def test_opt_out_applies_to_the_next_send(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """STOP after many sends refuses the very next one, through the drop-in as through decide; START lifts it."""
    g = make_gate(twilio_client, clock)
    client = GatedClient(twilio_client, g)
    for _ in range(3):
        client.messages.create(to=MOBILE, from_=FROM, body="hi")

    g.opt_out(MOBILE)
    with pytest.raises(GateRefused) as refused:
        client.messages.create(to=MOBILE, from_=FROM, body="hi")
    assert (refused.value.code, refused.value.decision.reasons) == (21610, ("opted_out:account",))
    assert g.decide(MOBILE).twilio_code == 21610
    assert len(twilio_http.sent) == 3

    g.opt_in(MOBILE)
    assert client.messages.create(to=MOBILE, from_=FROM, body="hi").sid
    assert g.decide(MOBILE).action is Action.SMS
    assert twilio_http.lookups[MOBILE] == 1


def test_sender_scoped_opt_out_refuses_only_that_sender(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """With opt_out_scope = sender, STOP to one sender refuses that sender only, however often both sent before."""
    g = make_gate(twilio_client, clock, webhooks={"opt_out_scope": "sender"})
    for sender in (FROM, OTHER_FROM, FROM, OTHER_FROM):
        assert g.decide(MOBILE, sender=sender).action is Action.SMS
    g.opt_out(MOBILE, sender=FROM)
    assert g.decide(MOBILE, sender=FROM).twilio_code == 21610
    assert g.decide(MOBILE, sender=OTHER_FROM).action is Action.SMS


def test_delivery_failures_apply_to_the_next_decision(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """The failure that crosses the threshold refuses the next decision; lifting the suppression allows it again."""
    g = make_gate(twilio_client, clock)
    g.decide(MOBILE), g.decide(MOBILE)
    for i in range(2):
        g.stores.failures.record_failure(MOBILE, f"SM{i}:undelivered", at=clock(), window_seconds=WEEK)
        assert g.decide(MOBILE).action is Action.SMS
    g.stores.failures.record_failure(MOBILE, "SM2:undelivered", at=clock(), window_seconds=WEEK)
    d = g.decide(MOBILE)
    assert (d.action, d.twilio_code, d.reasons) == (Action.REFUSE, 21610, ("failures:3",))
    g.stores.failures.suppress(MOBILE, ttl_seconds=60, reason="manual", at=clock())
    assert g.decide(MOBILE).reasons == ("suppressed:manual",)
    g.stores.failures.lift_suppression(MOBILE)
    assert g.decide(MOBILE).action is Action.SMS


def test_facts_are_held_until_they_age_out(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Facts held in process live as long as in the cache: the Lookup TTL for notify, 24 h for MFA."""
    g = make_gate(twilio_client, clock)
    for purpose in ("notify", "mfa"):
        g.decide(MOBILE, purpose=purpose), g.decide(MOBILE, purpose=purpose)
    assert twilio_http.lookups[MOBILE] == 1

    clock.advance(86_400 + 1)
    assert g.decide(MOBILE).facts.source == "cache"  # type: ignore[union-attr]
    assert g.decide(MOBILE, purpose="mfa").facts.source == "lookup"  # type: ignore[union-attr]
    assert twilio_http.lookups[MOBILE] == 2

    twilio_http.line_types[MOBILE] = "landline"  # the number was ported to a landline
    clock.advance(WEEK)
    d = g.decide(MOBILE)
    assert (d.action, d.reasons, d.facts.source) == (  # type: ignore[union-attr]
        Action.VOICE,
        ("line_type:landline", "fallback:voice"),
        "lookup",
    )


def test_facts_refetched_for_one_purpose_serve_the_other(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """MFA's 24 h re-check finds the number ported to a landline: notify routes by those facts at once."""
    g = make_gate(twilio_client, clock)
    for purpose in ("notify", "mfa", "notify", "mfa"):
        g.decide(MOBILE, purpose=purpose)
    twilio_http.line_types[MOBILE] = "landline"
    clock.advance(86_400 + 1)
    assert g.decide(MOBILE, purpose="mfa").action is Action.VERIFY_CALL
    d = g.decide(MOBILE)
    assert (d.action, d.facts.line_type) == (Action.VOICE, "landline")  # type: ignore[union-attr]
    assert g.decide(MOBILE).action is Action.VOICE
    assert twilio_http.lookups[MOBILE] == 2


def test_a_decision_from_facts_replaced_meanwhile_is_not_repeated(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread that routed from old facts and lost the CPU while they were refreshed leaves no trace of them."""
    g = make_gate(twilio_client, clock)
    g.decide(MOBILE), g.decide(MOBILE)
    clock.advance(WEEK - 1)  # a second before the facts age out
    routed, resume = threading.Event(), threading.Event()
    route = router.route

    def route_then_pause(*args: Any, **kwargs: Any) -> Any:
        decision = route(*args, **kwargs)
        if threading.current_thread().name == "slow":
            routed.set()
            resume.wait(5)
        return decision

    monkeypatch.setattr(router, "route", route_then_pause)
    slow: list[Action] = []
    thread = threading.Thread(target=lambda: slow.append(g.decide("(415) 555-2671", country="US").action), name="slow")
    thread.start()
    assert routed.wait(5)
    twilio_http.line_types[MOBILE] = "landline"
    clock.advance(2)
    assert [g.decide(MOBILE).action for _ in range(2)] == [Action.VOICE] * 2  # re-fetched, then from the cache
    resume.set()
    thread.join(5)
    assert slow == [Action.SMS]  # decided from the facts it had
    assert [g.decide("(415) 555-2671", country="US").action for _ in range(3)] == [Action.VOICE] * 3


def test_facts_read_before_a_fill_are_not_kept_after_it(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """A cache read that a fill overtakes is not held in memory over the fill: the next decision sees the fill."""

    class OvertakenStore(MemoryStore):
        overtake = False

        def get_lookup(self, key: str) -> Any:
            entry = super().get_lookup(key)
            if self.overtake:  # between this read and its use, another thread re-checks the ported number
                self.overtake = False
                twilio_http.line_types[MOBILE] = "landline"
                assert g.decide(MOBILE, purpose="mfa").facts.line_type == "landline"  # type: ignore[union-attr]
            return entry

    store = OvertakenStore(clock=clock)
    make_gate(twilio_client, clock, store).decide(MOBILE, purpose="mfa")  # another process fills the shared cache
    g = make_gate(twilio_client, clock, store)
    clock.advance(86_400 + 1)  # MFA's 24 h re-check is due; notify's 7 days are not
    store.overtake = True
    assert g.decide(MOBILE).facts.line_type == "mobile"  # type: ignore[union-attr]  # read before the fill
    assert g.decide(MOBILE).action is Action.VOICE  # the fill's facts, not the overtaken read's
    assert twilio_http.lookups[MOBILE] == 2


def test_a_new_policy_applies_at_once(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Replacing a purpose's policy applies to the next decision of a number decided before."""
    g = make_gate(twilio_client, clock)
    g.decide(MOBILE), g.decide(MOBILE)
    g.policies["notify"] = replace(g.policies["notify"], deny_line_types=frozenset({"mobile"}))
    d = g.decide(MOBILE)
    assert (d.action, d.twilio_code, d.reasons) == (Action.REFUSE, 21614, ("line_type:denied:mobile",))


def test_each_way_of_asking_is_its_own_route(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """The drop-in's strict SMS, the routing API's fallback and a voice request for one landline stay distinct."""
    g = make_gate(twilio_client, clock)
    client = GatedClient(twilio_client, g)
    for _ in range(2):
        assert g.decide(LANDLINE).action is Action.VOICE
        with pytest.raises(GateRefused) as refused:
            client.messages.create(to=LANDLINE, from_=FROM, body="hi")
        assert refused.value.code == 21614
        assert g.decide(LANDLINE, channel="voice").reasons == ()
        assert g.decide(LANDLINE, purpose="mfa").action is Action.VERIFY_CALL


def test_swapped_suppression_store_is_read(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Swapping the opt-out store for another one is noticed: its opt-outs apply to numbers decided before."""
    g = make_gate(twilio_client, clock)
    g.decide(MOBILE), g.decide(MOBILE)
    other = MemoryStore(clock=clock)
    other.opt_out(MOBILE, source="import", at=clock())
    g.stores.opt_outs = other
    assert g.decide(MOBILE).twilio_code == 21610


def test_opt_out_written_by_another_process_through_redis(
    twilio_http: FakeTwilio,
    twilio_client: Client,
    clock: FakeClock,
    redis_url: str,
    redis_store: RedisStore,
    redis_prefix: str,
) -> None:
    """Opt-outs another process wrote apply to the next decision: Redis pushes the write to this store's watch."""
    g = Gatekeeper(twilio_client, clock=clock, sleep=clock.sleep, stores=Stores.using(redis_store))
    g.decide(MOBILE), g.decide(MOBILE)
    elsewhere = RedisStore.from_url(redis_url, prefix=redis_prefix)  # as another host's webhook would
    try:
        elsewhere.opt_out(MOBILE, source="sms:STOP", at=clock())
        assert g.decide(MOBILE).twilio_code == 21610
        elsewhere.opt_in(MOBILE, source="sms:START", at=clock())
        assert g.decide(MOBILE).action is Action.SMS
    finally:
        elsewhere.close()
    assert twilio_http.lookups[MOBILE] == 1


def test_facts_memo_is_bounded(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """The in-process memo holds at most its configured count of answers; an evicted one is read from the store."""
    store = CountingStore(clock=clock)
    service = LookupService(twilio_client, store, LookupConfig(memo_entries=5), clock=clock, sleep=clock.sleep)
    phones = [normalize(f"+1415555{n:04d}") for n in range(2671, 2691)]
    fields = ("line_type_intelligence",)
    for phone in phones:
        assert phone.e164 is not None
        twilio_http.line_types[phone.e164] = "mobile"
        service.facts(phone, fields)
    store.reads.clear()
    for phone in phones[-5:]:
        assert service.facts(phone, fields).source == "cache"
    assert store.reads["lookup"] == 0
    assert service.facts(phones[0], fields).source == "cache"  # evicted from memory, still in the store
    assert store.reads["lookup"] == 1
    assert sum(twilio_http.lookups.values()) == 20


@pytest.mark.parametrize("number", [None, 4155552671, ["+14155552671"], b"+14155552671"])
def test_input_that_is_not_a_string_is_refused_not_crashed(
    twilio_client: Client, clock: FakeClock, number: Any
) -> None:
    """Whatever the caller passes as the number, the answer is a refusal with 21211, never a crash."""
    d = make_gate(twilio_client, clock).decide(number)
    assert (d.action, d.twilio_code) == (Action.REFUSE, 21211)


def test_a_sender_that_is_no_string_is_decided_all_the_same(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """A list where a sender belongs changes nothing under account-wide opt-outs: decided, every time."""
    g = make_gate(twilio_client, clock)
    for _ in range(3):
        assert g.decide(MOBILE, sender=[FROM]).action is Action.SMS  # type: ignore[arg-type]


@pytest.mark.parametrize("country", [["US"], 1, b"US"])
def test_a_country_that_is_not_a_string_is_a_type_error(twilio_client: Client, clock: FakeClock, country: Any) -> None:
    """A country hint must be an ISO 3166 alpha-2 string; anything else is a TypeError saying so."""
    with pytest.raises(TypeError, match="country"):
        make_gate(twilio_client, clock).decide("(415) 555-2671", country=country)
