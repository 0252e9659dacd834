"""Gatekeeper on Redis under load, built from Settings as a deployment builds it, on each way Redis is run (one
server, a Cluster, behind a Sentinel): a thousand threads deciding one new number at once are all answered from
one Lookup, none refused; a pool too small for its wait refuses as ``store:pool_exhausted``, blocking or async. And
the lock under the Lookup cache's fill lock (``redis_connect.QueuedLock``): one thread of a process asks Redis at a
time.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import LockNotOwnedError
from support import PrivateRedis, drop_prefix, run_threads

from gatekeeper import Action, Gatekeeper, Settings
from gatekeeper.aio import AsyncGatekeeper
from gatekeeper.errors import StoreUnavailable
from gatekeeper.models import Decision
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.base import ACCOUNT_SCOPE
from gatekeeper.stores.redis import RedisStore
from gatekeeper.stores.redis_connect import AsyncWaitingCluster, RedisTarget, connect
from gatekeeper.wiring import redis_target

pytestmark = pytest.mark.redis

CROWD = 1000
NEW = "+14155550102"  # no one has looked it up under the test's fresh prefix
MOBILE = "+14155550100"
OTHER = "+14155550103"
T0 = 1_800_000_000.0


def from_config(table: dict[str, Any], sandbox_server: SandboxServer, **more: Any) -> Settings:
    """Settings as a deployment's file gives them: ``[redis]`` (whichever mode) ``table``, Twilio at the sandbox."""
    return Settings(redis={**table, **more}, twilio={"sandbox_url": sandbox_server.url})


