"""The async Redis store: the whole store contract, one key layout shared with the blocking store, StoreUnavailable
when Redis is gone, and the async and blocking gates honouring each other's opt-outs through one Redis.

The contract is written for blocking stores, so it runs here through :class:`Blocking`: every verb of the async
store carried out on one event loop in a background thread (the contract calls verbs from many threads at once,
which a loop driven from the test thread could not serve), ``fill_lock`` as a blocking context manager.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

import pytest
from stores.contract import E164, FROM, T0, StoreContract, audit_entry, entry
from support import PrivateRedis, drop_prefix, free_port, stored_redis_text

from gatekeeper import Action, Gatekeeper, Settings, Stores
from gatekeeper.aio import AsyncGatekeeper, AsyncStores
from gatekeeper.errors import InvalidArgument, InvalidArgumentType, StoreUnavailable
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.base import (
    ACCOUNT_SCOPE,
    AuditLog,
    FailureStore,
    IdempotencyStore,
    LookupCache,
    OptOutStore,
    RateLimiter,
    StatusStore,
    lookup_key,
    subject_key,
    version_reader,
)
from gatekeeper.stores.redis import RedisStore
from gatekeeper.stores.redis_async import AsyncRedisStore
from gatekeeper.wiring import build_stores

T = TypeVar("T")
PROTOCOLS = (LookupCache, OptOutStore, FailureStore, IdempotencyStore, StatusStore, RateLimiter, AuditLog)
#: Every verb of the store protocols, by name.
VERBS = sorted({name for proto in PROTOCOLS for name in vars(proto) if not name.startswith("_")})
#: A mobile in the sandbox's number fixtures.
NUMBER = "+14155550100"
#: A bound on any one call through the facade: a hang fails the test instead of the suite.
CALL_TIMEOUT_SECONDS = 30.0


# -- the blocking facade ---------------------------------------------------------------------
class Blocking:
    """Any async store as a blocking one: each public method of ``target`` runs on this facade's own event loop
    (a daemon thread) and its caller waits for the answer. An awaitable answer is awaited; an async context
    manager (``fill_lock``) comes back as a blocking one. Errors propagate unchanged, StoreUnavailable included.

    Only what ``target`` has is offered (``hasattr`` answers as for the target), so the store Protocols'
    runtime checks, and the optional ``SuppressionVersion``, see exactly the async store's own verbs.
    """

    def __init__(self, target: Any) -> None:
        self._target = target
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="async-store-loop", daemon=True)
        self._thread.start()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        method = getattr(self._target, name)  # AttributeError when the async store has no such verb
        if not callable(method):
            raise AttributeError(f"{name} is not a verb of {type(self._target).__name__}")

        def blocking(*args: Any, **kwargs: Any) -> Any:
            async def call() -> Any:
                answer = method(*args, **kwargs)  # called on the loop, like any coroutine method would be
                return await answer if inspect.isawaitable(answer) else answer

            answer = self.wait(call())
            return BlockingContext(self, answer) if hasattr(answer, "__aenter__") else answer

        blocking.__name__ = name
        return blocking

    def wait(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the facade's loop; its result, or its exception raised here."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=CALL_TIMEOUT_SECONDS)
        except concurrent.futures.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            future.cancel()
            raise

    def shutdown_loop(self) -> None:
        """Stop the loop and its thread, finalizing any async generator still open (a lock never exited)."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()


class BlockingContext:
    """An async context manager entered and exited on a :class:`Blocking` facade's loop."""

    def __init__(self, facade: Blocking, manager: Any) -> None:
        self._facade = facade
        self._manager = manager

    def __enter__(self) -> Any:
        return self._facade.wait(self._manager.__aenter__())

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        result: bool | None = self._facade.wait(self._manager.__aexit__(exc_type, exc, tb))
        return result


@pytest.fixture
def async_store(redis_url: str, redis_prefix: str) -> Iterator[Blocking]:
    """An AsyncRedisStore with a fresh key prefix behind a blocking facade; its keys are deleted afterwards."""
    facade = Blocking(AsyncRedisStore.from_url(redis_url, prefix=redis_prefix))
    try:
        yield facade
    finally:
        facade.close()
        facade.shutdown_loop()
        drop_prefix(redis_url, redis_prefix)


