"""The one run-once routine (gatekeeper.idempotency.Once) on a memory store and a fake clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support import FakeClock

from gatekeeper.errors import IdempotencyConflict, InvalidArgument, StoreUnavailable
from gatekeeper.idempotency import MAX_KEY_CHARS, POLL_SECONDS, Once, Ran, check_key, fingerprint_of
from gatekeeper.stores.base import Stores
from gatekeeper.stores.memory import MemoryStore

LEASE, KEEP = 60.0, 3600.0


class Counter:
    """Work that counts its runs and answers with the run number."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self) -> bytes:
        self.runs += 1
        return f"run-{self.runs}".encode()


class CompleteFails(MemoryStore):
    """A memory store whose ``complete`` is down (and, when asked, its ``mark_unknown`` too)."""

    def __init__(self, *, unknown_fails: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.complete_fails = True
        self.unknown_fails = unknown_fails

    def complete(self, key: str, token: str, result: bytes, *, ttl_seconds: float) -> None:
        if self.complete_fails:
            raise StoreUnavailable("store down while completing")
        super().complete(key, token, result, ttl_seconds=ttl_seconds)

    def mark_unknown(self, key: str, token: str, *, ttl_seconds: float) -> None:
        if self.unknown_fails:
            raise StoreUnavailable("store down while marking unknown")
        super().mark_unknown(key, token, ttl_seconds=ttl_seconds)


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
def once(store: MemoryStore, clock: FakeClock) -> Once:
    return Once(Stores.using(store), clock=clock, sleep=clock.sleep)


def run(once: Once, key: str, work: Callable[[], bytes], **kwargs: object) -> Ran:
    return once.run(key, work, lease_seconds=LEASE, keep_seconds=KEEP, **kwargs)  # type: ignore[arg-type]


def always(answer: bool) -> Callable[[BaseException], bool]:
    return lambda exc: answer


def test_a_key_runs_once_and_a_repeat_gets_the_stored_result(once: Once) -> None:
    """The first run runs the work; a repeat does not and returns the first result with ran=False."""
    work = Counter()
    first = run(once, "k1", work, fingerprint="fp")
    second = run(once, "k1", work, fingerprint="fp")
    assert first == Ran(True, b"run-1")
    assert second == Ran(False, b"run-1")
    assert work.runs == 1


def test_different_keys_run_independently(once: Once) -> None:
    """Each key has its own claim: two keys run the work twice."""
    work = Counter()
    assert run(once, "a", work).ran and run(once, "b", work).ran
    assert work.runs == 2


def test_the_fingerprint_defaults_to_the_key(once: Once, store: MemoryStore) -> None:
    """Without a fingerprint the key is its own fingerprint (an event's identity)."""
    run(once, "evt-1", Counter())
    claim = store.claim("evt-1", "other", ttl_seconds=LEASE)
    assert (claim.won, claim.state, claim.fingerprint) == (False, "done", "evt-1")


def test_same_key_with_another_fingerprint_is_a_payload_mismatch(once: Once) -> None:
    """A key reused for a different request raises IdempotencyConflict(payload_mismatch) and runs nothing."""
    work = Counter()
    run(once, "k1", work, fingerprint="fp-a")
    with pytest.raises(IdempotencyConflict) as conflict:
        run(once, "k1", work, fingerprint="fp-b")
    assert (conflict.value.reason, conflict.value.key) == ("payload_mismatch", "k1")
    assert work.runs == 1


def test_a_pending_claim_makes_a_repeat_wait_then_raise_in_progress(
    once: Once, store: MemoryStore, clock: FakeClock
) -> None:
    """A repeat of a key another caller holds polls for up to wait_seconds on the clock, then raises in_progress."""
    held = store.claim("k1", "fp", ttl_seconds=LEASE)
    assert held.won
    work = Counter()
    start = clock()
    with pytest.raises(IdempotencyConflict) as conflict:
        run(once, "k1", work, fingerprint="fp", wait_seconds=0.2)
    assert conflict.value.reason == "in_progress"
    assert work.runs == 0
    assert clock.sleeps and set(clock.sleeps) == {POLL_SECONDS}
    assert clock() - start == pytest.approx(0.2, abs=POLL_SECONDS)
    assert len(clock.sleeps) <= 5


def test_another_request_under_a_pending_key_is_refused_without_waiting(
    once: Once, store: MemoryStore, clock: FakeClock
) -> None:
    """Waiting would not help a different request: a pending key held for another fingerprint is a mismatch at once."""
    store.claim("k1", "fp-a", ttl_seconds=LEASE)
    with pytest.raises(IdempotencyConflict) as conflict:
        run(once, "k1", Counter(), fingerprint="fp-b", wait_seconds=5)
    assert conflict.value.reason == "payload_mismatch"
    assert clock.sleeps == []


def test_without_wait_seconds_a_pending_claim_raises_at_once(once: Once, store: MemoryStore, clock: FakeClock) -> None:
    """wait_seconds=0 (the default) raises in_progress without sleeping."""
    store.claim("k1", "fp", ttl_seconds=LEASE)
    with pytest.raises(IdempotencyConflict, match="in progress") as conflict:
        run(once, "k1", Counter(), fingerprint="fp")
    assert conflict.value.reason == "in_progress"
    assert clock.sleeps == []


def test_a_repeat_from_inside_the_first_run_is_in_progress(once: Once) -> None:
    """A call for the same key while the first is still running its work is refused as in_progress."""
    inner_errors: list[IdempotencyConflict] = []

    def outer() -> bytes:
        try:
            run(once, "k1", Counter(), fingerprint="fp", wait_seconds=0.1)
        except IdempotencyConflict as exc:
            inner_errors.append(exc)
        return b"outer"

    assert run(once, "k1", outer, fingerprint="fp") == Ran(True, b"outer")
    assert [e.reason for e in inner_errors] == ["in_progress"]
    assert run(once, "k1", Counter(), fingerprint="fp") == Ran(False, b"outer")


def test_a_waiting_repeat_gets_the_result_once_the_first_completes(store: MemoryStore, clock: FakeClock) -> None:
    """A repeat that waits sees the first caller complete and returns its result without running."""
    held = store.claim("k1", "fp", ttl_seconds=LEASE)
    assert held.token is not None

    def sleep_then_complete(seconds: float) -> None:
        clock.sleep(seconds)
        store.complete("k1", held.token or "", b"first", ttl_seconds=KEEP)

    waiting = Once(Stores.using(store), clock=clock, sleep=sleep_then_complete)
    work = Counter()
    assert run(waiting, "k1", work, fingerprint="fp", wait_seconds=1.0) == Ran(False, b"first")
    assert work.runs == 0
    assert clock.sleeps == [POLL_SECONDS]


def test_an_expired_lease_frees_the_key(once: Once, store: MemoryStore, clock: FakeClock) -> None:
    """A pending claim is a lease: once it runs out (a caller that died), the next run runs."""
    store.claim("k1", "fp", ttl_seconds=LEASE)
    clock.advance(LEASE + 1)
    work = Counter()
    assert run(once, "k1", work, fingerprint="fp") == Ran(True, b"run-1")


def test_a_completed_key_is_kept_for_keep_seconds_only(once: Once, clock: FakeClock) -> None:
    """After keep_seconds the stored result is gone and the key runs again."""
    work = Counter()
    run(once, "k1", work)
    clock.advance(KEEP - 1)
    assert run(once, "k1", work) == Ran(False, b"run-1")
    clock.advance(2)
    assert run(once, "k1", work) == Ran(True, b"run-2")


def test_a_failure_where_nothing_happened_frees_the_key(once: Once) -> None:
    """When nothing_happened says True, the failure is raised and the next run with the key runs."""
    boom = ValueError("rejected before sending")

    def fails() -> bytes:
        raise boom

    seen: list[BaseException] = []

    def nothing_happened(exc: BaseException) -> bool:
        seen.append(exc)
        return True

    with pytest.raises(ValueError, match="rejected before sending"):
        run(once, "k1", fails, fingerprint="fp", nothing_happened=nothing_happened)
    assert seen == [boom]
    work = Counter()
    assert run(once, "k1", work, fingerprint="fp", nothing_happened=nothing_happened) == Ran(True, b"run-1")


def test_a_failure_that_may_have_acted_marks_the_key_unknown(once: Once) -> None:
    """When nothing_happened says False, a retry raises outcome_unknown and does not run the work."""

    def fails() -> bytes:
        raise TimeoutError("may have sent")

    with pytest.raises(TimeoutError):
        run(once, "k1", fails, fingerprint="fp", nothing_happened=always(False))
    work = Counter()
    with pytest.raises(IdempotencyConflict) as conflict:
        run(once, "k1", work, fingerprint="fp", nothing_happened=always(False))
    assert conflict.value.reason == "outcome_unknown"
    assert work.runs == 0


def test_an_unknown_key_is_still_a_payload_mismatch_for_another_request(once: Once) -> None:
    """The fingerprint is checked before the state: another request under an unknown key is payload_mismatch."""

    def fails() -> bytes:
        raise TimeoutError("may have sent")

    with pytest.raises(TimeoutError):
        run(once, "k1", fails, fingerprint="fp", nothing_happened=always(False))
    with pytest.raises(IdempotencyConflict) as conflict:
        run(once, "k1", Counter(), fingerprint="other")
    assert conflict.value.reason == "payload_mismatch"


@pytest.mark.parametrize("error", [RuntimeError("bug"), TimeoutError("late"), KeyboardInterrupt()])
def test_without_nothing_happened_every_failure_frees_the_key(once: Once, error: BaseException) -> None:
    """With nothing_happened=None (work safe to redo) any failure, even a BaseException, frees the key."""

    def fails() -> bytes:
        raise error

    with pytest.raises(type(error)):
        run(once, "evt", fails)
    work = Counter()
    assert run(once, "evt", work) == Ran(True, b"run-1")


def test_complete_failing_marks_a_send_unknown(clock: FakeClock) -> None:
    """Work that ran but whose result could not be stored is marked unknown when nothing_happened is given."""
    store = CompleteFails(clock=clock)
    once = Once(Stores.using(store), clock=clock, sleep=clock.sleep)
    work = Counter()
    with pytest.raises(StoreUnavailable):
        run(once, "send-1", work, fingerprint="fp", nothing_happened=always(True))
    assert work.runs == 1
    store.complete_fails = False
    with pytest.raises(IdempotencyConflict) as conflict:
        run(once, "send-1", work, fingerprint="fp", nothing_happened=always(True))
    assert conflict.value.reason == "outcome_unknown"
    assert work.runs == 1


def test_complete_failing_frees_an_event(clock: FakeClock) -> None:
    """Work safe to redo (nothing_happened=None) whose result could not be stored frees its key."""
    store = CompleteFails(clock=clock)
    once = Once(Stores.using(store), clock=clock, sleep=clock.sleep)
    work = Counter()
    with pytest.raises(StoreUnavailable):
        run(once, "evt-1", work)
    store.complete_fails = False
    assert run(once, "evt-1", work) == Ran(True, b"run-2")


def test_when_the_store_stays_down_the_lease_frees_the_key(clock: FakeClock) -> None:
    """If marking unknown fails too, the claim stays pending (in_progress) until its lease runs out."""
    store = CompleteFails(clock=clock, unknown_fails=True)
    once = Once(Stores.using(store), clock=clock, sleep=clock.sleep)
    work = Counter()
    with pytest.raises(StoreUnavailable, match="completing"):
        run(once, "send-1", work, fingerprint="fp", nothing_happened=always(False))
    store.complete_fails = store.unknown_fails = False
    with pytest.raises(IdempotencyConflict) as conflict:
        run(once, "send-1", work, fingerprint="fp", nothing_happened=always(False))
    assert conflict.value.reason == "in_progress"
    clock.advance(LEASE + 1)
    assert run(once, "send-1", work, fingerprint="fp", nothing_happened=always(False)) == Ran(True, b"run-2")


@pytest.mark.parametrize("key", ["", None, 42, b"bytes", "x" * (MAX_KEY_CHARS + 1)])
def test_check_key_rejects_unusable_keys(key: object) -> None:
    """An empty, non-string or 256-character key is an InvalidArgument, which is also a ValueError."""
    with pytest.raises(InvalidArgument, match="idempotency_key") as rejected:
        check_key(key)
    assert isinstance(rejected.value, ValueError)


@pytest.mark.parametrize("key", ["k", "order-42:notify", "x" * MAX_KEY_CHARS])
def test_check_key_returns_a_usable_key(key: str) -> None:
    """A non-empty string of at most 255 characters comes back unchanged."""
    assert check_key(key) == key


def test_fingerprint_of_is_stable_and_tells_requests_apart() -> None:
    """The same parts digest alike (dict order aside); different parts differ."""
    a = fingerprint_of("notify", {"to": "+14155552671", "body": "hi"})
    b = fingerprint_of("notify", {"body": "hi", "to": "+14155552671"})
    c = fingerprint_of("notify", {"to": "+14155552671", "body": "hello"})
    assert a == b
    assert a != c
    assert len(a) == 64