def test_a_thousand_threads_deciding_one_new_number_make_one_lookup(
    redis_deployment: dict[str, Any],
    sandbox_server: SandboxServer,
    sandbox: Sandbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1,000 threads released at once decide one new number, every one of them inside the gate while its one Lookup
    is in flight (held until all are, as a Lookup taking a moment is): none is refused (no ``store:*`` reason),
    every one routes to SMS, the sandbox serves exactly one Lookup, and no thread waits out the fill lock's whole
    wait ([lookup] fill_wait_ms) to be answered."""
    gate = Gatekeeper.from_settings(from_config(redis_deployment, sandbox_server))
    count_lock, everyone_inside = threading.Lock(), threading.Event()
    inside: list[int] = [0]
    seen_by_lookup: list[int] = []  # how many threads were inside the gate as each Lookup went out

    def lookup_in_flight() -> None:
        everyone_inside.wait(timeout=30)
        seen_by_lookup.append(inside[0])

    racing = gate.derive(before_lookup=lookup_in_flight)

    def decide(_: int) -> Decision:
        with count_lock:
            inside[0] += 1
            if inside[0] == CROWD:
                everyone_inside.set()
        return racing.decide(NEW)

    try:
        with caplog.at_level(logging.WARNING, logger="gatekeeper"):
            decisions = run_threads(CROWD, decide)
    finally:
        gate.close()
    failed = Counter(f"{type(d).__name__}: {d}" for d in decisions if isinstance(d, Exception))
    assert failed == Counter()
    assert Counter(r for d in decisions for r in d.reasons if r.startswith("store:")) == Counter()
    assert seen_by_lookup == [CROWD]  # one Lookup, sent while all 1,000 were waiting on it
    assert sandbox.lookup_counts() == {NEW: 1}
    assert {d.action for d in decisions} == {Action.SMS}
    assert Counter(d.facts.source for d in decisions if d.facts) == {"lookup": 1, "cache": CROWD - 1}
    waited_out = [r.getMessage() for r in caplog.records if "not acquired in time" in r.getMessage()]
    assert len(waited_out) == 0, waited_out[:3]


@contextmanager
def every_connection_taken(store: Any) -> Iterator[list[int]]:
    """Every connection of the store's pools (each node's, on a cluster) taken by another thread and held until
    the block ends, as that thread's slow commands would hold them. Yields how many waits for a connection of those
    pools ran out meanwhile (a one-item list, counting)."""
    client = store._r  # the store's redis-py client, as connect() made it
    nodes = client.get_nodes() if isinstance(client, RedisCluster) else [client]
    pools = [getattr(node, "redis_connection", node).connection_pool for node in nodes]
    taken, done = threading.Event(), threading.Event()
    ran_out = [0]

    def counting(get: Callable[..., Any]) -> Callable[..., Any]:
        def waited(*args: Any, **kwargs: Any) -> Any:
            try:
                return get(*args, **kwargs)
            except queue.Empty:
                ran_out[0] += 1
                raise

        return waited

    def holder() -> None:
        held = [(pool, pool.get_connection()) for pool in pools for _ in range(pool.max_connections)]
        taken.set()
        done.wait(timeout=30)
        for pool, connection in held:
            pool.release(connection)

    thread = threading.Thread(target=holder)
    thread.start()
    assert taken.wait(timeout=10)
    for pool in pools:  # redis-py's blocking pool waits on its queue of connections
        pool.pool.get = counting(pool.pool.get)
    try:
        yield ran_out
    finally:
        for pool in pools:
            del pool.pool.get
        done.set()
        thread.join(timeout=10)


def test_a_pool_too_small_for_its_wait_refuses_as_pool_exhausted(
    redis_deployment: dict[str, Any], sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """max_connections = 1 with a 50 ms wait, the one connection held by another thread: a decision is refused
    ``store:pool_exhausted`` (the pool, not Redis, is what failed) and no Lookup is made for it; once the connection
    is free again, the same gate answers."""
    settings = from_config(redis_deployment, sandbox_server, max_connections=1, pool_timeout_ms=50)
    gate = Gatekeeper.from_settings(settings)
    try:
        assert gate.decide(MOBILE).action is Action.SMS  # connected: the pool's one connection made
        with every_connection_taken(gate.stores.opt_outs):
            refused = gate.decide(OTHER)
        assert (refused.action, refused.enforced) == (Action.REFUSE, True)
        assert [r for r in refused.reasons if r.startswith("store:")] == ["store:pool_exhausted"]
        assert sandbox.lookup_count(OTHER) == 0
        assert gate.decide(OTHER).action is Action.SMS
    finally:
        gate.close()


def test_every_verb_fails_as_pool_exhausted_after_one_wait(redis_deployment: dict[str, Any]) -> None:
    """Every connection held, each way the store talks to Redis (a command, a script, a lock, a MULTI, a plain
    pipeline) fails as ``pool_exhausted`` after exactly one wait of the pool run out. On a cluster, redis-py retries
    a MULTI on a full pool ten times (eleven waits, 6 s with a 200 ms wait) and answered a plain pipeline's full
    pool by re-reading the slots from nodes as full ("cannot be connected": ``unavailable``)."""
    prefix = redis_deployment["key_prefix"]
    target = redis_target(Settings(redis={**redis_deployment, "max_connections": 1, "pool_timeout_ms": 200}))
    store = RedisStore.connect(target, prefix=prefix)
    try:
        store.opt_out(MOBILE, source="api", at=T0)  # connected, and the store's consent secret read
        fresh = RedisStore(store._r, prefix=prefix + "fresh:")  # its secret not read yet: a plain pipeline
        verbs: dict[str, Callable[[], Any]] = {
            "command": lambda: store.opted_out_scope(MOBILE, [ACCOUNT_SCOPE]),
            "script": lambda: store.claim("k", "fingerprint", ttl_seconds=5),
            "lock": lambda: store.fill_lock("k", ttl_seconds=5, wait_seconds=1).__enter__(),
            "MULTI": lambda: store.opt_out(OTHER, source="api", at=T0),
            "pipeline": lambda: fresh.secret("consent"),
        }
        waits = {}
        with every_connection_taken(store) as ran_out:
            for name, verb in verbs.items():
                before = ran_out[0]
                with pytest.raises(StoreUnavailable) as failed:
                    verb()
                waits[name] = (failed.value.reason, ran_out[0] - before)
        assert waits == dict.fromkeys(verbs, ("pool_exhausted", 1))
        assert store.opted_out_scope(MOBILE, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE  # free again: answered
    finally:
        store.close()


async def every_turn_taken(store: Any) -> Callable[[], Any]:
    """The async store's every connection (on a cluster: every turn among ``max_connections``) taken by another task
    until the returned coroutine function is awaited."""
    client = store._r
    release, taken = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        if isinstance(client, AsyncWaitingCluster):
            async with client.turn():
                taken.set()
                await release.wait()
            return
        pool = client.connection_pool
        held = [await pool.get_connection() for _ in range(pool.max_connections)]
        taken.set()
        await release.wait()
        for connection in held:
            await pool.release(connection)

    task = asyncio.create_task(holder())
    await asyncio.wait_for(taken.wait(), 10)

    async def free() -> None:
        release.set()
        await task

    return free


def test_the_async_gate_refuses_as_pool_exhausted_too(
    redis_deployment: dict[str, Any], sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """The same with AsyncGatekeeper.from_settings (redis.asyncio: a waiting pool, or on a cluster a turn among
    ``max_connections``): ``store:pool_exhausted`` while another task holds the one connection, answered after."""
    settings = from_config(redis_deployment, sandbox_server, max_connections=1, pool_timeout_ms=50)

    async def main() -> tuple[Decision, Decision]:
        gate = AsyncGatekeeper.from_settings(settings)
        try:
            assert (await gate.decide(MOBILE)).action is Action.SMS
            free = await every_turn_taken(gate.stores.opt_outs)
            try:
                refused = await gate.decide(OTHER)
            finally:
                await free()
            return refused, await gate.decide(OTHER)
        finally:
            await gate.close()

    refused, again = asyncio.run(main())
    assert (refused.action, [r for r in refused.reasons if r.startswith("store:")]) == (
        Action.REFUSE,
        ["store:pool_exhausted"],
    )
    assert again.action is Action.SMS
    assert sandbox.lookup_count(OTHER) == 1  # the answered decision's, none for the refused one


# -- the queued lock under the fill lock ---------------------------------------------------------------------------
def test_one_thread_of_a_process_asks_redis_for_a_lock_at_a_time(private_redis: PrivateRedis) -> None:
    """While another process holds a lock, 20 threads of this one waiting 0.2 s for it use one connection between
    them (redis-py's own lock has every waiter poll Redis, each on a connection of its own), each gets False when
    its wait runs out, no turn is left behind, and once the lock is free it is had at once."""
    holder, waiters = connect(RedisTarget(private_redis.url)), connect(RedisTarget(private_redis.url))
    admin = redis.Redis.from_url(private_redis.url)
    try:
        held = holder.lock("gk:fill:k", timeout=30, thread_local=False)
        assert held.acquire(blocking=False)
        before = admin.info("clients")["connected_clients"]
        results = run_threads(
            20, lambda _: waiters.lock("gk:fill:k", timeout=30, sleep=0.005, blocking_timeout=0.2).acquire()
        )
        assert results == [False] * 20
        assert admin.info("clients")["connected_clients"] - before == 1
        assert len(waiters.lock_turns) == 0
        held.release()
        assert waiters.lock("gk:fill:k", timeout=30, blocking_timeout=0.2).acquire()
    finally:
        for client in (holder, waiters, admin):
            client.close()


def test_a_lock_lost_under_its_holder_still_frees_its_turn(redis_url: str, redis_prefix: str) -> None:
    """A lock whose key expired (or was deleted) while held: release raises redis-py's LockNotOwnedError as before,
    and the turn is free: the next thread of the process takes the lock at once."""
    client = connect(RedisTarget(redis_url))
    name = f"{redis_prefix}fill:lost"
    try:
        lock = client.lock(name, timeout=30, blocking_timeout=0.1, thread_local=False)
        assert lock.acquire()
        client.delete(name)
        with pytest.raises(LockNotOwnedError):
            lock.release()
        assert len(client.lock_turns) == 0
        assert run_threads(1, lambda _: client.lock(name, timeout=30, blocking_timeout=0.1).acquire()) == [True]
    finally:
        client.close()
        drop_prefix(redis_url, redis_prefix)
