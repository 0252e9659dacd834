"""The Redis store passes the shared contract against a real server, and fails as StoreUnavailable."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from stores.contract import E164, T0, StoreContract, audit_entry, entry
from support import PrivateRedis, drop_prefix, stored_redis_text

from gatekeeper.errors import InvalidArgument, StoreUnavailable
from gatekeeper.stores.base import ACCOUNT_SCOPE, SuppressionVersion, lookup_key, subject_key, version_reader
from gatekeeper.stores.redis import RedisStore

#: How the number appears in whatever holds it (JSON, key names): its digits.
DIGITS = E164.lstrip("+")


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

    @pytest.fixture
    def stored_text(self, redis_url: str, redis_prefix: str) -> Callable[[], str]:
        return lambda: stored_redis_text(redis_url, redis_prefix)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client, to see (and plant) what the store keeps."""
    with redis.Redis.from_url(redis_url) as conn:
        yield conn


def test_keys_carry_hash_tags(redis_store: RedisStore, redis_url: str, redis_prefix: str) -> None:
    """A number's consent, failure and suppression keys share one {hash tag}, its subject key (so they live on one
    Redis Cluster slot), and none names the number; the secret they are derived from is kept beside them."""
    redis_store.opt_out(E164, source="t", at=T0)
    redis_store.record_failure(E164, "SM1:failed", at=T0, window_seconds=60)
    redis_store.suppress(E164, ttl_seconds=60, reason="manual", at=T0)
    subject = subject_key(redis_store.secret("consent"), E164)
    keys = {k.decode() for k in redis.Redis.from_url(redis_url).scan_iter(match=f"{redis_prefix}*")}
    tagged = "{" + subject + "}"
    assert keys == {
        f"{redis_prefix}optout:{tagged}",
        f"{redis_prefix}consent:{tagged}",
        f"{redis_prefix}fail:{tagged}",
        f"{redis_prefix}supp:{tagged}",
        f"{redis_prefix}secret:{{consent}}",
    }


def test_stored_text_reads_every_kind_of_key(redis_store: RedisStore, redis_url: str, redis_prefix: str) -> None:
    """The contract's stored_text (what proves no number is kept) can fail: it finds the number in the Lookup cache,
    and reads every type the store writes (string, hash, list, set, zset, stream); after an erasure the number is
    nowhere under the prefix, while the tombstone is."""
    redis_store.put_lookup(lookup_key(E164, "abc", "US"), entry(), ttl_seconds=60)  # string
    redis_store.opt_out(E164, source="sms:STOP", at=T0)  # hash and list
    redis_store.record_failure(E164, "SM9:failed", at=T0, window_seconds=60)  # zset
    redis_store.apply_status("SM" + "9" * 32, "delivered", 5, error_code=None, at=T0, to_hash="hmark", ttl_seconds=60)
    redis_store.record(audit_entry(T0, "hmark"))  # stream
    redis_store.flush()  # the audit is written behind: sent now
    text = stored_redis_text(redis_url, redis_prefix)
    assert DIGITS in text  # the Lookup answer: the one place the number is kept
    for kind in ("string", "hash", "list", "set", "zset", "stream"):
        assert f" {kind} " in text, kind
    for value in ("sms:STOP", "SM9:failed", "delivered", "9" * 32, "status_by:{hmark}", '"to_hash": "hmark"'):
        assert value in text, value

    redis_store.erase(E164, to_hash="hmark", at=T0 + 1)
    text = stored_redis_text(redis_url, redis_prefix)
    assert DIGITS not in text
    assert "erased" in text and "hmark" not in text and "delivered" not in text


