"""The Redis stores on a real Redis Cluster (three primaries) and behind a real Sentinel, each started by the suite:
the whole store contract on the cluster, blocking and async; no command the cluster refuses (MOVED, CROSSSLOT);
durability read from every primary, or from the primary the Sentinel names."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from stores.contract import E164, T0, StoreContract, audit_entry, entry
from stores.test_redis_async_store import Blocking
from support import PrivateCluster, PrivateSentinel, drop_prefix

from gatekeeper.stores.base import ACCOUNT_SCOPE, lookup_key
from gatekeeper.stores.redis import RedisStore
from gatekeeper.stores.redis_async import AsyncRedisStore
from gatekeeper.stores.redis_connect import RedisTarget

pytestmark = pytest.mark.redis


def on_cluster(cluster: PrivateCluster, **pool: Any) -> RedisTarget:
    return RedisTarget(cluster.url, mode="cluster", **pool)


def behind_sentinel(sentinel: PrivateSentinel, **pool: Any) -> RedisTarget:
    return RedisTarget(
        sentinel.url,
        mode="sentinel",
        sentinels=tuple((host, int(port)) for host, _, port in (s.rpartition(":") for s in sentinel.sentinels)),
        service_name=sentinel.service_name,
        sentinel_password=sentinel.sentinel_password,
        **pool,
    )


@pytest.fixture
def cluster_store(redis_cluster: PrivateCluster, redis_prefix: str) -> Iterator[RedisStore]:
    store = RedisStore.connect(on_cluster(redis_cluster), prefix=redis_prefix)
    try:
        yield store
    finally:
        store.close()
        redis_cluster.drop(redis_prefix)


class TestRedisClusterContract(StoreContract):
    """Every verb of the blocking store on a three-primary cluster, as on one server."""

    @pytest.fixture
    def store(self, cluster_store: RedisStore) -> RedisStore:
        return cluster_store

    @pytest.fixture
    def pass_time(self) -> Callable[[float], None]:
        return time.sleep

    @pytest.fixture
    def now(self) -> Callable[[], float]:
        return time.time

    @pytest.fixture
    def stored_text(self, redis_cluster: PrivateCluster, redis_prefix: str) -> Callable[[], str]:
        return lambda: redis_cluster.stored_text(redis_prefix)


class TestAsyncRedisClusterContract(TestRedisClusterContract):
    """The same with ``redis.asyncio``'s cluster client (each verb awaited on one loop, see ``Blocking``)."""

    @pytest.fixture
    def store(self, redis_cluster: PrivateCluster, redis_prefix: str) -> Iterator[Blocking]:  # type: ignore[override]
        facade = Blocking(AsyncRedisStore.connect(on_cluster(redis_cluster), prefix=redis_prefix))
        try:
            yield facade
        finally:
            facade.close()
            facade.shutdown_loop()
            redis_cluster.drop(redis_prefix)


