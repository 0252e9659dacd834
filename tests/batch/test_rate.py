"""The Lookup budget and the concurrency bound: fake-clock permit schedules, in-flight counts, a shared Redis."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support import FakeClock, run_threads
from twilio.rest import Client

from gatekeeper import batch
from gatekeeper.batch import JITTER_MARGIN_SECONDS, BatchError, enrich_file
from gatekeeper.errors import StoreUnavailable
from gatekeeper.gate import Gatekeeper
from gatekeeper.policy import Policy
from gatekeeper.sandbox import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, SandboxHttpClient, SandboxServer, create_app
from gatekeeper.settings import Settings
from gatekeeper.stores.base import Budget, Stores
from gatekeeper.stores.memory import MemoryStore
from gatekeeper.stores.redis import RedisStore

LOOKUPS = f"rate:lookups:{TEST_ACCOUNT_SID}"  # the bucket live Lookups of the sandbox's account draw on


def numbers(count: int, start: int = 2000) -> list[str]:
    return [f"+1415555{start + i:04d}" for i in range(count)]


def spacing(rate: float) -> float:
    """Seconds between two permits at ``rate``: ``rate`` of them span a second plus the jitter margin."""
    return (1 + JITTER_MARGIN_SECONDS) / rate


def most_in_one_second(times: list[float]) -> int:
    """The largest number of events in any closed 1-second window."""
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u <= t + 1.0 + 1e-9) for i, t in enumerate(times)), default=0)


class RecordingBudget:
    """The store's Budget verbs, recording every permit taken (when it is due: now + wait), apart from the takes
    that only move the next permits (``Budgets.push_steps``: seconds, however far off), and every pause."""

    def __init__(self, inner: Any, *, fail_after: int | None = None) -> None:
        self.inner = inner
        self.fail_after = fail_after
        self.permits: list[dict[str, Any]] = []
        self.pushes: list[float] = []
        self.pauses: list[tuple[str, float]] = []
        self.after_permit: Callable[[int], None] = lambda count: None  # e.g. a slow answer: the clock moves on
        self._lock = threading.Lock()

    def _fail(self) -> None:
        if self.fail_after is not None and len(self.permits) >= self.fail_after:
            raise StoreUnavailable("Redis store unavailable: ConnectionError")

    def _keep(self, bucket: str, rate: float, burst: int, now: float, wait: float) -> None:
        self.permits.append({"bucket": bucket, "rate": rate, "burst": burst, "due": now + wait, "wait": wait})

    def reserve(self, bucket: str, *, rate_per_second: float, burst: int, now: float) -> float:
        with self._lock:
            self._fail()
            wait = self.inner.reserve(bucket, rate_per_second=rate_per_second, burst=burst, now=now)
            self._keep(bucket, rate_per_second, burst, now, wait)
            return float(wait)

    def take(
        self, bucket: str, *, rate_per_second: float, burst: int, now: float, max_wait: float
    ) -> tuple[bool, float]:
        with self._lock:
            self._fail()
            taken, wait = self.inner.take(
                bucket, rate_per_second=rate_per_second, burst=burst, now=now, max_wait=max_wait
            )
            if max_wait >= 3600:
                self.pushes.append(1 / rate_per_second)
            elif taken:
                self._keep(bucket, rate_per_second, burst, now, wait)
                self.after_permit(len(self.permits))
            return taken, wait

    def pause(self, bucket: str, *, until: float) -> None:
        self.pauses.append((bucket, until))
        self.inner.pause(bucket, until=until)

    def paused_until(self, bucket: str) -> float:
        return float(self.inner.paused_until(bucket))


def recording(store: MemoryStore, **options: Any) -> tuple[Stores, RecordingBudget]:
    stores = Stores.using(store)
    budget = RecordingBudget(store, **options)
    stores.rate_limits = budget
    assert isinstance(budget, Budget)  # the pacer takes permits with take(), as from a real store
    return stores, budget


def test_one_worker_spaces_lookups_by_the_rate_on_a_fake_clock(files):
    """concurrency=1, rate 4/s: Lookups reach Twilio spacing(4) apart in fake time, and nothing really sleeps."""
    clock = FakeClock()
    with SandboxServer(create_app(clock=clock)) as server:
        store = MemoryStore(clock=clock)
        gate = Gatekeeper(server.client(), stores=Stores.using(store), clock=clock, sleep=clock.sleep)
        wanted = numbers(12)
        src = files.csv("phone\n" + "".join(f"{n}\n{n}\nnot-a-number\n" for n in wanted))
        summary = enrich_file(gate, src, files.out, rate_per_second=4, concurrency=1, clock=clock, sleep=clock.sleep)
        times = [r.received_at for r in server.sandbox.requests("lookup")]

    assert len(times) == 12 and summary.looked_up == 12 and summary.cached == 12 and summary.refused == 12
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # The first request has the cold start's extra room after it; the rest are spaced by the rate.
    assert gaps[0] == pytest.approx(spacing(4) + batch._COLD_SECONDS)
    assert gaps[1:] == pytest.approx([spacing(4)] * 10)
    assert most_in_one_second(times) == 4  # never 5, even counting both ends of the window
    elapsed = 11 * spacing(4) + batch._COLD_SECONDS
    assert sum(clock.sleeps) == pytest.approx(elapsed)
    assert summary.elapsed_seconds == pytest.approx(elapsed)
    assert summary.achieved_rate == pytest.approx(12 / elapsed)


def test_concurrent_permits_never_exceed_the_rate_and_only_lookups_take_them(sandbox_server, files):
    """8 workers at 5/s: one permit per Lookup (none for cache hits, duplicates or local refusals), <= rate/s,
    from the account's lookups bucket, with no burst."""
    clock = FakeClock()
    stores, budget = recording(MemoryStore(clock=clock))
    policy = {"notify": Policy(deny_countries=frozenset({"GG"}))}
    gate = Gatekeeper(sandbox_server.client(), stores=stores, policy=policy, clock=clock, sleep=clock.sleep)
    warm, fresh = numbers(10), numbers(30, start=3000)
    enrich_file(gate, files.csv("phone\n" + "\n".join(warm) + "\n", name="warm.csv"), files.root / "warm.jsonl")
    budget.permits.clear()
    sandbox_server.sandbox.reset()

    rows = [*warm, *(n for n in fresh for _ in range(3)), "+447911123456", "+1 415 555", "hello"]
    src = files.csv("phone\n" + "\n".join(rows) + "\n")
    summary = enrich_file(gate, src, files.out, rate_per_second=5, concurrency=8, clock=clock, sleep=clock.sleep)

    assert sandbox_server.sandbox.lookup_counts() == dict.fromkeys(fresh, 1)
    assert len(budget.permits) == 30 == summary.looked_up
    assert summary.cached == 10 + 60 and summary.refused == 3
    assert {(p["bucket"], p["burst"]) for p in budget.permits} == {(LOOKUPS, 1)}
    assert all(p["rate"] == pytest.approx(1 / spacing(5)) for p in budget.permits)
    due = sorted(p["due"] for p in budget.permits)
    assert most_in_one_second(due) <= 5
    # Spaced by the rate at least: fake sleeps of several workers add up on the shared fake clock, which moves
    # later permits further (a request going late moves the ones after it), never closer.
    assert min(b - a for a, b in itertools.pairwise(due)) >= spacing(5) - 1e-6
    assert all(p["wait"] <= batch._LEAD_SECONDS + 1e-9 for p in budget.permits)  # taken when due, not ahead