def run_with_store(url: str, prefix: str, body: Callable[[AsyncRedisStore], Awaitable[T]]) -> T:
    """``body`` with an AsyncRedisStore, in a fresh event loop; the store is closed inside that loop."""

    async def main() -> T:
        store = AsyncRedisStore.from_url(url, prefix=prefix)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


# -- 1. the contract --------------------------------------------------------------------------
class TestAsyncRedisContract(StoreContract):
    @pytest.fixture
    def store(self, async_store: Blocking) -> Blocking:
        return async_store

    @pytest.fixture
    def pass_time(self) -> Callable[[float], None]:
        # Redis expires keys on its own clock: a real (short) wait is the only way to see it.
        return time.sleep

    @pytest.fixture
    def now(self) -> Callable[[], float]:
        return time.time

    @pytest.fixture
    def stored_text(self, redis_url: str, redis_prefix: str) -> Callable[[], str]:
        return lambda: stored_redis_text(redis_url, redis_prefix)


def test_every_verb_is_awaited_not_threaded() -> None:
    """Each protocol verb is a coroutine (fill_lock an async context manager), so the async gate awaits it in
    its loop rather than handing it to a worker thread, and the contract above ran the async code."""
    for name in VERBS:
        method = getattr(AsyncRedisStore, name)
        if name == "fill_lock":
            assert inspect.isasyncgenfunction(inspect.unwrap(method)), name
        else:
            assert inspect.iscoroutinefunction(method), name


def test_secret_and_erase_are_coroutines() -> None:
    """The optional verbs (SecretKeeper, Erasure) are awaited like the rest."""
    assert inspect.iscoroutinefunction(AsyncRedisStore.secret)
    assert inspect.iscoroutinefunction(AsyncRedisStore.erase)


def test_the_async_store_watches_consent_and_never_makes_the_loop_wait(
    sandbox_server: SandboxServer, redis_store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    """Its version is the consent watch's (``test_redis_watch``), read without waiting on Redis: untrusted while
    the watch connects in a thread of its own, then standing. Through an AsyncGatekeeper a repeated number is then
    screened by the watch alone, and another host's STOP (a blocking store on the same keys) refuses the next send."""
    assert inspect.iscoroutinefunction(AsyncRedisStore.suppression_version)

    async def body(store: AsyncRedisStore) -> None:
        assert version_reader(store, "opt_outs") is not None and version_reader(store, "failures") is not None
        assert await store.suppression_version() != await store.suppression_version()  # Redis is read meanwhile
        give_up = time.monotonic() + 5
        while await store.suppression_version() != await store.suppression_version():
            assert time.monotonic() < give_up, "the watch never connected"
            await asyncio.sleep(0.01)  # the watch's thread connecting to Redis: real time, not a clock's
        screenings: list[str] = []
        screening = store.screening

        async def counted(e164: str, *args: Any, **kwargs: Any) -> tuple[str | None, str | None]:
            screenings.append(e164)
            return await screening(e164, *args, **kwargs)

        store.screening = counted  # type: ignore[method-assign]
        client = sandbox_server.async_client()
        try:
            agate = AsyncGatekeeper(client, stores=Stores.using(store))
            for _ in range(3):  # fetched; the facts from memory and the route kept; found clear under the route
                assert (await agate.decide(NUMBER)).action is Action.SMS
            screened = len(screenings)
            assert [(await agate.decide(NUMBER)).action for _ in range(5)] == [Action.SMS] * 5
            assert len(screenings) == screened  # the watch vouched: no screening read
            assert redis_store.opt_out(NUMBER, source="sms:STOP", at=T0) is True
            assert (await agate.decide(NUMBER)).twilio_code == 21610
            assert len(screenings) == screened + 1
        finally:
            await client.http_client.close()

    run_with_store(redis_url, redis_prefix, body)


def test_facade_hides_no_error(async_store: Blocking) -> None:
    """The facade raises what the async store raises: a bad argument, a missing verb, and StoreUnavailable from
    a verb or from entering fill_lock, so the contract cannot pass on errors swallowed."""
    from gatekeeper.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        async_store.reserve("b", rate_per_second=0, burst=1, now=T0)
    with pytest.raises(AttributeError):
        async_store.no_such_verb  # noqa: B018 - the lookup itself is what is tested
    nowhere = Blocking(AsyncRedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_seconds=0.5))
    try:
        with pytest.raises(StoreUnavailable):
            nowhere.opted_out_scope(E164, [ACCOUNT_SCOPE])
        with pytest.raises(StoreUnavailable), nowhere.fill_lock("k", ttl_seconds=5, wait_seconds=0.05):
            pytest.fail("entered a lock on a Redis that is not there")
    finally:
        nowhere.close()
        nowhere.shutdown_loop()


