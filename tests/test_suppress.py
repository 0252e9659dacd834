"""Step 2 (gatekeeper.suppress.Suppression): opt-out scopes, screening, consent and delivery-status writes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
from support import FakeClock

from gatekeeper.errors import InvalidNumber, StoreUnavailable
from gatekeeper.phone import normalize
from gatekeeper.policy import Policy, Verdict
from gatekeeper.settings import WebhookSettings
from gatekeeper.stores.base import ACCOUNT_SCOPE, Stores, run
from gatekeeper.stores.memory import MemoryStore
from gatekeeper.suppress import OPTED_OUT_CODE, TWILIO_OPT_OUT_SOURCE, Delivery, Recorded, Suppression

MOBILE, OTHER = "+14155552671", "+14155552672"
SENDER = "+15005550006"
SERVICE_SID = "MG" + "a" * 32
PHONE = normalize(MOBILE)
ACCOUNT = (ACCOUNT_SCOPE,)


class CountingStore(MemoryStore):
    """Counts screening reads; re-declares the version so it still vouches for the overridden reads."""

    suppression_version = MemoryStore.suppression_version

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.reads: Counter[str] = Counter()

    def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        self.reads["opt_outs"] += 1
        return super().opted_out_scope(e164, scopes)

    def suppression(self, e164: str, *, now: float, window_seconds: float, threshold: int) -> str | None:
        self.reads["suppression"] += 1
        return super().suppression(e164, now=now, window_seconds=window_seconds, threshold=threshold)


class OwnOptOuts(MemoryStore):
    """Overrides an opt-out read but inherits the version: the version cannot vouch for it."""

    def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        return super().opted_out_scope(e164, scopes)


class DownStore(MemoryStore):
    """A store whose screening reads are unavailable."""

    def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        raise StoreUnavailable("opt-outs down")

    def suppression(self, e164: str, *, now: float, window_seconds: float, threshold: int) -> str | None:
        raise StoreUnavailable("failures down")


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


def make(store: MemoryStore, clock: FakeClock, **settings: object) -> Suppression:
    return Suppression(Stores.using(store), WebhookSettings(**settings), default_country="US", clock=clock)  # type: ignore[arg-type]


@pytest.fixture
def supp(store: MemoryStore, clock: FakeClock) -> Suppression:
    return make(store, clock)


def deliver(supp: Suppression, sid: str, *, code: int | None, failure_id: str, to: str | None = MOBILE) -> Delivery:
    return supp.record_delivery(sid, "undelivered", 5, error_code=code, to=to, to_hash="hash", failure_id=failure_id)


# -- scopes --------------------------------------------------------------------------------
def test_scopes_are_the_account_by_default(supp: Suppression) -> None:
    """With opt_out_scope="account" every send respects only the account scope, whoever sends."""
    assert supp.scopes(None) == ("*",)
    assert supp.scopes(SENDER) == ("*",)
    assert supp.scope_of(SENDER) == "*"


def test_sender_scopes_add_the_senders_e164_or_service_sid(store: MemoryStore, clock: FakeClock) -> None:
    """With opt_out_scope="sender" the sender's E.164 (parsed with the country) or Messaging Service SID is added."""
    supp = make(store, clock, opt_out_scope="sender")
    assert supp.scopes("(415) 555-2671") == ("*", MOBILE)
    assert supp.scopes("020 7946 0018", "GB") == ("*", "+442079460018")
    assert supp.scopes(SERVICE_SID) == ("*", SERVICE_SID)
    assert supp.scopes(None) == ("*",)
    assert supp.scope_of(SENDER) == SENDER
    assert supp.scope_of(None) == "*"


def test_an_invalid_sender_raises_invalid_number(store: MemoryStore, clock: FakeClock) -> None:
    """A sender that is no number, short code, alphanumeric ID or service SID is an InvalidNumber."""
    supp = make(store, clock, opt_out_scope="sender")
    with pytest.raises(InvalidNumber) as bad:
        supp.scopes("not a sender!!")
    assert bad.value.reason == "invalid_sender"


# -- screening -----------------------------------------------------------------------------
def test_screen_clears_a_number_with_nothing_against_it(supp: Suppression) -> None:
    """A number never opted out nor failed is clear."""
    assert supp.screen(PHONE, Policy(), ACCOUNT) is None