def test_a_lost_rate_limiter_stops_the_run_and_keeps_what_was_written(sandbox_server, files):
    """If permits cannot be had (Redis down) the run stops with BatchError rather than exceed the budget."""
    stores, _ = recording(MemoryStore(), fail_after=3)
    gate = Gatekeeper(sandbox_server.client(), stores=stores)
    src = files.csv("phone\n" + "\n".join(numbers(10)) + "\n")
    with pytest.raises(BatchError, match="rate limiter"):
        enrich_file(gate, src, files.out, rate_per_second=1000, concurrency=1)
    assert len(files.records()) == 3
    assert sum(sandbox_server.sandbox.lookup_counts().values()) == 3


def test_a_request_going_late_moves_the_next_permits(files):
    """The store answers the third permit 50 ms late (or the host is that busy): past half the margin, the next
    permits move by the excess, so the requests after it cannot reach Twilio bunched up with it."""
    clock = FakeClock()
    stores, budget = recording(MemoryStore(clock=clock))
    budget.after_permit = lambda count: clock.advance(0.05) if count == 3 else None
    src = files.csv("phone\n" + "\n".join(numbers(5)) + "\n")
    with SandboxServer(create_app(clock=clock)) as server:
        gate = Gatekeeper(server.client(), stores=stores, clock=clock, sleep=clock.sleep)
        enrich_file(gate, src, files.out, rate_per_second=10, concurrency=1, clock=clock, sleep=clock.sleep)
        times = [r.received_at for r in server.sandbox.requests("lookup")]
    excess = 0.05 - batch._LATE_SECONDS
    assert budget.pushes == pytest.approx([batch._COLD_SECONDS, excess], abs=1e-6)
    due = [p["due"] for p in budget.permits]
    gaps = [b - a for a, b in itertools.pairwise(due)]
    expected = [spacing(10) + batch._COLD_SECONDS, spacing(10), spacing(10) + excess, spacing(10)]
    assert gaps == pytest.approx(expected, abs=1e-6)
    # At Twilio the late request is followed no closer than the margin it is left allows.
    assert times[3] - times[2] == pytest.approx(spacing(10) - batch._LATE_SECONDS, abs=1e-6)


