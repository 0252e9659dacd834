"""The Redis store: shared by every process and host of a deployment.

Every read-modify-write is one command, one MULTI or one Lua script — never
SETNX then EXPIRE, never KEYS — and every key carries a ``{hash tag}`` so a
number's keys share one Redis Cluster slot: every MULTI and every script touches one slot, and what spans
slots (erasure, the status index) is sent as separate commands, which a cluster client routes. Connection and
timeout errors are translated to :class:`~gatekeeper.errors.StoreUnavailable` at this edge; a pool that stayed
full for its whole wait, to ``StoreUnavailable(reason="pool_exhausted")``. Connecting (one server, a cluster, the
primary Sentinels name; the waiting pools) is :mod:`gatekeeper.stores.redis_connect`'s.

Each verb is written once, as a generator that yields the Redis commands it needs
(:class:`Op`, or a :class:`Pipe` of them sent in one round trip) and turns their answers
into the verb's result. :class:`RedisStore` carries the commands out with redis-py's
blocking client, :class:`~gatekeeper.stores.redis_async.AsyncRedisStore` with
``redis.asyncio``: the logic and the key layout cannot drift apart.

A number's opt-outs, consent history, failures and suppression are filed under its subject key (a keyed hash,
``stores.base.subject_key``, under the ``consent`` secret kept in Redis), never under the number: the verbs that
need it ask for the secret first (:meth:`RedisVerbs._secret`), one round trip per store object, ever. The key
layout is in ``stores.base``'s docstring.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, cast

import redis
from redis.cluster import RedisCluster
from redis.exceptions import LockError, RedisClusterException, RedisError

from gatekeeper.models import AuditEntry, StatusRecord
from gatekeeper.stores.base import (
    ACCOUNT_SCOPE,
    CachedLookup,
    Claim,
    ConsentChange,
    Risk,
)
from gatekeeper.stores.redis_connect import RedisTarget, connect, durability_risks, primaries_risks
from gatekeeper.stores.redis_scripts import SCRIPTS
from gatekeeper.stores.redis_verbs import Op, Pipe, RedisVerbs, Verb, unavailable
from gatekeeper.stores.redis_watch import ConsentVersion
from gatekeeper.stores.write_behind import AuditWriter

__all__ = ["SCRIPTS", "Op", "Pipe", "RedisStore", "RedisVerbs", "durability_risks", "unavailable"]


class RedisStore(RedisVerbs):
    """Every store protocol on one Redis, a Redis Cluster or a Sentinel-watched primary, with redis-py's blocking
    client (``redis.Redis`` or ``RedisCluster``)."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster | Callable[[], redis.Redis | RedisCluster],
        *,
        prefix: str = "gk:",
        audit_max: int = 100_000,
        audit_max_age_seconds: float | None = None,
        lock_poll_seconds: float = 0.005,
        consent_watch_seconds: float = 1.0,
    ) -> None:
        """``client``, or a function making it at the first command (a cluster client asks for the slots when
        made: a cluster down when the process starts then fails commands, as a server down would, not the start).
        ``consent_watch_seconds``: how long the consent watch (``redis_watch``) is trusted without hearing from
        Redis; 0, no watch: every send reads consent from Redis."""
        super().__init__(prefix=prefix, audit_max=audit_max, audit_max_age_seconds=audit_max_age_seconds)
        self._lock_poll = lock_poll_seconds
        self._watch_seconds = consent_watch_seconds
        self._consent = ConsentVersion()
        self._client: Any = None
        self._make = None if isinstance(client, (redis.Redis, RedisCluster)) else client
        self._making = threading.Lock()
        self._audit = AuditWriter(lambda entries: self._run(self._record(entries)))
        if self._make is None:
            self._use(client)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "gk:",
        timeout_seconds: float = 2.0,
        audit_max_age_seconds: float | None = None,
        max_connections: int = 50,
        pool_timeout_seconds: float = 2.0,
        consent_watch_seconds: float = 1.0,
    ) -> RedisStore:
        """One Redis server, with timeouts set (a dead Redis fails fast instead of hanging a send) and a pool of
        ``max_connections`` that a burst waits on, up to ``pool_timeout_seconds``."""
        target = RedisTarget(
            url, timeout_seconds=timeout_seconds, max_connections=max_connections,
            pool_timeout_seconds=pool_timeout_seconds, consent_watch_seconds=consent_watch_seconds,
        )  # fmt: skip
        return cls.connect(target, prefix=prefix, audit_max_age_seconds=audit_max_age_seconds)

    @classmethod
    def connect(
        cls, target: RedisTarget, *, prefix: str = "gk:", audit_max_age_seconds: float | None = None
    ) -> RedisStore:
        """The store on ``target``: one server, a cluster or a Sentinel-watched primary (see ``redis_connect``)."""
        return cls(
            lambda: connect(target), prefix=prefix, audit_max_age_seconds=audit_max_age_seconds,
            consent_watch_seconds=target.consent_watch_seconds,
        )  # fmt: skip

    def _use(self, client: Any) -> None:
        self._scripts = {name: client.register_script(body) for name, body in SCRIPTS.items()}
        self._cluster = isinstance(client, RedisCluster)
        if not self._cluster:
            self._consent.watch_with(client, self._p, self._watch_seconds, wait=True)
        self._client = client

    @property
    def _r(self) -> Any:
        client = self._client
        if client is None:
            with self._making:
                if self._client is None:
                    assert self._make is not None
                    self._use(self._make())
                client = self._client
        return client

    def close(self) -> None:
        self._audit.close()
        self._consent.close()
        if self._client is not None:
            self._client.close()

    def durability(self) -> list[Risk]:
        """How this Redis may lose acknowledged opt-outs (see ``redis_connect.durability_risks``): on a cluster,
        each primary's risks; behind Sentinels, the current primary's."""
        try:
            client = self._r
            if self._cluster:
                return primaries_risks({node.name: self._report(node) for node in client.get_primaries()})
            return durability_risks(*self._report(None))
        except (RedisError, RedisClusterException) as exc:
            raise unavailable(exc) from exc

    def _report(self, node: Any) -> tuple[dict[str, Any], str | None]:
        """One server's INFO persistence and memory, and its RDB schedule (None when CONFIG is refused)."""
        at = {} if node is None else {"target_nodes": node}
        info = {**self._r.info("persistence", **at), **self._r.info("memory", **at)}
        try:
            return info, str(self._r.config_get("save", **at).get("save", ""))
        except RedisError:  # CONFIG renamed or refused (managed Redis): the schedule cannot be read
            return info, None

    def _run(self, verb: Verb) -> Any:
        """Carry out a verb's commands with the blocking client, its errors as StoreUnavailable."""
        answer: Any = None
        try:
            if self._client is None:
                self._r  # noqa: B018 - connected before the verb runs: it asks whether this is a cluster
            while True:
                step = verb.send(answer)
                answer = self._pipe(step) if isinstance(step, Pipe) else self._op(self._r, step)
        except StopIteration as end:
            return end.value
        except (RedisError, RedisClusterException) as exc:
            raise unavailable(exc) from exc

    def _op(self, target: Any, op: Op, *, piped: bool = False) -> Any:
        if op.name.startswith("script:"):
            # In a pipeline, EVAL: a cluster pipeline refuses EVALSHA, and redis-py's own pipeline checks its
            # scripts with SCRIPT EXISTS first, a round trip of its own; the script's text costs less than that.
            if piped:
                keys, args = op.kwargs["keys"], op.kwargs["args"]
                return target.execute_command("EVAL", SCRIPTS[op.name[7:]], len(keys), *keys, *args)
            return self._scripts[op.name[7:]](client=target, **op.kwargs)
        if op.name == "scan_at":
            near, cursor = op.args
            if self._cluster:
                cursors, keys = target.scan(cursor, target_nodes=target.get_node_from_key(near), **op.kwargs)
                return next(iter(cursors.values())), keys
            return target.scan(cursor, **op.kwargs)
        return getattr(target, op.name)(*op.args, **op.kwargs)

    def _pipe(self, step: Pipe) -> Any:
        with self._r.pipeline(transaction=step.transaction) as pipe:
            for op in step.ops:
                self._op(pipe, op, piped=True)
            return pipe.execute()

    # -- lookup cache ---------------------------------------------------------------
    def get_lookup(self, key: str) -> CachedLookup | None:
        return cast("CachedLookup | None", self._run(self._get_lookup(key)))

    def put_lookup(self, key: str, entry: CachedLookup, *, ttl_seconds: float) -> None:
        self._run(self._put_lookup(key, entry, ttl_seconds))

    @contextmanager
    def fill_lock(self, key: str, *, ttl_seconds: float, wait_seconds: float) -> Iterator[bool]:
        try:
            lock = self._r.lock(
                f"{self._p}fill:{key}",
                timeout=ttl_seconds,
                sleep=self._lock_poll,
                blocking_timeout=max(wait_seconds, 0.001),
                thread_local=False,
            )
            acquired = bool(lock.acquire())
        except (RedisError, RedisClusterException) as exc:
            raise unavailable(exc) from exc
        try:
            yield acquired
        finally:
            if acquired:
                # Expired under us or Redis went away: the lock's TTL frees it either way.
                with suppress(LockError, RedisError, RedisClusterException):
                    lock.release()

    # -- suppression version ----------------------------------------------------------
    def suppression_version(self) -> Hashable:
        """Changes with every suppressing write, by this process or any other, while the consent watch can vouch
        for it (``redis_watch``: standalone Redis, ``consent_watch_seconds`` > 0); otherwise a new object each
        time, equal to nothing, so the gate reads Redis."""
        if self._client is None:
            self._r  # noqa: B018 - made, so the watch is
        return self._consent.read()

    # -- secrets and erasure --------------------------------------------------------
    def secret(self, name: str) -> bytes:
        """32 random bytes kept in Redis under ``name``: the same for every process on this prefix."""
        return cast("bytes", self._run(self._secret(name)))

    def erase(self, e164: str, *, to_hash: str, at: float) -> None:
        """Forget the number, keeping a do-not-contact tombstone (see ``stores.base.Erasure``)."""
        self._audit.flush()  # a queued record of the number is erased with the others
        with self._consent.writing():
            self._run(self._erase(e164, to_hash, at))

    # -- opt-outs -------------------------------------------------------------------
    def opt_out(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        with self._consent.writing():
            return bool(self._run(self._opt_out(e164, scope, source, at)))

    def opt_in(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        return bool(self._run(self._opt_in(e164, scope, source, at)))

    def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        return cast("str | None", self._run(self._opted_out_scope(e164, scopes)))

    def consent_history(self, e164: str, *, limit: int = 50) -> list[ConsentChange]:
        return cast("list[ConsentChange]", self._run(self._consent_history(e164, limit)))

    # -- delivery failures and suppression -----------------------------------------
    def record_failure(self, e164: str, event_id: str, *, at: float, window_seconds: float) -> int:
        with self._consent.writing():
            return int(self._run(self._record_failure(e164, event_id, at, window_seconds)))

    def suppress(self, e164: str, *, ttl_seconds: float, reason: str, at: float) -> None:
        with self._consent.writing():
            self._run(self._suppress(e164, ttl_seconds, reason))

    def suppression(self, e164: str, *, now: float, window_seconds: float, threshold: int) -> str | None:
        return cast("str | None", self._run(self._suppression(e164, now, window_seconds, threshold)))

    def screening(
        self, e164: str, scopes: Sequence[str], *, now: float, window_seconds: float, threshold: int
    ) -> tuple[str | None, str | None]:
        return cast(
            "tuple[str | None, str | None]", self._run(self._screening(e164, scopes, now, window_seconds, threshold))
        )

    def lift_suppression(self, e164: str) -> bool:
        return bool(self._run(self._lift_suppression(e164)))

    # -- idempotency ---------------------------------------------------------------
    def claim(self, key: str, fingerprint: str, *, ttl_seconds: float) -> Claim:
        return cast("Claim", self._run(self._claim(key, fingerprint, ttl_seconds)))

    def complete(self, key: str, token: str, result: bytes, *, ttl_seconds: float) -> None:
        self._run(self._settle(key, token, "done", result, ttl_seconds))

    def abandon(self, key: str, token: str) -> None:
        self._run(self._settle(key, token, "", None, 1))

    def mark_unknown(self, key: str, token: str, *, ttl_seconds: float) -> None:
        self._run(self._settle(key, token, "unknown", None, ttl_seconds))

    # -- delivery statuses ---------------------------------------------------------
    def apply_status(
        self,
        sid: str,
        status: str,
        rank: int,
        *,
        error_code: int | None,
        at: float,
        to_hash: str | None = None,
        ttl_seconds: float,
    ) -> bool:
        verb = self._apply_status(sid, status, rank, error_code=error_code, at=at, to_hash=to_hash, ttl=ttl_seconds)
        return bool(self._run(verb))

    def apply_status_event(
        self,
        event: str,
        sid: str,
        status: str,
        rank: int,
        *,
        error_code: int | None,
        at: float,
        to_hash: str | None = None,
        ttl_seconds: float,
    ) -> tuple[bool, bool]:
        """A status callback whole, in one round trip (see ``stores.base.StatusEvents``)."""
        verb = self._status_event(
            event, sid, status, rank, error_code=error_code, at=at, to_hash=to_hash, ttl=ttl_seconds
        )
        return cast("tuple[bool, bool]", self._run(verb))

    def status_of(self, sid: str) -> StatusRecord | None:
        return cast("StatusRecord | None", self._run(self._status_of(sid)))

    # -- rate limits ---------------------------------------------------------------
    def reserve(self, bucket: str, *, rate_per_second: float, burst: int, now: float) -> float:
        """Reserve a permit on the Redis server's clock (``now`` is ignored: hosts' clocks differ)."""
        return float(self._run(self._reserve(bucket, rate_per_second, burst)))

    def take(
        self, bucket: str, *, rate_per_second: float, burst: int, now: float, max_wait: float
    ) -> tuple[bool, float]:
        """A permit on the Redis server's clock, shared by every process and host (``now`` is ignored)."""
        return cast("tuple[bool, float]", self._run(self._take(bucket, rate_per_second, burst, max_wait)))

    def pause(self, bucket: str, *, until: float) -> None:
        """``until`` is this host's clock (``time.time()``): Redis keeps the pause's end on its own, by the
        seconds left."""
        self._run(self._pause(bucket, until - time.time() if until > 0 else 0.0))

    def paused_until(self, bucket: str) -> float:
        left = float(self._run(self._pause_left(bucket)))
        return time.time() + left if left > 0 else 0.0

    # -- ledger --------------------------------------------------------------------
    def spend(self, caps: Sequence[tuple[str, float]], amount: float, *, ttl_seconds: float) -> str | None:
        """Every cap's total, all or none, in one script (see ``stores.base.Ledger``)."""
        return cast("str | None", self._run(self._spend(caps, amount, ttl_seconds)))

    # -- windows -------------------------------------------------------------------
    def hit(self, key: str, event: str, *, at: float, window_seconds: float, limit: int) -> tuple[int, float | None]:
        """One event of a sliding window (see ``stores.base.Windows``): one script on the window's key."""
        return cast("tuple[int, float | None]", self._run(self._hit(key, event, at, window_seconds, limit)))

    def hits(
        self, checks: Sequence[tuple[str, float, int]], event: str, *, at: float
    ) -> list[tuple[int, float | None]]:
        """Several windows' events in one round trip (see ``stores.base.WindowBatch``)."""
        return cast("list[tuple[int, float | None]]", self._run(self._hits(checks, event, at)))

    def tally(self, ranges: Sequence[tuple[str, float, float]]) -> list[int]:
        """Events per ``(key, since, until)`` in one round trip (see ``stores.base.WindowTally``)."""
        return cast("list[int]", self._run(self._tally(ranges)))

    # -- audit ---------------------------------------------------------------------
    def record(self, entry: AuditEntry) -> None:
        """Queued, and sent with the next batch by the write-behind (see ``stores.write_behind``)."""
        self._audit.add(entry)

    def flush(self) -> None:
        """Send the audit records this store has queued (see ``stores.write_behind``) now; reads do this first."""
        self._audit.flush()

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        self._audit.flush()  # this process's own records first
        return cast("list[dict[str, Any]]", self._run(self._recent(limit)))