def test_screen_refuses_an_opted_out_number_when_the_policy_honours_it(supp: Suppression) -> None:
    """An account opt-out refuses with opted_out:account, unless the policy's opt_outs_block is off."""
    supp.record_consent(MOBILE, "*", opted_out=True, source="api")
    assert supp.screen(PHONE, Policy(), ACCOUNT) == Verdict(False, ("opted_out:account",), "opted_out")
    assert supp.screen(PHONE, Policy(opt_outs_block=False), ACCOUNT) is None


def test_screen_respects_only_the_scopes_asked(store: MemoryStore, clock: FakeClock) -> None:
    """An opt-out from one sender refuses sends from that sender, not from another."""
    supp = make(store, clock, opt_out_scope="sender")
    supp.record_consent(MOBILE, supp.scope_of(SENDER), opted_out=True, source="api")
    refused = supp.screen(PHONE, Policy(), supp.scopes(SENDER))
    assert refused is not None and refused.reasons == ("opted_out:sender",)
    assert supp.screen(PHONE, Policy(), supp.scopes(SERVICE_SID)) is None


def test_screen_refuses_a_suppressed_number(supp: Suppression, store: MemoryStore, clock: FakeClock) -> None:
    """A suppression refuses with its reason whatever the policy says about opt-outs, until it runs out."""
    store.suppress(MOBILE, ttl_seconds=100, reason="manual", at=clock())
    expected = Verdict(False, ("suppressed:manual",), "suppressed")
    assert supp.screen(PHONE, Policy(), ACCOUNT) == expected
    assert supp.screen(PHONE, Policy(opt_outs_block=False), ACCOUNT) == expected
    clock.advance(101)
    assert supp.screen(PHONE, Policy(), ACCOUNT) is None


def test_screen_fails_safe_when_the_store_is_unavailable(clock: FakeClock) -> None:
    """An unreadable store refuses the number with store:unavailable instead of letting it through."""
    supp = make(DownStore(clock=clock), clock)
    verdict = supp.screen(PHONE, Policy(), ACCOUNT)
    assert verdict == Verdict(False, ("store:unavailable",), "store_unavailable")


# -- consent -------------------------------------------------------------------------------
def test_record_consent_returns_the_change_and_whether_it_changed(
    supp: Suppression, store: MemoryStore, clock: FakeClock
) -> None:
    """An opt-out is Recorded with its change and changed=True; a second one is changed=False but kept in history."""
    first = supp.record_consent(MOBILE, "*", opted_out=True, source="api")
    assert isinstance(first, Recorded) and first.changed is True
    c = first.change
    assert (c.e164, c.scope, c.opted_out, c.source, c.at) == (MOBILE, "*", True, "api", clock())
    again = supp.record_consent(MOBILE, "*", opted_out=True, source="webhook:STOP:SM1")
    assert again.changed is False
    assert store.opted_out_scope(MOBILE, ACCOUNT) == "*"
    lifted = supp.record_consent(MOBILE, "*", opted_out=False, source="api")
    assert lifted.changed is True and lifted.change.opted_out is False
    assert store.opted_out_scope(MOBILE, ACCOUNT) is None


def test_once_per_source_does_not_write_the_same_change_twice(supp: Suppression, store: MemoryStore) -> None:
    """With once_per_source a change already recorded from that source, scope and direction is not written again."""
    source = "webhook:STOP:SM123"
    first = supp.record_consent(MOBILE, "*", opted_out=True, source=source, once_per_source=True)
    assert first.changed
    assert len(store.consent_history(MOBILE)) == 1
    again = supp.record_consent(MOBILE, "*", opted_out=True, source=source, once_per_source=True)
    assert again == Recorded(first.change, changed=False)
    assert len(store.consent_history(MOBILE)) == 1
    other = supp.record_consent(MOBILE, "*", opted_out=True, source="webhook:STOP:SM456", once_per_source=True)
    assert other.changed is False
    assert len(store.consent_history(MOBILE)) == 2


def test_once_per_source_tells_directions_apart(supp: Suppression, store: MemoryStore) -> None:
    """An opt-in from a source that only opted out before is written (the direction differs)."""
    supp.record_consent(MOBILE, "*", opted_out=True, source="webhook:SM1", once_per_source=True)
    lifted = supp.record_consent(MOBILE, "*", opted_out=False, source="webhook:SM1", once_per_source=True)
    assert lifted.changed is True
    assert [c.opted_out for c in store.consent_history(MOBILE)] == [False, True]


