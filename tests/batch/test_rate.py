"""The Lookup budget and the concurrency bound: fake-clock permit schedules, in-flight counts, a shared Redis."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support import FakeClock, run_threads
from twilio.rest import Client

from gatekeeper import batch
from gatekeeper.batch import BURST, RATE_BUCKET, BatchError, enrich_file
from gatekeeper.errors import StoreUnavailable
from gatekeeper.gate import Gatekeeper
from gatekeeper.policy import Policy
from gatekeeper.sandbox import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, SandboxHttpClient, SandboxServer, create_app
from gatekeeper.settings import Settings
from gatekeeper.stores.base import Stores
from gatekeeper.stores.memory import MemoryStore
from gatekeeper.stores.redis import RedisStore


def numbers(count: int, start: int = 2000) -> list[str]:
    return [f"+1415555{start + i:04d}" for i in range(count)]


def most_in_one_second(times: list[float]) -> int:
    """The largest number of events in any closed 1-second window."""
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u <= t + 1.0 + 1e-9) for i, t in enumerate(times)), default=0)


class RecordingLimiter:
    """A RateLimiter that records every permit: when it is due (now + wait) and what was asked."""

    def __init__(self, inner: Any, *, fail_after: int | None = None) -> None:
        self.inner = inner
        self.fail_after = fail_after
        self.permits: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def reserve(self, bucket: str, *, rate_per_second: float, burst: int, now: float) -> float:
        with self._lock:
            if self.fail_after is not None and len(self.permits) >= self.fail_after:
                raise StoreUnavailable("Redis store unavailable: ConnectionError")
            wait = self.inner.reserve(bucket, rate_per_second=rate_per_second, burst=burst, now=now)
            self.permits.append(
                {"bucket": bucket, "rate": rate_per_second, "burst": burst, "due": now + wait, "wait": wait}
            )
            return float(wait)


def test_one_worker_spaces_lookups_by_the_rate_on_a_fake_clock(files):
    """concurrency=1, rate 4/s: Lookups reach Twilio 0.25 s apart in fake time, and nothing really sleeps."""
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
    assert min(gaps) == pytest.approx(0.25)
    assert most_in_one_second(times) <= 4 + BURST
    assert sum(clock.sleeps) == pytest.approx(11 * 0.25)
    assert summary.elapsed_seconds == pytest.approx(11 * 0.25)
    assert summary.achieved_rate == pytest.approx(12 / (11 * 0.25))


def test_concurrent_permits_never_exceed_the_rate_and_only_lookups_take_them(sandbox_server, files):
    """8 workers at 5/s: one permit per Lookup (none for cache hits, duplicates or local refusals), ≤ rate+burst/s."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    stores = Stores.using(store)
    limiter = RecordingLimiter(store)
    stores.rate_limits = limiter
    policy = {"notify": Policy(deny_countries=frozenset({"GG"}))}
    gate = Gatekeeper(sandbox_server.client(), stores=stores, policy=policy, clock=clock, sleep=clock.sleep)
    warm, fresh = numbers(10), numbers(30, start=3000)
    enrich_file(gate, files.csv("phone\n" + "\n".join(warm) + "\n", name="warm.csv"), files.root / "warm.jsonl")
    limiter.permits.clear()
    clock.sleeps.clear()
    sandbox_server.sandbox.reset()

    rows = [*warm, *(n for n in fresh for _ in range(3)), "+447911123456", "+1 415 555", "hello"]
    src = files.csv("phone\n" + "\n".join(rows) + "\n")
    summary = enrich_file(gate, src, files.out, rate_per_second=5, concurrency=8, clock=clock, sleep=clock.sleep)

    assert sandbox_server.sandbox.lookup_counts() == dict.fromkeys(fresh, 1)
    assert len(limiter.permits) == 30 == summary.looked_up
    assert summary.cached == 10 + 60 and summary.refused == 3
    assert {(p["bucket"], p["rate"], p["burst"]) for p in limiter.permits} == {(RATE_BUCKET, 5, BURST)}
    due = [p["due"] for p in limiter.permits]
    assert most_in_one_second(due) <= 5 + BURST
    assert max(due) - min(due) == pytest.approx(29 / 5)
    assert sorted(clock.sleeps) == sorted(p["wait"] for p in limiter.permits if p["wait"] > 0)  # each wait slept


def test_a_lost_rate_limiter_stops_the_run_and_keeps_what_was_written(sandbox_server, files):
    """If permits cannot be had (Redis down) the run stops with BatchError rather than exceed the budget."""
    store = MemoryStore()
    stores = Stores.using(store)
    stores.rate_limits = RecordingLimiter(store, fail_after=3)
    gate = Gatekeeper(sandbox_server.client(), stores=stores)
    src = files.csv("phone\n" + "\n".join(numbers(10)) + "\n")
    with pytest.raises(BatchError, match="rate limiter"):
        enrich_file(gate, src, files.out, rate_per_second=1000, concurrency=1)
    assert len(files.records()) == 3
    assert sum(sandbox_server.sandbox.lookup_counts().values()) == 3


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
    """Two runs (as two hosts would) on one Redis prefix at 20/s together stay within 20/s (+ burst)."""
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
    assert most_in_one_second(times) <= 20 + BURST + 2  # + 2: thread wake-up jitter after each permit
    assert max(times) - min(times) >= 39 / 20 - 0.2  # one shared budget, not 20/s each


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
    store = MemoryStore(clock=clock)
    stores = Stores.using(store)
    limiter = RecordingLimiter(store)
    stores.rate_limits = limiter
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