# -- 2. one key layout for both kinds of store -----------------------------------------------
def test_opt_outs_are_shared_both_ways(redis_store: RedisStore, redis_url: str, redis_prefix: str) -> None:
    """An opt-out written by either store is seen by the other on the same prefix, with one consent history."""

    async def body(aio: AsyncRedisStore) -> None:
        assert redis_store.opt_out(E164, source="sms:STOP", at=T0) is True
        assert await aio.opted_out_scope(E164, [ACCOUNT_SCOPE, FROM]) == ACCOUNT_SCOPE
        assert await aio.opt_out(E164, source="sms:STOP", at=T0 + 1) is False  # already there, written by the other
        assert await aio.opt_in(E164, source="sms:START", at=T0 + 2) is True
        assert redis_store.opted_out_scope(E164, [ACCOUNT_SCOPE, FROM]) is None
        assert await aio.opt_out(E164, FROM, source="sms:STOP", at=T0 + 3) is True
        assert redis_store.opted_out_scope(E164, [ACCOUNT_SCOPE, FROM]) == FROM
        assert redis_store.opted_out_scope(E164, [ACCOUNT_SCOPE]) is None
        seen_async = [(c.scope, c.opted_out, c.source, c.at) for c in await aio.consent_history(E164)]
        seen_blocking = [(c.scope, c.opted_out, c.source, c.at) for c in redis_store.consent_history(E164)]
        assert (
            seen_async
            == seen_blocking
            == [
                (FROM, True, "sms:STOP", T0 + 3),
                (ACCOUNT_SCOPE, False, "sms:START", T0 + 2),
                (ACCOUNT_SCOPE, True, "sms:STOP", T0 + 1),
                (ACCOUNT_SCOPE, True, "sms:STOP", T0),
            ]
        )

    run_with_store(redis_url, redis_prefix, body)


def test_idempotency_claims_are_shared_both_ways(redis_store: RedisStore, redis_url: str, redis_prefix: str) -> None:
    """A claim made by either store is seen by the other, pending then settled; only its owner's token settles it;
    and blocking threads and coroutines racing for one key have exactly one winner between them."""

    async def body(aio: AsyncRedisStore) -> None:
        mine = redis_store.claim("k1", "fp", ttl_seconds=60)
        assert mine.won
        other = await aio.claim("k1", "fp2", ttl_seconds=60)
        assert (other.won, other.state, other.fingerprint) == (False, "pending", "fp")
        await aio.complete("k1", "not-the-token", b"forged", ttl_seconds=60)
        assert (await aio.claim("k1", "fp", ttl_seconds=60)).state == "pending"
        assert mine.token is not None
        await aio.complete("k1", mine.token, b'{"ok": 1}', ttl_seconds=60)  # the owner's token, from either kind
        done = redis_store.claim("k1", "fp", ttl_seconds=60)
        assert (done.won, done.state, done.result) == (False, "done", b'{"ok": 1}')

        theirs = await aio.claim("k2", "fp", ttl_seconds=60)
        assert theirs.won and theirs.token is not None
        assert redis_store.claim("k2", "fp", ttl_seconds=60).state == "pending"
        await aio.mark_unknown("k2", theirs.token, ttl_seconds=60)
        assert redis_store.claim("k2", "fp", ttl_seconds=60).state == "unknown"

        abandoned = await aio.claim("k3", "fp", ttl_seconds=60)
        assert abandoned.token is not None
        await aio.abandon("k3", abandoned.token)
        assert redis_store.claim("k3", "fp", ttl_seconds=60).won

        racers = [aio.claim("k4", "fp", ttl_seconds=60) for _ in range(10)]
        racers += [asyncio.to_thread(redis_store.claim, "k4", "fp", ttl_seconds=60) for _ in range(10)]
        claims = await asyncio.gather(*racers)
        assert sum(1 for c in claims if c.won) == 1

    run_with_store(redis_url, redis_prefix, body)


