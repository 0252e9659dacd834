"""The Redis store passes the shared contract against a real server, and fails as StoreUnavailable."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from stores.contract import E164, T0, StoreContract
from support import PrivateRedis

from gatekeeper.errors import StoreUnavailable
from gatekeeper.stores.base import SuppressionVersion, version_reader
from gatekeeper.stores.redis import RedisStore


class TestRedisContract(StoreContract):
    @pytest.fixture
    def store(self, redis_store: RedisStore) -> RedisStore:
        return redis_store

    @pytest.fixture
    def pass_time(self) -> Callable[[float], None]:
        # Redis expires keys on its own clock: a real (short) wait is the only way to see it.
        return time.sleep

    @pytest.fixture
    def now(self) -> Callable[[], float]:
        return time.time


def test_keys_carry_hash_tags(redis_store: RedisStore, redis_url: str, redis_prefix: str) -> None:
    """A number's keys share one {hash tag}, so they live on one Redis Cluster slot."""
    import redis

    redis_store.opt_out(E164, source="t", at=T0)
    redis_store.record_failure(E164, "SM1:failed", at=T0, window_seconds=60)
    keys = sorted(k.decode() for k in redis.Redis.from_url(redis_url).scan_iter(match=f"{redis_prefix}*"))
    assert keys and all("{" + E164 + "}" in k for k in keys), keys


def test_unreachable_redis_raises_store_unavailable(private_redis: PrivateRedis) -> None:
    """A stopped server surfaces as StoreUnavailable, quickly, never as a hang or a redis-py error."""
    store = RedisStore.from_url(private_redis.url, timeout_seconds=0.5)
    store.opt_out(E164, source="t", at=T0)
    private_redis.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.opted_out_scope(E164, ["*"])
    with pytest.raises(StoreUnavailable):
        store.claim("k", "fp", ttl_seconds=5)
    assert time.monotonic() - started < 5


def test_redis_store_has_no_suppression_version(redis_store: RedisStore) -> None:
    """Redis offers no suppression version (other processes write it), so the gate reads it on every send."""
    assert not isinstance(redis_store, SuppressionVersion)
    assert (version_reader(redis_store, "opt_outs"), version_reader(redis_store, "failures")) == (None, None)