def test_a_live_lookup_budget_is_not_charged_twice(sandbox_server, files):
    """With [rates] lookups_per_second set for live traffic, each batch Lookup still takes one permit (the batch's,
    at its own rate and no burst) from the one lookups bucket: the live burst never lets a batch run ahead."""
    clock = FakeClock()
    stores, budget = recording(MemoryStore(clock=clock))
    settings = Settings(rates={"lookups_per_second": 100})
    gate = Gatekeeper(sandbox_server.client(), settings=settings, stores=stores, clock=clock, sleep=clock.sleep)
    src = files.csv("phone\n" + "\n".join(numbers(10)) + "\n")
    summary = enrich_file(gate, src, files.out, rate_per_second=2, concurrency=4, clock=clock, sleep=clock.sleep)
    assert summary.looked_up == 10 == len(budget.permits)
    assert {(p["bucket"], p["burst"]) for p in budget.permits} == {(LOOKUPS, 1)}
    due = sorted(p["due"] for p in budget.permits)
    assert min(b - a for a, b in itertools.pairwise(due)) >= spacing(2) - 1e-6  # 100/s would allow a burst
    assert summary.elapsed_seconds >= 9 * spacing(2)


def test_a_429_pauses_the_shared_bucket_and_the_row_is_retried(sandbox_server, files):
    """Twilio's 429 with Retry-After: the pause goes to the store (every process honours it), the next permit
    comes after it, and the row is written with its facts, not as rate-limited."""
    clock = FakeClock()
    stores, budget = recording(MemoryStore(clock=clock))
    gate = Gatekeeper(sandbox_server.client(), stores=stores, clock=clock, sleep=clock.sleep)
    sandbox_server.sandbox.add_fault("too_many_requests", route="lookup", times=1, retry_after_seconds=3)
    src = files.csv("phone\n" + "\n".join(numbers(3)) + "\n")
    summary = enrich_file(gate, src, files.out, rate_per_second=10, concurrency=1, clock=clock, sleep=clock.sleep)
    assert [bucket for bucket, _ in budget.pauses] == [LOOKUPS]
    assert summary.ok == 3 and summary.looked_up == 3 and summary.errors == 0
    records = files.records()
    assert all(r["facts"]["source"] == "lookup" for r in records)
    assert not [reason for r in records for reason in r["reasons"] if reason.startswith("lookup:")]
    first, retry = budget.permits[0]["due"], budget.permits[1]["due"]
    assert retry - first >= 3
    assert sum(sandbox_server.sandbox.lookup_counts().values()) == 4  # the refused request and three answered


