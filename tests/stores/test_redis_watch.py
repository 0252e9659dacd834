"""The consent watch (``stores.redis_watch``): Redis pushes every write to the keys that suppress, by anyone, so a
process screens a repeated number without a round trip for as long as it has heard from Redis. Against real
servers: the shared (or suite's) Redis, and private ones this file stops, freezes and starts again."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Hashable, Iterator

import pytest
import redis
from redis.sentinel import Sentinel
from redis_trips import counting
from stores.contract import audit_entry, entry
from support import FakeClock, FakeTwilio, PrivateRedis
from twilio.rest import Client

from gatekeeper import Action, Gatekeeper, Settings, Stores
from gatekeeper.stores.base import version_reader
from gatekeeper.stores.redis import RedisStore
from gatekeeper.stores.redis_watch import ConsentWatch, watch_connection
from gatekeeper.wiring import redis_target

pytestmark = pytest.mark.redis

E164, OTHER = "+14155552671", "+14155552672"
T0 = 1_800_000_000.0


def moved(read: Callable[[], Hashable], before: Hashable, deadline: float = 2.0) -> Hashable:
    """The version once it differs from ``before``: a push from another connection is on its way over loopback,
    so it is read again until it has arrived (at once, in practice), failing after ``deadline`` seconds."""
    give_up = time.monotonic() + deadline
    while (now := read()) == before:
        assert time.monotonic() < give_up, "the push never arrived"
    return now


@pytest.fixture
def elsewhere(redis_url: str, redis_prefix: str) -> Iterator[RedisStore]:
    """Another host's store on the same keys."""
    store = RedisStore.from_url(redis_url, prefix=redis_prefix, consent_watch_seconds=0)
    yield store
    store.close()


def test_every_suppressing_write_by_anyone_moves_the_version(
    redis_store: RedisStore, elsewhere: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    """Another store's opt-out, failure, suppression and erasure, and writes by a client that knows nothing of the
    watch (a script, redis-cli): each moves this store's version, though this store wrote nothing."""
    read = version_reader(redis_store, "opt_outs")
    assert read is not None and read() == read()  # trusted: it stands while nothing is written
    raw = redis.Redis.from_url(redis_url)
    subject = "0" * 16
    writes: list[Callable[[], object]] = [
        lambda: elsewhere.opt_out(E164, source="sms:STOP", at=T0),
        lambda: elsewhere.record_failure(OTHER, "SM1:undelivered", at=T0, window_seconds=60),
        lambda: elsewhere.suppress(OTHER, ttl_seconds=60, reason="manual", at=T0),
        lambda: elsewhere.erase(OTHER, to_hash="h", at=T0),
        lambda: raw.hset(f"{redis_prefix}optout:{{{subject}}}", "*", "{}"),
        lambda: raw.eval("return redis.call('SET', KEYS[1], 'x')", 1, f"{redis_prefix}supp:{{{subject}}}"),
        lambda: raw.zadd(f"{redis_prefix}fail:{{{subject}}}", {"SM2:failed": T0}),
    ]
    seen = [read()]
    for write in writes:
        write()
        seen.append(moved(read, seen[-1]))
        assert seen[-1] not in seen[:-1] and read() == seen[-1]
    raw.close()


def test_writes_that_cannot_suppress_leave_the_version_alone(redis_store: RedisStore, elsewhere: RedisStore) -> None:
    """A cache fill, a claim, a status, a window, an audit record by another host push nothing: the one opt-out
    after them moves the count of pushes by exactly one."""
    redis_store.suppression_version()  # the store connects, and its watch with it
    watch = redis_store._consent.watch
    assert watch is not None
    epoch, pushes = watch.version()  # type: ignore[misc]
    elsewhere.put_lookup("lookup:v2:x", entry(), ttl_seconds=60)
    elsewhere.claim("idem-1", "fp", ttl_seconds=60)
    elsewhere.apply_status("SM" + "1" * 32, "delivered", 5, error_code=None, at=T0, ttl_seconds=60)
    elsewhere.hit("mfa:+1415555", "e1", at=T0, window_seconds=60, limit=5)
    elsewhere.record(audit_entry(at=T0))
    elsewhere.flush()
    elsewhere.opt_out(E164, source="sms:STOP", at=T0)
    assert moved(watch.version, (epoch, pushes)) == (epoch, pushes + 1)


def test_a_repeated_number_is_screened_once_then_not_until_someone_writes(
    twilio_http: FakeTwilio, twilio_client: Client, redis_url: str, redis_prefix: str, elsewhere: RedisStore
) -> None:
    """Through the gate: a repeated number decided with no Redis command while nothing is written (the watch's
    heartbeat set long, so no ping falls inside the count); another host's STOP refuses the very next send, at
    the cost of one screening round trip."""
    store = RedisStore.from_url(redis_url, prefix=redis_prefix, consent_watch_seconds=60)
    gate = Gatekeeper(twilio_client, stores=Stores.using(store))
    try:
        for _ in range(3):  # fetched; facts from memory and the route kept; found clear under the route
            gate.decide(E164)
        store.flush()
        with counting() as trips:
            actions = [gate.decide(E164).action for _ in range(20)]
            assert trips.of() == (0, 0)
            assert actions == [Action.SMS] * 20
            elsewhere.opt_out(E164, source="sms:STOP", at=T0)
            before = trips.of()
            assert gate.decide(E164).twilio_code == 21610
            assert (trips.of()[0] - before[0], trips.of()[1] - before[1]) == (1, 1)
        assert twilio_http.lookups[E164] == 1
    finally:
        gate.close()


# -- the watch itself, on a fake clock ------------------------------------------------------------------------
def watch_on(url: str, clock: FakeClock, *, timeout: float = 2.0) -> ConsentWatch:
    opener = watch_connection(redis.Redis.from_url(url, socket_timeout=timeout))
    assert opener is not None
    return ConsentWatch(opener, ["w:optout:"], max_silence=1.0, clock=clock)


def test_a_client_that_decodes_to_text_is_watched_in_bytes_all_the_same(redis_url: str) -> None:
    """The watch's connection reads bytes whatever its client decodes to: pushes and pongs read as text would
    match nothing, and a STOP would go uncounted."""
    opener = watch_connection(redis.Redis.from_url(redis_url, decode_responses=True))
    assert opener is not None
    watch = ConsentWatch(opener, ["w:optout:"], max_silence=1.0, clock=FakeClock())
    before = watch.version()
    with redis.Redis.from_url(redis_url) as raw:
        raw.hset("w:optout:{x}", "*", "{}")
        raw.delete("w:optout:{x}")
    assert moved(watch.version, before) != before
    watch.close()


def test_an_idle_watch_waits_for_one_pong_and_stays_trusted(redis_url: str) -> None:
    clock = FakeClock()
    watch = watch_on(redis_url, clock)
    first = watch.version()
    assert first == watch.version() == (1, 0)
    clock.advance(0.3)  # past the heartbeat: a ping goes out, unawaited
    assert watch.version() == first
    clock.advance(60)  # a minute idle: a pong is awaited before the count is vouched for
    assert watch.version() == first
    watch.close()
    assert watch.version() != watch.version()  # closed: never trusted again


def test_a_lost_or_frozen_redis_ends_the_trust_until_it_is_back(private_redis: PrivateRedis) -> None:
    """Stopped: untrusted at once, and the next connection is a new epoch. Frozen (no answer, no reset): trusted
    until the silence passes max_silence, then the wait for a pong times out and ends it."""
    clock = FakeClock()
    watch = watch_on(private_redis.url, clock, timeout=0.3)
    before = watch.version()
    private_redis.stop()
    assert watch.version() != before and watch.version() != watch.version()
    private_redis.start()
    assert watch.version() != watch.version()  # not retried within a second of the loss
    clock.advance(1.0)
    back = watch.version()
    assert back == watch.version() == (3, 0)  # epoch 1 lost (2), remade (3): nothing from before equals it
    assert private_redis.proc is not None
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    try:
        clock.advance(0.5)
        assert watch.version() == back  # silent for half a second: still within max_silence
        clock.advance(1.0)
        assert watch.version() != back  # no pong within the 0.3 s timeout
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)


