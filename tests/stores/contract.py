"""One contract every store backend passes (the cachelib pattern): subclass; give ``store``, ``pass_time``, ``now``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support import FakeClock, FakeTwilio, run_threads
from twilio.rest import Client

from gatekeeper import Action, GatedClient, Gatekeeper, GateRefused, Settings, Stores
from gatekeeper.errors import InvalidArgument
from gatekeeper.models import PhoneFacts
from gatekeeper.stores.base import (
    ACCOUNT_SCOPE,
    SCREENING_VERBS,
    AuditEntry,
    AuditLog,
    Budget,
    CachedLookup,
    Erasure,
    FailureStore,
    IdempotencyStore,
    Ledger,
    LookupCache,
    OptOutStore,
    RateLimiter,
    SecretKeeper,
    StatusEvents,
    StatusStore,
    SuppressionVersion,
    WindowBatch,
    Windows,
    WindowTally,
    lookup_key,
    version_reader,
)

E164 = "+14155552671"
T0 = 1_800_000_000.0
FROM = "+15005550006"
#: Sends to one number before a store is written to: enough for the gate to keep a route and find it clear under it.
REPEATS = 4


def entry(line_type: str = "mobile", negative: bool = False) -> CachedLookup:
    facts = PhoneFacts(
        e164=E164,
        country_code="US",
        line_type=line_type,
        source="lookup",
        fetched_at=T0,
        valid=True,
        fields=("line_type_intelligence",),
    )
    payload = {"phone_number": E164, "valid": True, "line_type_intelligence": {"type": line_type}}
    return CachedLookup(
        facts=facts, payload=payload, field_times={"line_type_intelligence": T0}, fetched_at=T0, negative=negative
    )


def audit_entry(at: float, to_hash: str = "h") -> AuditEntry:
    return AuditEntry(
        at=at,
        purpose="notify",
        to="+1415555****",
        to_hash=to_hash,
        action="sms",
        channel=None,
        reasons=("r",),
        twilio_code=None,
        enforced=True,
        cache_hit=False,
        facts=None,
        clock_marks=(10.0, 10.000001, 10.000003, 10.000006, 10.000006),
    )


class StoreContract:
    """Behaviour every backend shares: MemoryStore, RedisStore and custom stores alike.

    A subclass gives ``store``, ``pass_time`` and ``now``, and may give ``stored_text``: a callable returning
    everything the store holds, as text, for the tests that check what it keeps (None: those tests skip).
    """

    store: Any
    pass_time: Callable[[float], None]

    @pytest.fixture
    def stored_text(self) -> Callable[[], str] | None:
        return None

    def test_implements_every_protocol(self, store: Any) -> None:
        """The backend satisfies each runtime-checkable store Protocol."""
        for proto in (LookupCache, OptOutStore, FailureStore, IdempotencyStore, StatusStore, RateLimiter, AuditLog):
            assert isinstance(store, proto), proto.__name__

    # -- lookup cache ---------------------------------------------------------------
    def test_lookup_round_trip(self, store: Any) -> None:
        """A cached Lookup answer comes back equal, facts and field times included."""
        key = lookup_key(E164, "abc", "US")
        assert store.get_lookup(key) is None
        store.put_lookup(key, entry(), ttl_seconds=60)
        got = store.get_lookup(key)
        assert got == entry()
        assert got.facts.line_type == "mobile"
        assert got.field_times["line_type_intelligence"] == T0

    def test_lookup_expires(self, store: Any, pass_time: Callable[[float], None]) -> None:
        """An entry is gone once its TTL has passed."""
        key = lookup_key(E164, "abc", "US")
        store.put_lookup(key, entry(), ttl_seconds=0.05)
        pass_time(0.12)
        assert store.get_lookup(key) is None

    def test_fill_lock_is_exclusive(self, store: Any) -> None:
        """While one caller holds a key's fill lock, another cannot take it; after release it can."""
        key = lookup_key(E164, "abc", "US")
        with store.fill_lock(key, ttl_seconds=5, wait_seconds=1) as first:
            assert first is True
            results = run_threads(1, lambda _: store.fill_lock(key, ttl_seconds=5, wait_seconds=0.05).__enter__())
            assert results == [False]
        with store.fill_lock(key, ttl_seconds=5, wait_seconds=0.05) as again:
            assert again is True

    # -- opt-outs -------------------------------------------------------------------
    def test_opt_out_and_in_account_scope(self, store: Any) -> None:
        """An account-wide opt-out blocks every sender; opting in lifts it; changes report True once."""
        assert store.opt_out(E164, source="sms:STOP", at=T0) is True
        assert store.opt_out(E164, source="sms:STOP", at=T0 + 1) is False
        assert store.opted_out_scope(E164, [ACCOUNT_SCOPE, "+15005550006"]) == ACCOUNT_SCOPE
        assert store.opt_in(E164, source="sms:START", at=T0 + 2) is True
        assert store.opted_out_scope(E164, [ACCOUNT_SCOPE]) is None
        assert store.opt_in(E164, source="sms:START", at=T0 + 3) is False

    def test_sender_scope_opt_in_lifts_only_itself(self, store: Any) -> None:
        """A sender-scoped opt-in leaves other senders' opt-outs; the account scope lifts them all."""
        store.opt_out(E164, "+15005550006", source="sms:STOP", at=T0)
        store.opt_out(E164, "MG" + "1" * 32, source="sms:STOP", at=T0)
        assert store.opted_out_scope(E164, [ACCOUNT_SCOPE, "+15005550006"]) == "+15005550006"
        assert store.opted_out_scope(E164, [ACCOUNT_SCOPE, "+15005550007"]) is None
        store.opt_in(E164, "+15005550006", source="sms:START", at=T0 + 1)
        assert store.opted_out_scope(E164, [ACCOUNT_SCOPE, "+15005550006"]) is None
        assert store.opted_out_scope(E164, ["MG" + "1" * 32]) == "MG" + "1" * 32
        store.opt_in(E164, source="api", at=T0 + 2)
        assert store.opted_out_scope(E164, ["MG" + "1" * 32]) is None

    def test_consent_history_newest_first(self, store: Any) -> None:
        """Every consent change is kept with its time and source, newest first."""
        store.opt_out(E164, source="sms:STOP", at=T0)
        store.opt_in(E164, source="sms:START", at=T0 + 5)
        history = store.consent_history(E164)
        assert [(h.opted_out, h.source, h.at) for h in history] == [
            (False, "sms:START", T0 + 5),
            (True, "sms:STOP", T0),
        ]
        assert store.consent_history("+14155550000") == []

    # -- failures -------------------------------------------------------------------
    def test_failures_count_once_per_event_inside_window(self, store: Any) -> None:
        """A repeated event counts once; events older than the window drop out."""
        assert store.record_failure(E164, "SM1:undelivered", at=T0, window_seconds=100) == 1
        assert store.record_failure(E164, "SM1:undelivered", at=T0 + 1, window_seconds=100) == 1
        assert store.record_failure(E164, "SM2:undelivered", at=T0 + 2, window_seconds=100) == 2
        assert store.record_failure(E164, "SM3:failed", at=T0 + 150, window_seconds=100) == 1

    def test_suppression_by_threshold_marker_and_lift(self, store: Any) -> None:
        """The threshold of failures suppresses; an explicit marker does too; lifting clears both."""
        for i in range(3):
            store.record_failure(E164, f"SM{i}:failed", at=T0 + i, window_seconds=1000)
        assert store.suppression(E164, now=T0 + 3, window_seconds=1000, threshold=3) == "failures:3"
        assert store.suppression(E164, now=T0 + 3, window_seconds=1000, threshold=4) is None
        assert store.suppression(E164, now=T0 + 2000, window_seconds=1000, threshold=3) is None
        store.suppress(E164, ttl_seconds=60, reason="failures", at=T0)
        assert store.suppression(E164, now=T0, window_seconds=1000, threshold=99) == "suppressed:failures"
        assert store.lift_suppression(E164) is True
        assert store.suppression(E164, now=T0 + 3, window_seconds=1000, threshold=1) is None
        assert store.lift_suppression(E164) is False

    def test_suppression_marker_expires(
        self, store: Any, pass_time: Callable[[float], None], now: Callable[[], float]
    ) -> None:
        """A suppression lasts its TTL and no longer."""
        store.suppress(E164, ttl_seconds=0.25, reason="failures", at=now())  # well above a slow run's call time
        assert store.suppression(E164, now=now(), window_seconds=1000, threshold=99) == "suppressed:failures"
        pass_time(0.35)
        assert store.suppression(E164, now=now(), window_seconds=1000, threshold=99) is None

    # -- idempotency ----------------------------------------------------------------
    def test_claim_lifecycle(self, store: Any) -> None:
        """First claim wins; others see pending, then done with the result; only the owner settles."""
        first = store.claim("k1", "fp", ttl_seconds=60)
        assert first.won and first.token
        second = store.claim("k1", "fp2", ttl_seconds=60)
        assert (second.won, second.state, second.fingerprint) == (False, "pending", "fp")
        store.complete("k1", "not-the-token", b"forged", ttl_seconds=60)
        assert store.claim("k1", "fp", ttl_seconds=60).state == "pending"
        store.complete("k1", first.token, b'{"ok": 1}', ttl_seconds=60)
        done = store.claim("k1", "fp", ttl_seconds=60)
        assert (done.won, done.state, done.result, done.fingerprint) == (False, "done", b'{"ok": 1}', "fp")

    def test_abandon_frees_and_unknown_sticks(self, store: Any) -> None:
        """An abandoned claim can be won again; one marked unknown reports so."""
        a = store.claim("k2", "fp", ttl_seconds=60)
        store.abandon("k2", a.token)
        b = store.claim("k2", "fp", ttl_seconds=60)
        assert b.won
        store.mark_unknown("k2", b.token, ttl_seconds=60)
        c = store.claim("k2", "fp", ttl_seconds=60)
        assert (c.won, c.state) == (False, "unknown")

    def test_pending_claim_lease_expires(self, store: Any, pass_time: Callable[[float], None]) -> None:
        """A pending claim is a lease: when it lapses the key can be claimed again."""
        store.claim("k3", "fp", ttl_seconds=0.05)
        pass_time(0.12)
        assert store.claim("k3", "fp", ttl_seconds=60).won

    def test_concurrent_claims_have_one_winner(self, store: Any) -> None:
        """Twenty threads claiming one key at once: exactly one wins."""
        results = run_threads(20, lambda _: store.claim("k4", "fp", ttl_seconds=60))
        assert sum(1 for r in results if r.won) == 1

    # -- statuses -------------------------------------------------------------------
    def test_a_status_event_is_taken_once_and_moves_the_status_as_apply_status(self, store: Any) -> None:
        """A store that takes status callbacks whole: a new event applies as apply_status would; the same event
        again writes nothing (a duplicate); another event of a lower rank is new but not applied."""
        if not isinstance(store, StatusEvents):
            pytest.skip("this store has no one-step status events (the gate claims each event first)")
        sid, write = "SM" + "e" * 32, {"error_code": None, "ttl_seconds": 60}
        assert store.apply_status_event("ev1", sid, "delivered", 5, at=T0, to_hash="h", **write) == (True, True)
        assert store.apply_status_event("ev1", sid, "delivered", 5, at=T0 + 1, **write) == (False, False)
        assert store.apply_status_event("ev2", sid, "sent", 3, at=T0 + 2, **write) == (True, False)
        record = store.status_of(sid)
        assert (record.status, record.updated_at, record.to_hash) == ("delivered", T0, "h")
        assert store.apply_status(sid, "undelivered", 6, error_code=30003, at=T0 + 3, ttl_seconds=60) is True
        assert store.apply_status_event("ev1", sid, "delivered", 5, at=T0 + 4, **write) == (False, False)
        assert store.status_of(sid).status == "undelivered"

    def test_status_never_moves_backwards(self, store: Any) -> None:
        """A lower-ranked status does not overwrite a higher one; equal rank is a no-op."""
        sid = "SM" + "a" * 32
        assert store.status_of(sid) is None
        assert store.apply_status(sid, "sent", 3, error_code=None, at=T0, ttl_seconds=60) is True
        assert store.apply_status(sid, "delivered", 5, error_code=None, at=T0 + 1, ttl_seconds=60) is True
        assert store.apply_status(sid, "sent", 3, error_code=None, at=T0 + 2, ttl_seconds=60) is False
        assert store.apply_status(sid, "delivered", 5, error_code=None, at=T0 + 3, ttl_seconds=60) is False
        record = store.status_of(sid)
        assert (record.status, record.error_code, record.updated_at) == ("delivered", None, T0 + 1)
        store.apply_status(sid, "undelivered", 6, error_code=30003, at=T0 + 4, to_hash="h", ttl_seconds=60)
        record = store.status_of(sid)
        assert (record.status, record.error_code, record.to_hash) == ("undelivered", 30003, "h")

    # -- rate limits ----------------------------------------------------------------
    def test_rate_limiter_allows_burst_then_spaces(self, store: Any, now: Callable[[], float]) -> None:
        """A burst of permits is free; each further permit waits one more interval, less the time that has passed
        since the first permit: bounded by when each call was made and answered (a store that reads its own clock
        reads it somewhere in between; a cluster client's first call also finds its nodes)."""
        asked, answered, waits = [], [], []
        for _ in range(6):
            asked.append(now())
            waits.append(store.reserve("lookups", rate_per_second=10, burst=3, now=asked[-1]))
            answered.append(now())
        assert waits[:3] == [0.0, 0.0, 0.0]
        for i, w in enumerate(waits[3:], start=1):
            k = i + 2
            latest, earliest = 0.1 * i - (asked[k] - answered[0]), 0.1 * i - (answered[k] - asked[0])
            assert earliest - 0.01 <= w <= latest + 0.01, (i, w, earliest, latest)

    def test_a_budget_takes_only_what_is_due_in_time_and_honours_pauses(
        self, store: Any, now: Callable[[], float]
    ) -> None:
        """take() spends a permit only when it is due within max_wait (a refused take spends nothing); a pause holds
        every permit back until it ends, then they come at the rate with no burst; a pause of 0 lifts it."""
        if not isinstance(store, Budget):
            pytest.skip("this store has no shared budget (the gate keeps pauses in its process)")
        # One permit a second: the calls' own time (a cluster client's first call also finds its nodes, 50-95 ms on a
        # slow run) stays far below an interval, and is bounded where a store reads its own clock (Redis).
        t = now()
        assert [store.take("b", rate_per_second=1, burst=2, now=t, max_wait=0)[0] for _ in range(3)] == [
            True,
            True,
            False,
        ]
        taken, wait = store.take("b", rate_per_second=1, burst=2, now=t, max_wait=2)
        elapsed = now() - t
        assert taken and 1 - elapsed - 0.01 <= wait <= 1 + 0.01, (wait, elapsed)  # the refused take spent nothing
        store.pause("b", until=t + 5)
        assert store.paused_until("b") == pytest.approx(t + 5, abs=0.05)
        assert store.take("b", rate_per_second=1, burst=2, now=t, max_wait=1)[:1] == (False,)
        first = store.take("b", rate_per_second=1, burst=2, now=t, max_wait=10)
        second = store.take("b", rate_per_second=1, burst=2, now=t, max_wait=10)
        elapsed = now() - t
        assert 5 - elapsed - 0.01 <= first[1] <= 5 + 0.01, (first, second, elapsed)
        assert 1 - elapsed - 0.01 <= second[1] - first[1] <= 1 + 0.01, (first, second, elapsed)
        store.pause("b", until=0)
        assert store.paused_until("b") == 0.0
        assert store.paused_until("never-paused") == 0.0

    # -- windows ----------------------------------------------------------------------
    def test_a_window_counts_each_event_once_and_says_when_there_is_room(self, store: Any) -> None:
        """Events (refused ones too) count in the window ending at each one; an event id counts once; above the
        limit the answer says when a new event would fit; events older than the window are forgotten; windows
        under different keys are apart."""
        if not isinstance(store, Windows):
            pytest.skip("this store keeps no windows (the guard's velocity rules need one)")
        w = {"window_seconds": 60, "limit": 2}
        assert store.hit("k", "e1", at=T0, **w) == (1, None)
        assert store.hit("k", "e1", at=T0, **w) == (1, None)  # the same event again: once
        assert store.hit("k", "e2", at=T0 + 10, **w) == (2, None)
        count, free_at = store.hit("k", "e3", at=T0 + 20, **w)  # over: fits once e2 has left (e1 and e2 keep it out)
        assert (count, free_at) == (3, pytest.approx(T0 + 70))
        assert store.hit("other", "e1", at=T0 + 20, **w) == (1, None)
        assert store.hit("k", "e4", at=T0 + 65, **w) == (3, pytest.approx(T0 + 80))  # e1 gone; e2, e3, e4 left
        assert store.hit("k", "e5", at=T0 + 200, **w) == (1, None)  # all older than the window: forgotten
        with pytest.raises(InvalidArgument):
            store.hit("k", "e6", at=T0, window_seconds=0, limit=1)

    def test_several_windows_in_one_step_answer_as_one_at_a_time(self, store: Any) -> None:
        """hits() records one event in each window (keys of different slots on a cluster) and answers in order,
        as hit() would for each."""
        if not isinstance(store, WindowBatch):
            pytest.skip("this store counts windows one at a time")
        checks = [("a", 60.0, 1), ("b", 60.0, 2)]
        assert store.hits(checks, "e1", at=T0) == [(1, None), (1, None)]
        assert store.hits(checks, "e2", at=T0 + 1) == [(2, pytest.approx(T0 + 61)), (2, None)]
        assert store.hit("b", "e3", at=T0 + 2, window_seconds=60, limit=2) == (3, pytest.approx(T0 + 61))
        assert store.hits([], "e4", at=T0) == []

    def test_a_tally_counts_a_windows_events_in_a_range_without_recording_one(self, store: Any) -> None:
        """tally() answers, per (key, since, until), the events at times in (since, until], in order; it records
        nothing (a second tally answers the same); a key never hit counts 0."""
        if not isinstance(store, WindowTally):
            pytest.skip("this store cannot count a window without recording an event")
        for i, at in enumerate((T0, T0 + 10, T0 + 20)):
            store.hit("started", f"e{i}", at=at, window_seconds=3600, limit=100)
        store.hit("approved", "e0", at=T0 + 15, window_seconds=3600, limit=100)
        ranges = [("started", T0, T0 + 20), ("started", T0 - 1, T0 + 30), ("approved", T0, T0 + 30), ("none", 0, T0)]
        assert store.tally(ranges) == [2, 3, 1, 0]
        assert store.tally(ranges) == [2, 3, 1, 0]
        assert store.tally([]) == []

    # -- ledger -----------------------------------------------------------------------
    def test_a_ledger_adds_to_every_total_or_to_none(self, store: Any, pass_time: Callable[[float], None]) -> None:
        """Amounts add to every capped total while all stay within their caps; one that would pass any cap adds to
        none and names it; a total ends with its period (the TTL); refunds (negative amounts) always apply."""
        if not isinstance(store, Ledger):
            pytest.skip("this store keeps no ledger (spend caps need one)")
        day, country = ("day:2026-11-30:*", 1.0), ("day:2026-11-30:GB", 0.25)
        assert store.spend([day, country], 0.1, ttl_seconds=0.5) is None
        assert store.spend([day, country], 0.1, ttl_seconds=0.5) is None
        assert store.spend([day, country], 0.1, ttl_seconds=0.5) == "day:2026-11-30:GB"  # 0.3 > 0.25: nothing added
        assert store.spend([day, ("day:2026-11-30:US", 0.25)], 0.1, ttl_seconds=0.5) is None  # GB's refusal added none
        assert store.spend([day], 0.75, ttl_seconds=0.5) == "day:2026-11-30:*"  # 0.3 + 0.75 > 1.0
        assert store.spend([day, country], -0.1, ttl_seconds=0.5) is None  # a refund
        assert store.spend([country], 0.15, ttl_seconds=0.5) is None  # 0.1 + 0.15 within 0.25 again
        pass_time(0.6)  # Redis: real time, kept short
        assert store.spend([country], 0.25, ttl_seconds=0.5) is None  # the period ended: a new total

    # -- audit ----------------------------------------------------------------------
    def test_audit_newest_first(self, store: Any) -> None:
        """Audit records come back newest first, limited."""
        for i in range(5):
            store.record(audit_entry(T0 + i, "h"))
        recent = store.recent(3)
        assert [r["at"] for r in recent] == [T0 + 4, T0 + 3, T0 + 2]
        assert recent[0]["timings_us"] == {"normalize": 1.0, "suppress": 2.0, "enrich": 3.0, "total": 6.0}
        assert recent[0]["reasons"] == ["r"]
        assert store.recent(0) == []

    # -- secrets, pseudonyms, erasure ---------------------------------------------------
    def test_a_secret_is_made_once_and_kept(self, store: Any) -> None:
        """A store that keeps secrets makes each on first use (32 random bytes) and gives the same one after."""
        if not isinstance(store, SecretKeeper):
            pytest.skip("this store keeps no secrets (the gate falls back to its own key, per process)")
        audit = store.secret("audit")
        assert isinstance(audit, bytes) and len(audit) == 32
        assert store.secret("audit") == audit
        assert store.secret("consent") not in (audit, b"")

    def test_consent_history_names_the_number_asked(self, store: Any) -> None:
        """However a store keys consent, the history it returns speaks of the number it was asked about."""
        store.opt_out(E164, source="sms:STOP", at=T0)
        assert [c.e164 for c in store.consent_history(E164)] == [E164]

    def test_consent_and_failures_are_not_kept_under_the_number(self, store: Any, stored_text: Any) -> None:
        """Opt-outs, consent history, failures and suppressions are keyed by a keyed hash: what the store holds
        does not contain the number (only the Lookup cache, which sending needs, may)."""
        if stored_text is None:
            pytest.skip("no way to read this store's raw contents")
        store.opt_out(E164, "+15005550006", source="sms:STOP", at=T0)
        store.opt_in(E164, "+15005550006", source="sms:START", at=T0 + 1)
        store.opt_out(E164, source="sms:STOP", at=T0 + 2)
        store.record_failure(E164, "SM1:failed", at=T0, window_seconds=100)
        store.suppress(E164, ttl_seconds=100, reason="failures", at=T0)
        assert E164.lstrip("+") not in stored_text()

    def test_erase_forgets_a_number_but_keeps_it_uncontactable(self, store: Any) -> None:
        """erase: the number's Lookup answers, consent history, failures, suppression, statuses and audit records
        (by their hash) are gone; what stays is a do-not-contact tombstone, an account-wide opt-out."""
        if not isinstance(store, Erasure):
            pytest.skip("this store cannot erase")
        other = "+14155550000"
        key = lookup_key(E164, "abc", "US")
        store.put_lookup(key, entry(), ttl_seconds=60)
        store.opt_in(E164, source="sms:START", at=T0)
        store.record_failure(E164, "SM1:failed", at=T0, window_seconds=100)
        store.suppress(E164, ttl_seconds=100, reason="failures", at=T0)
        store.apply_status("SM" + "1" * 32, "delivered", 5, error_code=None, at=T0, to_hash="mine", ttl_seconds=60)
        store.apply_status("SM" + "2" * 32, "delivered", 5, error_code=None, at=T0, to_hash="theirs", ttl_seconds=60)
        store.record(audit_entry(T0, "mine"))
        store.record(audit_entry(T0 + 1, "theirs"))
        store.opt_out(other, source="sms:STOP", at=T0)

        store.erase(E164, to_hash="mine", at=T0 + 5)

        assert store.get_lookup(key) is None
        assert store.suppression(E164, now=T0 + 1, window_seconds=100, threshold=1) is None
        assert store.status_of("SM" + "1" * 32) is None
        assert store.status_of("SM" + "2" * 32) is not None
        assert [r["to_hash"] for r in store.recent(10)] == ["theirs"]
        assert store.opted_out_scope(E164, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE  # do not contact, ever
        assert [(c.opted_out, c.source) for c in store.consent_history(E164)] == [(True, "erased")]
        assert store.opted_out_scope(other, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE  # nobody else's records moved

    # -- suppression version ----------------------------------------------------------
    def test_suppression_version_if_any(self, store: Any, now: Callable[[], float]) -> None:
        """A version the gate trusts moves with each suppressing write of its role and holds still otherwise."""
        readers = {role: version_reader(store, role) for role in SCREENING_VERBS}
        has_version = isinstance(store, SuppressionVersion)
        if not has_version:
            assert readers == {"opt_outs": None, "failures": None}
            return
        writes: dict[str, list[Callable[[], object]]] = {
            "opt_outs": [
                lambda: store.opt_out(E164, source="sms:STOP", at=now()),
                lambda: store.opt_out("+14155550000", FROM, source="sms:STOP", at=now()),
            ],
            "failures": [
                lambda: store.record_failure(E164, "SM1:undelivered", at=now(), window_seconds=1000),
                lambda: store.record_failure(E164, "SM2:undelivered", at=now(), window_seconds=1000),
                lambda: store.suppress(E164, ttl_seconds=60, reason="manual", at=now()),
            ],
        }
        for role, read in readers.items():
            if read is None:
                continue
            if read() != read():  # it cannot vouch here (a Redis Cluster): a new value each time, so never trusted
                assert all(read() != read() for _ in range(3)), role
                continue
            seen = [read()]
            for write in writes[role]:
                write()
                assert read() not in seen, role
                seen.append(read())
                # Reads write nothing that suppresses: the version stands.
                store.opted_out_scope(E164, [ACCOUNT_SCOPE, FROM])
                store.suppression(E164, now=now(), window_seconds=1000, threshold=3)
                store.consent_history(E164)
                assert read() == seen[-1], role

    # -- the gate over this store --------------------------------------------------------
    def test_gate_honours_the_stores_opt_outs(
        self,
        store: Any,
        now: Callable[[], float],
        pass_time: Callable[[float], None],
        twilio_http: FakeTwilio,
        twilio_client: Client,
    ) -> None:
        """An opt-out written straight to the store refuses the next send to a number the gate kept a route for."""
        gate = gate_over(store, twilio_client, now, pass_time)
        client = GatedClient(twilio_client, gate)
        for _ in range(REPEATS):
            assert gate.notify(E164, "hi", from_=FROM).action is Action.SMS
            assert client.messages.create(to=E164, from_=FROM, body="hi").sid
        assert (len(twilio_http.sent), twilio_http.lookups[E164]) == (2 * REPEATS, 1)

        store.opt_out(E164, source="import", at=now())  # as a webhook in another process, or an import, would
        refused = gate.notify(E164, "hi", from_=FROM)
        assert (refused.action, refused.decision.twilio_code, refused.decision.reasons) == (
            Action.REFUSE,
            21610,
            ("opted_out:account",),
        )
        with pytest.raises(GateRefused) as dropin:
            client.messages.create(to=E164, from_=FROM, body="hi")
        assert (dropin.value.code, dropin.value.decision.reasons) == (21610, ("opted_out:account",))
        assert len(twilio_http.sent) == 2 * REPEATS

        store.opt_in(E164, source="import", at=now())
        assert gate.notify(E164, "hi", from_=FROM).action is Action.SMS
        assert client.messages.create(to=E164, from_=FROM, body="hi").sid
        assert len(twilio_http.sent) == 2 * REPEATS + 2

    def test_gate_honours_the_stores_suppression(
        self,
        store: Any,
        now: Callable[[], float],
        pass_time: Callable[[float], None],
        twilio_http: FakeTwilio,
        twilio_client: Client,
    ) -> None:
        """Failures or a suppression written straight to the store refuse the next send to a number routed before."""
        gate = gate_over(store, twilio_client, now, pass_time)
        client = GatedClient(twilio_client, gate)
        webhooks = gate.settings.webhooks
        sent = 0

        def sends_go_out() -> None:
            nonlocal sent
            for _ in range(REPEATS):
                assert gate.notify(E164, "hi", from_=FROM).action is Action.SMS
                assert client.messages.create(to=E164, from_=FROM, body="hi").sid
            sent += 2 * REPEATS
            assert len(twilio_http.sent) == sent

        def sends_refused(reason: str) -> None:
            refused = gate.notify(E164, "hi", from_=FROM)
            assert (refused.action, refused.decision.reasons) == (Action.REFUSE, (reason,))
            with pytest.raises(GateRefused) as dropin:
                client.messages.create(to=E164, from_=FROM, body="hi")
            assert (dropin.value.code, dropin.value.decision.reasons) == (refused.decision.twilio_code, (reason,))
            assert len(twilio_http.sent) == sent

        sends_go_out()
        for i in range(webhooks.failure_threshold):
            if i:  # below the threshold the number is still reached
                sends_go_out()
            store.record_failure(E164, f"SM{i}:undelivered", at=now(), window_seconds=webhooks.failure_window_seconds)
        sends_refused(f"failures:{webhooks.failure_threshold}")
        assert store.lift_suppression(E164) is True
        sends_go_out()
        store.suppress(E164, ttl_seconds=3600, reason="manual", at=now())
        sends_refused("suppressed:manual")
        store.lift_suppression(E164)
        sends_go_out()
        assert twilio_http.lookups[E164] == 1


def gate_over(
    store: Any, twilio_client: Client, now: Callable[[], float], sleep: Callable[[float], None]
) -> Gatekeeper:
    """A gate with default settings over ``store`` in every role, on the store's own clock."""
    return Gatekeeper(twilio_client, settings=Settings(), clock=now, sleep=sleep, stores=Stores.using(store))


class OnFakeClock(StoreContract):
    """The contract for a store living in this process: time passes on the suite's fake clock."""

    @pytest.fixture
    def pass_time(self, clock: FakeClock) -> Callable[[float], None]:
        return clock.advance

    @pytest.fixture
    def now(self, clock: FakeClock) -> Callable[[], float]:
        return clock
