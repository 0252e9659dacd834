"""A Redis that cannot keep an opt-out says so: no persistence, RDB only, or an eviction policy that may drop
keys without a TTL; and under memory pressure a volatile-* policy evicts the cache, never the opt-outs."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from stores.contract import entry
from support import PrivateRedis

from gatekeeper import Gatekeeper, Settings
from gatekeeper.aio import AsyncGatekeeper
from gatekeeper.errors import ConfigError
from gatekeeper.stores.base import ACCOUNT_SCOPE, DurabilityReport, lookup_key
from gatekeeper.stores.memory import MemoryStore
from gatekeeper.stores.redis import RedisStore
from gatekeeper.stores.redis_async import AsyncRedisStore

pytestmark = pytest.mark.redis


def aof_written(admin: redis.Redis) -> None:
    """Wait, polling Redis's own state, until the AOF turned on at run time has been written."""
    deadline = time.monotonic() + 10
    while admin.info("persistence")["aof_rewrite_in_progress"] or admin.info("persistence")["aof_rewrite_scheduled"]:
        assert time.monotonic() < deadline, "the AOF rewrite did not finish"
        time.sleep(0.01)


def codes(store: RedisStore) -> list[str]:
    return [risk.code for risk in store.durability()]


def test_each_way_redis_can_lose_an_opt_out_is_reported(tmp_path: Path) -> None:
    """AOF on (fsync always): nothing to report. AOF off with no RDB schedule: persistence:none; with an RDB
    schedule: rdb_only. An allkeys-* policy is an eviction risk; volatile-* and noeviction are not."""
    server = PrivateRedis(persist_dir=tmp_path).start()
    store = RedisStore.from_url(server.url)
    admin = redis.Redis.from_url(server.url)
    try:
        assert codes(store) == []
        admin.config_set("appendonly", "no")
        assert codes(store) == ["persistence:none"]
        admin.config_set("save", "3600 1")
        assert codes(store) == ["persistence:rdb_only"]
        admin.config_set("appendonly", "yes")
        assert codes(store) == []
        aof_written(admin)  # Redis refuses to shut down while it writes the first AOF
        admin.config_set("maxmemory-policy", "allkeys-lru")
        assert codes(store) == ["eviction:allkeys-lru"]
        for safe in ("volatile-lru", "noeviction"):
            admin.config_set("maxmemory-policy", safe)
            assert codes(store) == []
        assert isinstance(store, DurabilityReport)
    finally:
        store.close()
        admin.close()
        server.stop()


def test_a_redis_that_refuses_config_is_unknown_not_fine(private_redis: PrivateRedis) -> None:
    """Managed Redis often renames CONFIG: with AOF off the RDB schedule cannot be read, which is reported."""
    store = RedisStore.from_url(private_redis.url)

    def refused(*args: object, **kwargs: object) -> object:
        raise redis.ResponseError("unknown command 'CONFIG'")

    store._r.config_get = refused  # type: ignore[method-assign]  # as a server with CONFIG renamed answers
    try:
        assert codes(store) == ["persistence:unknown"]
    finally:
        store.close()


def test_the_async_store_reports_the_same(private_redis: PrivateRedis) -> None:
    async def main() -> list[str]:
        store = AsyncRedisStore.from_url(private_redis.url)
        try:
            return [risk.code for risk in await store.durability()]
        finally:
            await store.close()

    assert asyncio.run(main()) == ["persistence:none"]


def test_the_memory_store_says_it_forgets() -> None:
    assert [risk.code for risk in MemoryStore().durability()] == ["store:memory"]


def test_memory_pressure_evicts_the_cache_never_the_opt_outs(private_redis: PrivateRedis) -> None:
    """With a tiny maxmemory and volatile-lru, filling the Lookup cache makes Redis evict; every cache entry
    written has a TTL and the opt-outs have none, so all 300 opt-outs are still there and only cache entries
    went."""
    admin = redis.Redis.from_url(private_redis.url)
    store = RedisStore.from_url(private_redis.url)
    try:
        admin.config_set("maxmemory-policy", "volatile-lru")
        numbers = [f"+1415555{n:04d}" for n in range(300)]
        for number in numbers:
            store.opt_out(number, source="test", at=1.0)
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", str(used + 2_000_000))
        padding = entry()
        keys = [lookup_key(f"+1628555{n:04d}", "fields", "US") for n in range(5000)]
        for key in keys:
            store.put_lookup(key, padding, ttl_seconds=3600)
        assert int(admin.info("stats")["evicted_keys"]) > 0
        cached = sum(store.get_lookup(key) is not None for key in keys)
        assert cached < len(keys)
        assert all(store.opted_out_scope(number, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE for number in numbers)
    finally:
        store.close()
        admin.close()


# -- at start, and in health() ----------------------------------------------------------------------------
def redis_settings(url: str, *, required: bool) -> Settings:
    return Settings(
        redis={"url": url, "key_prefix": "gkdur:", "require_persistence": required},
        twilio={"sandbox_url": "http://127.0.0.1:9"},  # never called: nothing is sent here
    )


@pytest.mark.parametrize("gate_class", [Gatekeeper, AsyncGatekeeper])
def test_require_persistence_refuses_to_start_on_a_redis_that_forgets(
    private_redis: PrivateRedis, gate_class: type[Any]
) -> None:
    """With [redis] require_persistence, a gate built from settings on a Redis with no AOF does not start: a
    ConfigError naming the key and the risk, before anything is sent."""
    with pytest.raises(ConfigError) as refused:
        gate_class.from_settings(redis_settings(private_redis.url, required=True))
    assert refused.value.key == "redis.require_persistence"
    assert "persistence:none" in str(refused.value)


def test_an_allkeys_policy_is_refused_too(tmp_path: Path) -> None:
    server = PrivateRedis(persist_dir=tmp_path).start()
    try:
        redis.Redis.from_url(server.url).config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(ConfigError, match="eviction:allkeys-lru"):
            Gatekeeper.from_settings(redis_settings(server.url, required=True))
    finally:
        server.stop()


def test_without_the_requirement_the_risk_is_logged_and_reported(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Not required: the gate starts, logs the risk once, and health() (and so /healthz) reports it."""
    with caplog.at_level(logging.WARNING, logger="gatekeeper.stores"):
        gate = Gatekeeper.from_settings(redis_settings(private_redis.url, required=False))
    try:
        assert any("persistence:none" in r.getMessage() for r in caplog.records)
        health = gate.health()
        assert (health["ok"], health["durable"]) == (True, False)
        assert [risk["code"] for risk in health["durability"]] == ["persistence:none"]
    finally:
        gate.close()


def test_a_persistent_redis_starts_under_the_requirement_and_reports_nothing(tmp_path: Path) -> None:
    server = PrivateRedis(persist_dir=tmp_path).start()
    try:
        gate = Gatekeeper.from_settings(redis_settings(server.url, required=True))
        try:
            assert gate.health()["durable"] is True
        finally:
            gate.close()

        async def main() -> dict[str, Any]:
            agate = AsyncGatekeeper.from_settings(redis_settings(server.url, required=True))
            try:
                return await agate.health()
            finally:
                await agate.close()

        health = asyncio.run(main())
        assert (health["ok"], health["durable"], health["durability"]) == (True, True, [])
    finally:
        server.stop()