# -- delivery statuses ---------------------------------------------------------------------
def test_record_delivery_applies_a_status_that_never_moves_back(supp: Suppression, store: MemoryStore) -> None:
    """A status is stored once; an equal or lower rank is not applied and leaves the stored one."""
    applied = supp.record_delivery("SM1", "delivered", 6, error_code=None, to=MOBILE, to_hash="h", failure_id="f")
    assert applied == Delivery(True, None, False, None, at=applied.at)
    assert applied.at == store.status_of("SM1").updated_at  # type: ignore[union-attr]
    stale = supp.record_delivery("SM1", "sent", 3, error_code=None, to=MOBILE, to_hash="h", failure_id="f")
    assert stale.applied is False
    record = store.status_of("SM1")
    assert record is not None and (record.status, record.to_hash) == ("delivered", "h")


def test_hard_failures_count_once_per_failure_id(supp: Suppression) -> None:
    """A retried failure event (same failure_id) is not counted again."""
    assert deliver(supp, "SM1", code=30003, failure_id="SM1").failures == 1
    assert deliver(supp, "SM1", code=30003, failure_id="SM1").failures == 1
    assert deliver(supp, "SM2", code=30003, failure_id="SM2").failures == 2


def test_a_soft_error_or_no_recipient_counts_nothing(supp: Suppression) -> None:
    """An error code outside failure_codes, or a status without a number, counts no failure."""
    assert deliver(supp, "SM1", code=30008, failure_id="SM1").failures is None
    assert deliver(supp, "SM2", code=30003, failure_id="SM2", to=None).failures is None
    assert supp.screen(PHONE, Policy(), ACCOUNT) is None


def test_failures_suppress_at_the_threshold(supp: Suppression) -> None:
    """The third hard failure (the default threshold) suppresses the number; the earlier ones do not."""
    results = [deliver(supp, f"SM{i}", code=30003, failure_id=f"SM{i}") for i in range(3)]
    assert [(d.failures, d.suppressed) for d in results] == [(1, False), (2, False), (3, True)]
    verdict = supp.screen(PHONE, Policy(), ACCOUNT)
    assert verdict is not None and verdict.reasons == ("suppressed:delivery_failures:30003",)


def test_the_threshold_follows_the_settings(store: MemoryStore, clock: FakeClock) -> None:
    """failure_threshold=1 suppresses at the first hard failure."""
    supp = make(store, clock, failure_threshold=1)
    assert deliver(supp, "SM1", code=30005, failure_id="SM1").suppressed is True


def test_reachable_lifts_a_suppression(supp: Suppression) -> None:
    """A number that wrote to us is reachable again: its suppression and failure count are cleared."""
    for i in range(3):
        deliver(supp, f"SM{i}", code=30003, failure_id=f"SM{i}")
    assert supp.screen(PHONE, Policy(), ACCOUNT) is not None
    supp.reachable(MOBILE)
    assert supp.screen(PHONE, Policy(), ACCOUNT) is None
    assert deliver(supp, "SM9", code=30003, failure_id="SM9").failures == 1


def test_21610_opts_the_number_out_account_wide_once(supp: Suppression, store: MemoryStore) -> None:
    """Twilio's 21610 records one account-wide opt-out from twilio:21610; a second 21610 records none."""
    first = deliver(supp, "SM1", code=OPTED_OUT_CODE, failure_id="SM1")
    assert first.consent is not None and first.consent.changed
    assert (first.consent.change.scope, first.consent.change.source) == (ACCOUNT_SCOPE, TWILIO_OPT_OUT_SOURCE)
    assert store.opted_out_scope(MOBILE, ACCOUNT) == "*"
    second = deliver(supp, "SM2", code=OPTED_OUT_CODE, failure_id="SM2")
    assert second.consent is None
    assert [c.source for c in store.consent_history(MOBILE)] == [TWILIO_OPT_OUT_SOURCE]


def test_21610_adds_the_account_scope_to_a_sender_opt_out(store: MemoryStore, clock: FakeClock) -> None:
    """A number opted out of one sender only is opted out account-wide by a 21610."""
    supp = make(store, clock, opt_out_scope="sender")
    supp.record_consent(MOBILE, SENDER, opted_out=True, source="api")
    delivered = deliver(supp, "SM1", code=OPTED_OUT_CODE, failure_id="SM1")
    assert delivered.consent is not None
    assert store.opted_out_scope(MOBILE, ACCOUNT) == "*"