def test_lookup_cache_and_fill_lock_are_shared_both_ways(
    redis_store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    """A cached Lookup put by either store is read equal by the other, and one fill lock serves both kinds."""
    key, other_key = lookup_key(E164, "abc", "US"), lookup_key(E164, "def", "US")

    async def body(aio: AsyncRedisStore) -> None:
        redis_store.put_lookup(key, entry(), ttl_seconds=60)
        assert await aio.get_lookup(key) == entry()
        await aio.put_lookup(other_key, entry("landline", negative=True), ttl_seconds=60)
        assert redis_store.get_lookup(other_key) == entry("landline", negative=True)

        with redis_store.fill_lock(key, ttl_seconds=5, wait_seconds=1) as held:
            assert held is True
            async with aio.fill_lock(key, ttl_seconds=5, wait_seconds=0.05) as got:
                assert got is False
        async with aio.fill_lock(key, ttl_seconds=5, wait_seconds=1) as held:
            assert held is True
            with redis_store.fill_lock(key, ttl_seconds=5, wait_seconds=0.05) as got:
                assert got is False
        with redis_store.fill_lock(key, ttl_seconds=5, wait_seconds=0.05) as again:
            assert again is True  # the async store released its lock

    run_with_store(redis_url, redis_prefix, body)


def test_failures_statuses_rates_and_audit_are_shared(
    redis_store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    """The rest of the key layout is one too: failures counted once per event whoever records them, suppressions,
    statuses that never move back, one rate budget and one audit stream."""

    async def body(aio: AsyncRedisStore) -> None:
        assert redis_store.record_failure(E164, "SM1:undelivered", at=T0, window_seconds=100) == 1
        assert await aio.record_failure(E164, "SM1:undelivered", at=T0 + 1, window_seconds=100) == 1
        assert await aio.record_failure(E164, "SM2:undelivered", at=T0 + 2, window_seconds=100) == 2
        assert redis_store.suppression(E164, now=T0 + 3, window_seconds=100, threshold=2) == "failures:2"
        assert await aio.lift_suppression(E164) is True
        assert redis_store.suppression(E164, now=T0 + 3, window_seconds=100, threshold=1) is None
        await aio.suppress(E164, ttl_seconds=60, reason="manual", at=T0)
        assert redis_store.suppression(E164, now=T0, window_seconds=100, threshold=99) == "suppressed:manual"

        sid = "SM" + "b" * 32
        assert redis_store.apply_status(sid, "delivered", 5, error_code=None, at=T0, ttl_seconds=60) is True
        assert await aio.apply_status(sid, "sent", 3, error_code=None, at=T0 + 1, ttl_seconds=60) is False
        assert await aio.apply_status(sid, "undelivered", 6, error_code=30003, at=T0 + 2, ttl_seconds=60) is True
        record = redis_store.status_of(sid)
        assert record is not None
        assert (record.status, record.error_code) == ("undelivered", 30003)
        assert await aio.status_of(sid) == record

        waits = [redis_store.reserve("b", rate_per_second=10, burst=2, now=T0)]
        waits.append(await aio.reserve("b", rate_per_second=10, burst=2, now=T0))
        waits.append(await aio.reserve("b", rate_per_second=10, burst=2, now=T0))
        assert waits[:2] == [0.0, 0.0]
        assert waits[2] == pytest.approx(0.1, abs=0.03)  # the third permit of one shared budget

        redis_store.record(audit_entry(T0))
        redis_store.flush()  # the audit is written behind: sent now, before the async store's record
        await aio.record(audit_entry(T0 + 1))
        assert [r["at"] for r in await aio.recent(5)] == [r["at"] for r in redis_store.recent(5)] == [T0 + 1, T0]

    run_with_store(redis_url, redis_prefix, body)


def test_secrets_are_shared_both_ways(redis_store: RedisStore, redis_url: str, redis_prefix: str) -> None:
    """Blocking and async stores on one prefix share each secret, whichever makes it, so both file a number's
    consent under one subject key; the async store also caches what it read."""
    import redis

    async def body(aio: AsyncRedisStore) -> None:
        made = await aio.secret("consent")  # the async store makes it
        assert redis_store.secret("consent") == made
        assert redis_store.secret("audit") == await aio.secret("audit")  # the blocking one makes this one
        assert await aio.secret("consent") is made  # kept, not read again
        key = f"{redis_prefix}optout:{{{subject_key(made, E164)}}}"
        await aio.opt_out(E164, source="sms:STOP", at=T0)
        with redis.Redis.from_url(redis_url) as raw:
            assert raw.exists(key) == 1

    run_with_store(redis_url, redis_prefix, body)


def test_erase_by_the_async_store_is_seen_by_the_blocking_one(
    redis_store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    """What the blocking store wrote about a number, the async store erases: the blocking store then finds no
    Lookup answer, failure, status or audit record of it, only the tombstone; nothing under the prefix names it."""
    key, sid = lookup_key(E164, "abc", "US"), "SM" + "c" * 32
    redis_store.put_lookup(key, entry(), ttl_seconds=60)
    redis_store.opt_in(E164, source="sms:START", at=T0)
    redis_store.record_failure(E164, "SM1:failed", at=T0, window_seconds=100)
    redis_store.apply_status(sid, "delivered", 5, error_code=None, at=T0, to_hash="h", ttl_seconds=60)
    redis_store.record(audit_entry(T0))
    redis_store.record(audit_entry(T0 + 1, "other"))
    redis_store.flush()  # the audit is written behind: what another process queues lands within its linger

    async def body(aio: AsyncRedisStore) -> None:
        await aio.erase(E164, to_hash="h", at=T0 + 5)

    run_with_store(redis_url, redis_prefix, body)
    assert redis_store.get_lookup(key) is None
    assert redis_store.suppression(E164, now=T0 + 1, window_seconds=100, threshold=1) is None
    assert redis_store.status_of(sid) is None
    assert [r["to_hash"] for r in redis_store.recent(10)] == ["other"]
    assert redis_store.opted_out_scope(E164, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE
    assert [(c.e164, c.source, c.at) for c in redis_store.consent_history(E164)] == [(E164, "erased", T0 + 5)]
    assert E164.lstrip("+") not in stored_redis_text(redis_url, redis_prefix)


def test_audit_retention_of_the_async_store(redis_store: RedisStore, redis_url: str, redis_prefix: str) -> None:
    """AsyncRedisStore.from_url takes audit_max_age_seconds: its record trims what is older (by Redis's clock) and
    sets the stream to expire with its newest record; its recent hides what the blocking store keeps showing."""
    import redis

    stream = f"{redis_prefix}audit"
    with redis.Redis.from_url(redis_url) as raw:
        seconds, _ = raw.time()
        raw.xadd(stream, {"e": json.dumps(audit_entry(T0, "old").as_dict())}, id=f"{seconds * 1000 - 90_000}-0")

    async def body(aio: AsyncRedisStore) -> list[str]:
        hidden = [r["to_hash"] for r in await aio.recent(10)]
        await aio.record(audit_entry(T0, "new"))
        return hidden

    async def main() -> list[str]:
        store = AsyncRedisStore.from_url(redis_url, prefix=redis_prefix, audit_max_age_seconds=60)
        try:
            return await body(store)
        finally:
            await store.close()

    assert asyncio.run(main()) == []
    assert [r["to_hash"] for r in redis_store.recent(10)] == ["new"]
    with redis.Redis.from_url(redis_url) as raw:
        assert 59_000 < raw.pttl(stream) <= 60_000


# -- 3. Redis gone ---------------------------------------------------------------------------
def every_verb(store: AsyncRedisStore) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of each protocol verb; ``fill_lock`` is entered."""
    key = lookup_key(E164, "abc", "US")

    async def fill_lock() -> Any:
        async with store.fill_lock(key, ttl_seconds=5, wait_seconds=0.05) as got:
            return got

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "get_lookup": lambda: store.get_lookup(key),
        "put_lookup": lambda: store.put_lookup(key, entry(), ttl_seconds=60),
        "fill_lock": fill_lock,
        "opt_out": lambda: store.opt_out(E164, source="t", at=T0),
        "opt_in": lambda: store.opt_in(E164, source="t", at=T0),
        "opted_out_scope": lambda: store.opted_out_scope(E164, [ACCOUNT_SCOPE]),
        "consent_history": lambda: store.consent_history(E164),
        "record_failure": lambda: store.record_failure(E164, "SM1:failed", at=T0, window_seconds=60),
        "suppress": lambda: store.suppress(E164, ttl_seconds=60, reason="manual", at=T0),
        "suppression": lambda: store.suppression(E164, now=T0, window_seconds=60, threshold=3),
        "lift_suppression": lambda: store.lift_suppression(E164),
        "claim": lambda: store.claim("k", "fp", ttl_seconds=5),
        "complete": lambda: store.complete("k", "token", b"r", ttl_seconds=5),
        "abandon": lambda: store.abandon("k", "token"),
        "mark_unknown": lambda: store.mark_unknown("k", "token", ttl_seconds=5),
        "apply_status": lambda: store.apply_status("SM1", "sent", 3, error_code=None, at=T0, ttl_seconds=60),
        "status_of": lambda: store.status_of("SM1"),
        "reserve": lambda: store.reserve("b", rate_per_second=10, burst=1, now=T0),
        "record": lambda: store.record(audit_entry(T0)),
        "recent": lambda: store.recent(3),
    }
    assert sorted(calls) == VERBS  # a verb added to the protocols must be added here too
    return calls


async def timed_failure(call: Callable[[], Awaitable[Any]]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        await call()
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def test_stopped_redis_makes_every_verb_raise_store_unavailable(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """With its server stopped, every verb raises StoreUnavailable (a redis-py error as its cause, never raw),
    each within the configured timeout; once the server is back the same store serves again. Except ``record``:
    the audit is written behind (``stores.write_behind``) and never blocks a send, so it returns at once and its
    record is dropped with a warning when the batch fails."""
    timeout = 0.5

    async def main() -> None:
        store = AsyncRedisStore.from_url(private_redis.url, timeout_seconds=timeout)
        try:
            assert await store.opt_out(E164, source="t", at=T0) is True  # a pooled connection, then the server goes
            private_redis.stop()
            for name, call in every_verb(store).items():
                failure, took = await timed_failure(call)
                if name == "record":
                    assert failure is None and took < 0.05, (failure, took)
                    await store._audit.flush()
                    assert "1 audit records dropped" in caplog.text
                    continue
                assert isinstance(failure, StoreUnavailable), (name, failure)
                assert type(failure.__cause__).__module__.startswith("redis"), (name, failure.__cause__)
                assert took < timeout, (name, took)
            private_redis.start()  # same port, empty data set
            assert await store.opted_out_scope(E164, [ACCOUNT_SCOPE]) is None
            assert await store.opt_out(E164, source="t", at=T0) is True
        finally:
            await store.close()

    asyncio.run(main())


def test_silent_redis_makes_every_verb_raise_store_unavailable_within_the_timeout() -> None:
    """A server that takes connections and never answers (a hung Redis): every verb, all at once, raises
    StoreUnavailable after about the configured timeout, never a hang and never a raw redis or asyncio error."""
    timeout = 0.3
    with socket.socket() as silent:  # the kernel completes the handshakes; nobody ever reads or writes
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"

        async def main() -> tuple[list[tuple[BaseException | None, float]], float]:
            store = AsyncRedisStore.from_url(url, timeout_seconds=timeout)
            started = time.monotonic()
            try:
                every = asyncio.gather(*(timed_failure(every_verb(store)[name]) for name in VERBS))
                outcomes = await asyncio.wait_for(every, timeout * 10)  # a store without a timeout fails, not hangs
                return list(outcomes), time.monotonic() - started
            finally:
                await store.close()

        outcomes, took = asyncio.run(main())
    for name, (failure, _) in zip(VERBS, outcomes, strict=True):
        if name == "record":  # written behind: never waits on the store (see the stopped-Redis test)
            assert failure is None
            continue
        assert isinstance(failure, StoreUnavailable), (name, failure)
        assert "Timeout" in str(failure), (name, failure)
    waited = [t for name, (_, t) in zip(VERBS, outcomes, strict=True) if name != "record"]
    assert min(waited) >= timeout * 0.9  # it did wait for the server...
    assert took < timeout * 4  # ...but only about the configured timeout, not per retry or per verb


def test_consent_changes_are_one_transaction_each(private_redis: PrivateRedis) -> None:
    """An opt-out or opt-in and its history entry are written in one MULTI (no half-written change if the
    connection drops between them), as by the blocking store."""
    import redis

    with redis.Redis.from_url(private_redis.url) as probe:
        probe.config_resetstat()

        async def body(store: AsyncRedisStore) -> None:
            await store.opt_out(E164, source="sms:STOP", at=T0)
            await store.opt_in(E164, FROM, source="sms:START", at=T0 + 1)

        run_with_store(private_redis.url, "gk:", body)
        stats = probe.info("commandstats")
    assert (stats["cmdstat_multi"]["calls"], stats["cmdstat_exec"]["calls"]) == (2, 2)
    assert stats["cmdstat_lpush"]["calls"] == 2


def test_close_hangs_up(private_redis: PrivateRedis) -> None:
    """close() ends every connection the store opened: the server is left with none of them."""
    import redis

    def store_connections() -> int:
        with redis.Redis.from_url(private_redis.url) as probe:
            return len(probe.client_list()) - 1  # the probe's own connection is not the store's

    async def main() -> tuple[int, int]:
        store = AsyncRedisStore.from_url(private_redis.url)
        await asyncio.gather(*(store.claim(f"k{i}", "fp", ttl_seconds=5) for i in range(5)))  # a pool of several
        during = store_connections()
        await store.close()
        deadline = time.monotonic() + 2
        while (after := store_connections()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the server drops a connection on its next turn after the client's FIN
        return during, after

    during, after = asyncio.run(main())
    assert during >= 1
    assert after == 0


# -- 4. the async and blocking gates over one Redis ------------------------------------------
def test_async_gate_opt_out_refuses_the_blocking_gates_send(
    sandbox_server: SandboxServer, sandbox: Sandbox, redis_store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    """An opt-out taken by an AsyncGatekeeper over AsyncRedisStore refuses, with 21610, the next notify of a
    Gatekeeper over a blocking RedisStore on the same prefix, though that gate had routed the number before."""
    gate = Gatekeeper(sandbox_server.client(), stores=Stores.using(redis_store))
    assert gate.notify(NUMBER, "hi", from_=FROM).action is Action.SMS

    async def opt_out(store: AsyncRedisStore) -> None:
        client = sandbox_server.async_client()
        try:
            agate = AsyncGatekeeper(client, stores=Stores.using(store))
            assert await agate.opt_out(NUMBER, source="sms:STOP") is True
            assert await agate.is_opted_out(NUMBER) is True
        finally:
            await client.http_client.close()

    run_with_store(redis_url, redis_prefix, opt_out)
    refused = gate.notify(NUMBER, "hi", from_=FROM)
    assert (refused.action, refused.decision.twilio_code, refused.decision.reasons) == (
        Action.REFUSE,
        21610,
        ("opted_out:account",),
    )
    assert len(sandbox.messages()) == 1


def test_blocking_gate_opt_out_refuses_the_async_gates_send(
    sandbox_server: SandboxServer, sandbox: Sandbox, redis_store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    """The reverse: a Gatekeeper's opt-out, through a blocking RedisStore, refuses the next notify of an
    AsyncGatekeeper over AsyncRedisStore on the same prefix with 21610; an opt-in lets it send again."""
    gate = Gatekeeper(sandbox_server.client(), stores=Stores.using(redis_store))

    async def body(store: AsyncRedisStore) -> None:
        client = sandbox_server.async_client()
        try:
            agate = AsyncGatekeeper(client, stores=Stores.using(store))
            assert (await agate.notify(NUMBER, "hi", from_=FROM)).action is Action.SMS
            assert gate.opt_out(NUMBER, source="sms:STOP") is True
            refused = await agate.notify(NUMBER, "hi", from_=FROM)
            assert (refused.action, refused.decision.twilio_code, refused.decision.reasons) == (
                Action.REFUSE,
                21610,
                ("opted_out:account",),
            )
            assert gate.opt_in(NUMBER, source="sms:START") is True
            assert (await agate.notify(NUMBER, "hi", from_=FROM)).action is Action.SMS
        finally:
            await client.http_client.close()

    run_with_store(redis_url, redis_prefix, body)
    assert len(sandbox.messages()) == 2


def test_build_stores_asynchronous_gives_async_redis_backends(
    sandbox_server: SandboxServer, sandbox: Sandbox, redis_store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    """For a Redis URL, build_stores(asynchronous=True) puts one AsyncRedisStore in every role (the blocking
    build a RedisStore), and AsyncGatekeeper.from_settings over it writes where the blocking store reads."""
    settings = Settings(
        redis={"url": redis_url, "key_prefix": redis_prefix}, twilio={"sandbox_url": sandbox_server.url}
    )
    roles = ("cache", "opt_outs", "failures", "idempotency", "statuses", "rate_limits", "audit")

    blocking = build_stores(settings)
    try:
        assert all(type(getattr(blocking, role)) is RedisStore for role in roles)
    finally:
        for close in blocking.closers:
            close()

    async def main() -> None:
        stores = build_stores(settings, asynchronous=True)
        backend = stores.opt_outs
        assert isinstance(backend, AsyncRedisStore)
        assert all(getattr(stores, role) is backend for role in roles)
        assert stores.journal is not None  # a Redis store gets the webhooks' local journal
        assert stores.closers == [backend.close, stores.journal.close]
        agate = AsyncGatekeeper.from_settings(settings, stores=stores)
        try:
            assert await agate.opt_out(NUMBER) is True
            assert redis_store.opted_out_scope(NUMBER, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE
            assert (await agate.notify(NUMBER, "hi", from_=FROM)).decision.twilio_code == 21610
        finally:
            await agate.close()  # closes the store and the sandbox client's session

    asyncio.run(main())
    assert sandbox.messages() == []


# -- 5. one event loop; health --------------------------------------------------------------------
def test_a_second_event_loop_is_told_to_make_its_own_store(redis_url: str, redis_prefix: str) -> None:
    """redis.asyncio's connections belong to the loop that opened them: a store used from a second loop says
    so with InvalidArgument, for a verb, the fill lock and close, instead of a RuntimeError from deep inside."""
    store = AsyncRedisStore.from_url(redis_url, prefix=redis_prefix)

    async def first() -> None:
        assert await store.claim("k", "fp", ttl_seconds=5) is not None

    async def second() -> list[str]:
        said = []
        for attempt in (
            lambda: store.opted_out_scope(NUMBER, ["account"]),
            lambda: store.fill_lock("k", ttl_seconds=1, wait_seconds=0).__aenter__(),
            store.close,
        ):
            with pytest.raises(InvalidArgument) as exc:
                await attempt()
            said.append(str(exc.value))
        return said

    asyncio.run(first())
    said = asyncio.run(second())
    assert said == ["an AsyncRedisStore serves one event loop: make one store (and gate) per loop"] * 3
    drop_prefix(redis_url, redis_prefix)


def test_health_of_async_stores_is_awaited(private_redis: PrivateRedis) -> None:
    """AsyncStores.health awaits one probe per backend and tells a dead Redis from a live one; the blocking
    Stores.health refuses async backends with a typed error rather than report an unawaited probe healthy."""
    roles = {"opt_outs", "failures", "statuses", "idempotency"}

    async def main() -> tuple[dict[str, bool], dict[str, bool]]:
        store = AsyncRedisStore.from_url(private_redis.url, timeout_seconds=0.5)
        stores = Stores.using(store)
        try:
            alive = await AsyncStores(stores).health()
            private_redis.stop()
            dead = await AsyncStores(stores).health()
        finally:
            with contextlib.suppress(StoreUnavailable):
                await store.close()
        with pytest.raises(InvalidArgumentType, match="AsyncStores"):
            stores.health()
        return alive, dead

    alive, dead = asyncio.run(main())
    assert alive == dict.fromkeys(roles, True)
    assert dead == dict.fromkeys(roles, False)