class CountingHttpClient(SandboxHttpClient):  # type: ignore[misc]
    """The sandbox transport, counting requests in flight at once."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    def request(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            return super().request(*args, **kwargs)
        finally:
            with self._lock:
                self.in_flight -= 1


def test_at_most_concurrency_lookups_are_in_flight(sandbox_server, make_gate, files):
    """With slow Lookups, requests in flight reach but never pass `concurrency`."""
    sandbox_server.sandbox.add_fault("latency", route="lookup", latency_seconds=0.05)
    http = CountingHttpClient(sandbox_server.url)
    client = Client(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, environment={}, http_client=http)
    gate = make_gate()
    gate = Gatekeeper(client, stores=gate.stores)
    src = files.csv("phone\n" + "\n".join(numbers(24)) + "\n")
    summary = enrich_file(gate, src, files.out, rate_per_second=1000, concurrency=4)
    assert summary.looked_up == 24
    assert http.peak == 4


@pytest.mark.redis
def test_two_runs_on_one_redis_share_one_budget(sandbox_server, redis_url, redis_prefix, redis_store, files):
    """Two runs (as two hosts would) on one Redis prefix at 20/s together stay within 20 in any second."""
    other = RedisStore.from_url(redis_url, prefix=redis_prefix)  # a second connection pool, like another host
    try:
        gates = [Gatekeeper(sandbox_server.client(), stores=Stores.using(s)) for s in (redis_store, other)]
        inputs = [files.csv("phone\n" + "\n".join(numbers(20, start=s)) + "\n", name=f"{s}.csv") for s in (4000, 5000)]

        def run(i: int) -> Any:
            out = files.root / f"out{i}.jsonl"
            return enrich_file(gates[i], inputs[i], out, rate_per_second=20, concurrency=8)

        summaries = run_threads(2, run)
    finally:
        other.close()
    assert [s.looked_up for s in summaries] == [20, 20]
    times = [r.received_at for r in sandbox_server.sandbox.requests("lookup")]
    assert len(times) == 40
    assert most_in_one_second(times) <= 20
    assert max(times) - min(times) >= 39 * spacing(20) - 0.05  # one shared budget, not 20/s each


@pytest.mark.parametrize(
    ("settings", "purpose", "fields", "advance_seconds", "first", "second"),
    [
        pytest.param({}, "notify", None, 60, 6, 0, id="fresh-cache"),
        pytest.param({}, "notify", ("line_type_intelligence", "sms_pumping_risk"), 7200, 6, 6, id="stale-field"),
        pytest.param({}, "mfa", None, 2 * 86_400, 6, 6, id="past-max-age"),
        pytest.param({"cache": {"enabled": False}}, "notify", None, 60, 8, 8, id="no-cache"),
        pytest.param({"lookup": {"enabled": False}}, "notify", None, 60, 0, 0, id="lookup-off"),
    ],
)
def test_a_row_takes_a_permit_exactly_when_it_costs_a_lookup(
    sandbox_server, files, settings, purpose, fields, advance_seconds, first, second
):
    """Permits match Lookups made, whatever the cache holds: fresh, a stale field, past max age, off."""
    clock = FakeClock()
    stores, limiter = recording(MemoryStore(clock=clock))
    gate = Gatekeeper(
        sandbox_server.client(), settings=Settings(**settings), stores=stores, clock=clock, sleep=clock.sleep
    )
    wanted = numbers(6)
    src = files.csv("phone\n" + "\n".join([*wanted, *wanted[:2]]) + "\n")
    options: dict[str, Any] = {"purpose": purpose, "fields": fields, "clock": clock, "sleep": clock.sleep}

    enrich_file(gate, src, files.root / "first.jsonl", **options)
    assert len(limiter.permits) == sum(sandbox_server.sandbox.lookup_counts().values()) == first
    clock.advance(advance_seconds)
    limiter.permits.clear()
    sandbox_server.sandbox.reset()
    summary = enrich_file(gate, src, files.out, **options)
    assert len(limiter.permits) == sum(sandbox_server.sandbox.lookup_counts().values()) == second
    assert summary.looked_up == second


def test_opted_out_numbers_are_refused_without_a_lookup(sandbox_server, make_gate, files):
    """An opted-out number is refused by the gate's suppression step and costs no Lookup."""
    gate = make_gate()
    gate.opt_out("+14155550100")
    enrich_file(gate, files.csv("phone\n+14155550100\n"), files.out, rate_per_second=1000)
    (record,) = files.records()
    assert record["status"] == "refused" and record["reasons"] == ["opted_out:account"] and record["facts"] is None
    assert sandbox_server.sandbox.lookup_counts() == {}


def test_rows_read_ahead_of_the_records_written_stay_within_twice_concurrency(monkeypatch, make_gate, files):
    """However long the file, at most 2 x concurrency rows are in the pool ahead of the records written."""
    submitted = 0

    class CountingPool(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            nonlocal submitted
            submitted += 1
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(batch, "ThreadPoolExecutor", CountingPool)
    ahead: list[int] = []
    src = files.csv("phone\n" + "\n".join(numbers(150)) + "\n")
    enrich_file(
        make_gate(),
        src,
        files.out,
        concurrency=3,
        rate_per_second=10_000,
        progress=lambda e: ahead.append(submitted - e.so_far.rows),
    )
    assert submitted == 150 and len(ahead) == 150
    assert max(ahead) <= 2 * 3