def workload(store: Any, number: str, tag: str) -> None:
    """Every verb, the ones that span slots among them (erasure, the status index, the audit stream)."""
    store.put_lookup(lookup_key(number, "f", "US"), entry(), ttl_seconds=60)
    with store.fill_lock(lookup_key(number, "g", "US"), ttl_seconds=5, wait_seconds=1) as held:
        assert held
    store.opt_out(number, source="sms:STOP", at=T0)
    store.opt_in(number, "+15005550006", source="sms:START", at=T0)
    assert store.opted_out_scope(number, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE
    store.record_failure(number, "SM1:failed", at=T0, window_seconds=60)
    store.suppress(number, ttl_seconds=60, reason="manual", at=T0)
    assert store.suppression(number, now=T0, window_seconds=60, threshold=1) == "suppressed:manual"
    assert store.lift_suppression(number)
    claim = store.claim(f"k{tag}", "fp", ttl_seconds=60)
    store.complete(f"k{tag}", claim.token, b"done", ttl_seconds=60)
    for sid in (f"SM{tag}{'a' * 30}", f"SM{tag}{'b' * 30}"):
        assert store.apply_status(sid, "delivered", 5, error_code=None, at=T0, to_hash=f"h{tag}", ttl_seconds=60)
    store.reserve(f"b{tag}", rate_per_second=100, burst=5, now=T0)
    store.record(audit_entry(T0, f"h{tag}"))
    assert store.recent(5)
    store.erase(number, to_hash=f"h{tag}", at=T0 + 1)
    assert store.get_lookup(lookup_key(number, "f", "US")) is None
    assert store.status_of(f"SM{tag}{'a' * 30}") is None


def test_no_verb_is_refused_by_the_cluster(redis_cluster: PrivateCluster, redis_prefix: str) -> None:
    """Every verb of both stores, over twenty numbers spread across the slots: the nodes answer no command with
    MOVED, ASK, CROSSSLOT or any other error (a stale or single-node client would get MOVED; a multi-key command
    or MULTI across slots, CROSSSLOT)."""
    blocking = RedisStore.connect(on_cluster(redis_cluster), prefix=redis_prefix)
    asynchronous = Blocking(AsyncRedisStore.connect(on_cluster(redis_cluster), prefix=redis_prefix))
    try:
        blocking.secret("consent")
        asynchronous.secret("consent")
        redis_cluster.reset_stats()
        for i in range(10):
            workload(blocking, f"+1415555{i:04d}", f"b{i}")
            workload(asynchronous, f"+1628555{i:04d}", f"a{i}")
        assert redis_cluster.errors() == {}
        assert redis_cluster.stored_text(redis_prefix).count("\n") >= 2  # the secret, the tombstones, the audit
    finally:
        blocking.close()
        asynchronous.close()
        asynchronous.shutdown_loop()
        redis_cluster.drop(redis_prefix)


def test_a_single_node_client_is_what_failed(redis_cluster: PrivateCluster, redis_prefix: str) -> None:
    """The failure the cluster mode fixes, seen: the standalone store pointed at one node of the cluster fails
    (MOVED) for the numbers whose keys another node holds, as StoreUnavailable."""
    from gatekeeper.errors import StoreUnavailable

    single = RedisStore.from_url(redis_cluster.url, prefix=redis_prefix)
    try:
        outcomes = []
        for i in range(8):
            try:
                outcomes.append(single.opt_out(f"+1415555{i:04d}", source="t", at=T0))
            except StoreUnavailable as exc:
                outcomes.append(exc)
        moved = [o for o in outcomes if isinstance(o, StoreUnavailable) and "MovedError" in str(o)]
        assert moved
        assert not any("SET" in str(o) for o in moved)  # the failed command's arguments (the secret) left out
    finally:
        single.close()
        redis_cluster.drop(redis_prefix)


def test_cluster_durability_reads_every_primary(redis_cluster: PrivateCluster) -> None:
    """No primary persists: persistence:none once, naming all three. One primary with an allkeys-* policy: that
    risk too, naming that primary only. Both stores say the same."""
    store = RedisStore.connect(on_cluster(redis_cluster))
    risky = redis.Redis.from_url(redis_cluster.urls[1])
    try:
        risky.config_set("maxmemory-policy", "allkeys-lru")
        risks = {risk.code: risk.detail for risk in store.durability()}
        assert set(risks) == {"persistence:none", "eviction:allkeys-lru"}
        assert "on 3 of 3 primaries" in risks["persistence:none"]
        port = redis_cluster.ports[1][0]
        assert f"on 1 of 3 primaries: 127.0.0.1:{port})" in risks["eviction:allkeys-lru"]

        async def main() -> list[str]:
            astore = AsyncRedisStore.connect(on_cluster(redis_cluster))
            try:
                return sorted(risk.code for risk in await astore.durability())
            finally:
                await astore.close()

        assert asyncio.run(main()) == sorted(risks)
    finally:
        risky.config_set("maxmemory-policy", "noeviction")
        risky.close()
        store.close()


def test_sentinel_stores_reach_the_primary_it_names(redis_sentinel: PrivateSentinel, redis_prefix: str) -> None:
    """Both stores, given the Sentinel (with its password) and the primary's password in the URL, write to the
    primary the Sentinel names, and report that primary's durability."""
    store = RedisStore.connect(behind_sentinel(redis_sentinel), prefix=redis_prefix)
    try:
        store.opt_out(E164, source="sms:STOP", at=T0)
        assert [risk.code for risk in store.durability()] == ["persistence:none"]

        async def main() -> tuple[str | None, list[str]]:
            astore = AsyncRedisStore.connect(behind_sentinel(redis_sentinel), prefix=redis_prefix)
            try:
                return await astore.opted_out_scope(E164, [ACCOUNT_SCOPE]), [r.code for r in await astore.durability()]
            finally:
                await astore.close()

        assert asyncio.run(main()) == (ACCOUNT_SCOPE, ["persistence:none"])
        with redis.Redis.from_url(redis_sentinel.primary_url) as primary:
            assert any(primary.scan_iter(match=f"{redis_prefix}optout:*"))
    finally:
        store.close()
        drop_prefix(redis_sentinel.primary_url, redis_prefix)