def test_where_a_watch_cannot_vouch_every_send_reads_redis(redis_url: str, redis_prefix: str) -> None:
    """A Sentinel-managed primary, ``consent_watch_ms = 0``: no watch, a version equal to nothing."""
    sentinel_primary = Sentinel([("127.0.0.1", 1)]).master_for("gkprimary")  # type: ignore[no-untyped-call]
    assert watch_connection(sentinel_primary) is None
    settings = Settings(redis={"url": redis_url, "consent_watch_ms": 0, "key_prefix": redis_prefix})
    store = RedisStore.connect(redis_target(settings), prefix=redis_prefix)
    try:
        assert store.suppression_version() != store.suppression_version()
        assert store._consent.watch is None
    finally:
        store.close()
    assert redis_target(Settings(redis={"url": redis_url})).consent_watch_seconds == 1.0


def test_a_forked_worker_makes_its_own_watch_and_neither_misses_a_push(
    redis_url: str, redis_prefix: str, elsewhere: RedisStore
) -> None:
    """A store made before a pre-forking server forks: parent and child sharing one connection would split its
    pushes between them. The child makes its own (a new epoch); each then sees a STOP written by a third."""
    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    parent_before = store.suppression_version()
    reader, writer = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its versions before and after the STOP, then leave at once
        try:
            before = store.suppression_version()
            os.write(writer, b"r")
            os.read(go_read, 1)  # the STOP is written
            after = moved(store.suppression_version, before)
            fresh = before not in (parent_before, after)
            os.write(writer, b"1" if fresh else b"0")
        finally:
            os._exit(0)

    def answer() -> bytes:  # the child's, or a failure (never a hang) should it be stuck
        ready, _, _ = select.select([reader], [], [], 30)
        return os.read(reader, 1) if ready else b"(no answer in 30 s)"

    try:
        assert answer() == b"r"
        elsewhere.opt_out(E164, source="sms:STOP", at=T0)
        os.write(go_write, b"g")
        assert answer() == b"1"
        assert moved(store.suppression_version, parent_before) != parent_before
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # gone already, unless stuck
        os.waitpid(pid, 0)
        for fd in (reader, writer, go_read, go_write):
            os.close(fd)
        store.close()