# -- screening since a mark ----------------------------------------------------------------
def test_screen_since_skips_the_read_while_the_version_is_unchanged(clock: FakeClock) -> None:
    """A number found clear is not read again until a suppressing write moves the store's version."""
    store = CountingStore(clock=clock)
    supp = make(store, clock)
    verdict, mark = supp.screen_since(None, PHONE, Policy(), ACCOUNT)
    assert verdict is None and mark is not None
    assert store.reads == Counter(opt_outs=1, suppression=1)

    for _ in range(3):
        verdict, again = supp.screen_since(mark, PHONE, Policy(), ACCOUNT)
        assert (verdict, again) == (None, mark)
    assert store.reads == Counter(opt_outs=1, suppression=1)

    supp.record_consent(OTHER, "*", opted_out=True, source="api")  # any suppressing write moves the version
    verdict, moved = supp.screen_since(mark, PHONE, Policy(), ACCOUNT)
    assert verdict is None and moved is not None and moved != mark
    assert store.reads == Counter(opt_outs=2, suppression=2)


def test_screen_since_sees_a_write_that_suppresses_the_number(clock: FakeClock) -> None:
    """After an opt-out of the number itself, screen_since reads again, refuses, and keeps no mark."""
    store = CountingStore(clock=clock)
    supp = make(store, clock)
    _, mark = supp.screen_since(None, PHONE, Policy(), ACCOUNT)
    supp.record_consent(MOBILE, "*", opted_out=True, source="api")
    verdict, after = supp.screen_since(mark, PHONE, Policy(), ACCOUNT)
    assert verdict is not None and verdict.refusal == "opted_out"
    assert after is None
    assert store.reads["opt_outs"] == 2


def test_screen_since_sees_a_hard_failure(clock: FakeClock) -> None:
    """A recorded hard failure moves the version, so the next screen_since reads the store again."""
    store = CountingStore(clock=clock)
    supp = make(store, clock)
    _, mark = supp.screen_since(None, PHONE, Policy(), ACCOUNT)
    deliver(supp, "SM1", code=30003, failure_id="SM1")
    _, after = supp.screen_since(mark, PHONE, Policy(), ACCOUNT)
    assert after != mark
    assert store.reads["suppression"] == 2


def test_clear_mark_is_none_without_a_trusted_version(clock: FakeClock) -> None:
    """A store overriding opted_out_scope but inheriting the version gets no mark, so it is read every time."""
    store = OwnOptOuts(clock=clock)
    supp = make(store, clock)
    assert supp.clear_mark() is None
    verdict, mark = supp.screen_since(None, PHONE, Policy(), ACCOUNT)
    assert verdict is None and mark is None


def test_clear_mark_is_set_for_the_plain_memory_store(supp: Suppression) -> None:
    """The memory store vouches for its own reads: its mark is stable while nothing is written."""
    mark = supp.clear_mark()
    assert mark is not None
    assert supp.clear_mark() == mark
    supp.record_consent(MOBILE, "*", opted_out=False, source="api")  # an opt-in suppresses nothing
    assert supp.clear_mark() == mark
    supp.record_consent(MOBILE, "*", opted_out=True, source="api")
    assert supp.clear_mark() != mark


def test_the_clear_mark_is_the_same_read_directly_or_as_store_calls(
    supp: Suppression, store: MemoryStore, clock: FakeClock
) -> None:
    """clear_mark (the blocking hot path) and clear_mark_steps (what the async gate awaits) agree: equal while
    nothing suppressing is written, both moved by an opt-out, both None for a store whose version is untrusted."""
    stepped = run(Stores.using(store), supp.clear_mark_steps())
    assert stepped is not None and supp.clear_mark() == stepped
    store.opt_out(MOBILE, source="test", at=clock())
    assert supp.clear_mark() == run(Stores.using(store), supp.clear_mark_steps()) != stepped
    own_stores = Stores.using(OwnOptOuts())
    own = Suppression(own_stores, WebhookSettings(), clock=clock)
    assert own.clear_mark() is None
    assert run(own_stores, own.clear_mark_steps()) is None