def test_the_secret_is_kept_in_redis_and_shared(redis_store: RedisStore, redis_url: str, redis_prefix: str) -> None:
    """A secret is made once, kept under the prefix, and the same for every store object on that prefix (so they
    all find a number's opt-outs); another prefix (another deployment) has its own."""
    other = RedisStore.from_url(redis_url, prefix=redis_prefix)
    elsewhere = RedisStore.from_url(redis_url, prefix=redis_prefix + "elsewhere:")
    try:
        assert other.opt_out(E164, source="sms:STOP", at=T0) is True  # the second object makes the secret
        assert redis_store.opted_out_scope(E164, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE
        assert redis_store.secret("consent") == other.secret("consent")
        assert redis.Redis.from_url(redis_url).get(f"{redis_prefix}secret:{{consent}}") == other.secret("consent")
        assert elsewhere.secret("consent") != other.secret("consent")
        assert elsewhere.opted_out_scope(E164, [ACCOUNT_SCOPE]) is None
    finally:
        other.close()
        elsewhere.close()
        drop_prefix(redis_url, redis_prefix + "elsewhere:")


def test_the_secret_costs_one_round_trip_per_store_object(private_redis: PrivateRedis) -> None:
    """A store object reads a secret from Redis once (SET NX and GET, pipelined), then keeps it: later verbs send
    no SET or GET for it. A new store object reads it once too."""
    with redis.Redis.from_url(private_redis.url) as probe:
        store = RedisStore.from_url(private_redis.url)
        probe.config_resetstat()
        store.opt_out(E164, source="sms:STOP", at=T0)
        store.opt_in(E164, "+15005550006", source="sms:START", at=T0)
        store.opted_out_scope(E164, [ACCOUNT_SCOPE])
        store.consent_history(E164)
        store.secret("consent")
        stats = probe.info("commandstats")
        assert (stats["cmdstat_set"]["calls"], stats["cmdstat_get"]["calls"]) == (1, 1)
        assert store.secret("consent") == probe.get("gk:secret:{consent}")
        second = RedisStore.from_url(private_redis.url)
        assert second.opted_out_scope(E164, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE
        second.consent_history(E164)
        stats = probe.info("commandstats")
        assert (stats["cmdstat_set"]["calls"], stats["cmdstat_get"]["calls"]) == (2, 3)  # 3: the probe's GET above
        store.close()
        second.close()


def test_erase_writes_its_tombstone_in_one_multi_and_never_uses_keys(private_redis: PrivateRedis) -> None:
    """The tombstone and the deletion of the number's consent, failures and suppression are one MULTI; the Lookup
    answers are found with SCAN, never KEYS."""
    with redis.Redis.from_url(private_redis.url) as probe:
        store = RedisStore.from_url(private_redis.url)
        store.put_lookup(lookup_key(E164, "abc", "US"), entry(), ttl_seconds=60)
        store.secret("consent")
        probe.config_resetstat()
        store.erase(E164, to_hash="h", at=T0)
        stats = probe.info("commandstats")
        store.close()
    assert (stats["cmdstat_multi"]["calls"], stats["cmdstat_exec"]["calls"]) == (1, 1)
    assert stats["cmdstat_scan"]["calls"] >= 1 and "cmdstat_keys" not in stats


def test_statuses_are_indexed_by_to_hash_for_erasure(
    redis_store: RedisStore, raw: redis.Redis, redis_prefix: str
) -> None:
    """apply_status files each SID under its to_hash, for the status's TTL, so erasure needs no scan; a status
    without a to_hash is not indexed."""
    sids = ["SM" + c * 32 for c in "abc"]
    redis_store.apply_status(sids[0], "sent", 3, error_code=None, at=T0, to_hash="h", ttl_seconds=60)
    redis_store.apply_status(sids[1], "sent", 3, error_code=None, at=T0, to_hash="h", ttl_seconds=60)
    redis_store.apply_status(sids[2], "sent", 3, error_code=None, at=T0, ttl_seconds=60)
    index = f"{redis_prefix}status_by:{{h}}"
    assert raw.smembers(index) == {s.encode() for s in sids[:2]}
    assert 0 < raw.pttl(index) <= 60_000
    redis_store.erase(E164, to_hash="h", at=T0)
    assert [redis_store.status_of(s) is None for s in sids] == [True, True, False]
    assert raw.exists(index) == 0


def test_erase_matches_its_prefix_literally(redis_url: str, redis_prefix: str) -> None:
    """The SCAN pattern escapes the prefix's glob characters: erasing through a store whose prefix has [, ], *, ?
    and \\ in it leaves the Lookup answers of a store whose prefix the unescaped pattern would have matched."""
    odd = RedisStore.from_url(redis_url, prefix=redis_prefix + "a[b]*?\\:")
    near = RedisStore.from_url(redis_url, prefix=redis_prefix + "abXY:")
    key = lookup_key(E164, "abc", "US")
    try:
        odd.put_lookup(key, entry(), ttl_seconds=60)
        near.put_lookup(key, entry(), ttl_seconds=60)
        odd.erase(E164, to_hash="h", at=T0)
        assert odd.get_lookup(key) is None
        assert near.get_lookup(key) == entry()
    finally:
        odd.close()
        near.close()


def test_erase_deletes_keys_of_the_layout_keyed_by_number(
    redis_store: RedisStore, raw: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    """Keys written before consent was keyed by subject (optout/consent/fail/supp under the number) are erased
    too: nothing under the prefix names the number afterwards."""
    tag = "{" + E164 + "}"
    raw.hset(f"{redis_prefix}optout:{tag}", ACCOUNT_SCOPE, json.dumps({"scope": ACCOUNT_SCOPE, "e164": E164}))
    raw.lpush(f"{redis_prefix}consent:{tag}", json.dumps({"e164": E164}))
    raw.zadd(f"{redis_prefix}fail:{tag}", {"SM1:failed": T0})
    raw.set(f"{redis_prefix}supp:{tag}", "manual")
    assert DIGITS in stored_redis_text(redis_url, redis_prefix)
    redis_store.erase(E164, to_hash="h", at=T0)
    assert DIGITS not in stored_redis_text(redis_url, redis_prefix)
    assert redis_store.opted_out_scope(E164, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE


def test_erase_reads_the_whole_audit_stream(redis_store: RedisStore) -> None:
    """Erasure pages through the audit (1000 records a read): every record of the hash goes, wherever it is."""
    for i in range(2500):
        redis_store.record(audit_entry(T0 + i, "mine" if i % 2 else "theirs"))
    redis_store.erase(E164, to_hash="mine", at=T0)
    left = redis_store.recent(5000)
    assert len(left) == 1250 and {r["to_hash"] for r in left} == {"theirs"}


def test_audit_retention_is_judged_on_redis_clock(
    redis_store: RedisStore, raw: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    """With audit_max_age_seconds, recent hides records older than that (by their stream ID, Redis's time, not the
    caller's ``at``) and record trims them, exactly; the stream expires once its newest record is that old.
    Without it nothing is trimmed by age."""
    stream = f"{redis_prefix}audit"
    seconds, micros = raw.time()
    now_ms = seconds * 1000 + micros // 1000
    for age_ms, mark in ((90_000, "old"), (10_000, "young")):  # ``at`` in the future: it is not what is judged
        raw.xadd(stream, {"e": json.dumps(audit_entry(T0, mark).as_dict())}, id=f"{now_ms - age_ms}-0")
    redis_store.record(audit_entry(T0, "kept"))
    assert [r["to_hash"] for r in redis_store.recent(10)] == ["kept", "young", "old"]
    assert raw.pttl(stream) == -1

    aging = RedisStore.from_url(redis_url, prefix=redis_prefix, audit_max_age_seconds=60)
    try:
        assert [r["to_hash"] for r in aging.recent(10)] == ["kept", "young"]  # hidden before any trim
        assert raw.xlen(stream) == 3
        aging.record(audit_entry(1.0, "new"))  # ``at`` in 1970: still kept, its age is Redis's to judge
        assert [r["to_hash"] for r in aging.recent(10)] == ["new", "kept", "young"]
        assert raw.xlen(stream) == 3  # "old" is gone from Redis, not just hidden
        assert 59_000 < raw.pttl(stream) <= 60_000
    finally:
        aging.close()
    with pytest.raises(InvalidArgument):
        RedisStore.from_url(redis_url, prefix=redis_prefix, audit_max_age_seconds=0)


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


def test_redis_store_vouches_for_its_screening_reads(redis_store: RedisStore) -> None:
    """Its version (the consent watch, ``test_redis_watch``) stands for both roles' reads and writes."""
    assert isinstance(redis_store, SuppressionVersion)
    opt_outs, failures = version_reader(redis_store, "opt_outs"), version_reader(redis_store, "failures")
    assert opt_outs is not None and failures is not None and opt_outs() == failures()
