"""The Redis store for the async gate: the same verbs and keys as :class:`~gatekeeper.stores.redis.RedisStore`,
carried out with ``redis.asyncio``, so no call waits on the event loop.

Every verb is the blocking store's own (see :class:`~gatekeeper.stores.redis.RedisVerbs`); only the
driver that sends the commands is written here, and the fill lock, which redis-py implements apart
for its async client. Both stores read and write the same keys: processes of either kind share one
deployment's state. The client is ``redis.asyncio.Redis`` (one server, or the primary Sentinels name) or
``redis.asyncio.cluster.RedisCluster``, connected by :mod:`gatekeeper.stores.redis_connect`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import LockError, RedisClusterException, RedisError

from gatekeeper.errors import InvalidArgument
from gatekeeper.models import AuditEntry, StatusRecord
from gatekeeper.stores.base import ACCOUNT_SCOPE, CachedLookup, Claim, ConsentChange, Risk
from gatekeeper.stores.redis_connect import (
    AsyncWaitingCluster,
    RedisTarget,
    connect_async,
    durability_risks,
    primaries_risks,
)
from gatekeeper.stores.redis_scripts import SCRIPTS
from gatekeeper.stores.redis_verbs import Op, Pipe, RedisVerbs, Verb, unavailable
from gatekeeper.stores.redis_watch import ConsentVersion
from gatekeeper.stores.write_behind import AsyncAuditWriter


class AsyncRedisStore(RedisVerbs):
    """Every store verb as a coroutine, on one Redis, a Redis Cluster or a Sentinel-watched primary, with
    ``redis.asyncio``."""

    def __init__(
        self,
        client: aioredis.Redis | AsyncRedisCluster,
        *,
        prefix: str = "gk:",
        audit_max: int = 100_000,
        audit_max_age_seconds: float | None = None,
        lock_poll_seconds: float = 0.005,
        consent_watch_seconds: float = 1.0,
    ) -> None:
        """``consent_watch_seconds``: as the blocking store's (``redis_watch``); here the watch never makes the
        event loop wait: while it connects (in a thread) or awaits a pong, sends read Redis."""
        super().__init__(prefix=prefix, audit_max=audit_max, audit_max_age_seconds=audit_max_age_seconds)
        self._r: Any = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock_poll = lock_poll_seconds
        self._scripts = {name: client.register_script(body) for name, body in SCRIPTS.items()}
        self._cluster = isinstance(client, AsyncRedisCluster)
        self._consent = ConsentVersion()
        if not self._cluster:
            self._consent.watch_with(client, self._p, consent_watch_seconds, wait=False)
        self._audit = AsyncAuditWriter(lambda entries: self._run(self._record(entries)))

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
    ) -> AsyncRedisStore:
        """One Redis server, with timeouts set (a dead Redis fails fast instead of holding a send) and a pool of
        ``max_connections`` that a burst waits on, up to ``pool_timeout_seconds``."""
        target = RedisTarget(
            url, timeout_seconds=timeout_seconds, max_connections=max_connections,
            pool_timeout_seconds=pool_timeout_seconds, consent_watch_seconds=consent_watch_seconds,
        )  # fmt: skip
        return cls.connect(target, prefix=prefix, audit_max_age_seconds=audit_max_age_seconds)

    @classmethod
    def connect(
        cls, target: RedisTarget, *, prefix: str = "gk:", audit_max_age_seconds: float | None = None
    ) -> AsyncRedisStore:
        """The store on ``target``: one server, a cluster or a Sentinel-watched primary (see ``redis_connect``).
        Nothing is connected until the first verb, in its event loop."""
        return cls(
            connect_async(target), prefix=prefix, audit_max_age_seconds=audit_max_age_seconds,
            consent_watch_seconds=target.consent_watch_seconds,
        )  # fmt: skip

    async def close(self) -> None:
        self._same_loop()
        await self._audit.close()
        self._consent.close()
        await self._r.aclose()

    async def durability(self) -> list[Risk]:
        """How this Redis may lose acknowledged opt-outs (see ``redis_connect.durability_risks``): on a cluster,
        each primary's risks; behind Sentinels, the current primary's."""
        self._same_loop()
        try:
            if self._cluster:
                await self._r.initialize()  # the nodes are known once the client has asked for the slots
                return primaries_risks({node.name: await self._report(node) for node in self._r.get_primaries()})
            return durability_risks(*await self._report(None))
        except (RedisError, RedisClusterException) as exc:
            raise unavailable(exc) from exc

    async def _report(self, node: Any) -> tuple[dict[str, Any], str | None]:
        at = {} if node is None else {"target_nodes": node}
        info = {**await self._r.info("persistence", **at), **await self._r.info("memory", **at)}
        try:
            return info, str((await self._r.config_get("save", **at)).get("save", ""))
        except RedisError:  # CONFIG renamed or refused (managed Redis): the schedule cannot be read
            return info, None

    def _same_loop(self) -> None:
        """redis.asyncio's connections belong to the loop that opened them: the store serves that loop only."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise InvalidArgument("an AsyncRedisStore serves one event loop: make one store (and gate) per loop")

    async def _run(self, verb: Verb) -> Any:
        """Carry out a verb's commands with the async client, its errors as StoreUnavailable."""
        self._same_loop()
        answer: Any = None
        try:
            while True:
                step = verb.send(answer)
                answer = await (self._pipe(step) if isinstance(step, Pipe) else self._op(self._r, step))
        except StopIteration as end:
            return end.value
        except (RedisError, RedisClusterException) as exc:
            raise unavailable(exc) from exc

    async def _op(self, target: Any, op: Op) -> Any:
        if op.name.startswith("script:"):
            return await self._scripts[op.name[7:]](client=target, **op.kwargs)
        if op.name == "scan_at":
            near, cursor = op.args
            if self._cluster:
                cursors, keys = await target.scan(cursor, target_nodes=target.get_node_from_key(near), **op.kwargs)
                return next(iter(cursors.values())), keys
            return await target.scan(cursor, **op.kwargs)
        return await getattr(target, op.name)(*op.args, **op.kwargs)

    async def _pipe(self, step: Pipe) -> Any:
        turn = self._r.turn() if isinstance(self._r, AsyncWaitingCluster) else _no_turn()
        async with turn, self._r.pipeline(transaction=step.transaction) as pipe:
            for op in step.ops:
                if op.name.startswith("script:"):  # EVAL: see RedisStore._op
                    keys, args = op.kwargs["keys"], op.kwargs["args"]
                    pipe.execute_command("EVAL", SCRIPTS[op.name[7:]], len(keys), *keys, *args)
                else:
                    getattr(pipe, op.name)(*op.args, **op.kwargs)  # queued; answered by execute()
            return await pipe.execute()

    # -- lookup cache ---------------------------------------------------------------
    async def get_lookup(self, key: str) -> CachedLookup | None:
        return cast("CachedLookup | None", await self._run(self._get_lookup(key)))

    async def put_lookup(self, key: str, entry: CachedLookup, *, ttl_seconds: float) -> None:
        await self._run(self._put_lookup(key, entry, ttl_seconds))

    @asynccontextmanager
    async def fill_lock(self, key: str, *, ttl_seconds: float, wait_seconds: float) -> AsyncIterator[bool]:
        """The single-flight lock for ``key`` across processes; yields False if it could not be had in time."""
        self._same_loop()
        lock = self._r.lock(
            f"{self._p}fill:{key}",
            timeout=ttl_seconds,
            sleep=self._lock_poll,
            blocking_timeout=max(wait_seconds, 0.001),
            thread_local=False,
        )
        try:
            acquired = bool(await lock.acquire())
        except (RedisError, RedisClusterException) as exc:
            raise unavailable(exc) from exc
        try:
            yield acquired
        finally:
            if acquired:  # expired, or Redis went away: the TTL frees it
                with suppress(LockError, RedisError, RedisClusterException):
                    await lock.release()

    # -- suppression version ----------------------------------------------------------
    async def suppression_version(self) -> Hashable:
        """As the blocking store's (``RedisStore.suppression_version``); it never waits on Redis."""
        return self._consent.read()

    # -- secrets and erasure --------------------------------------------------------
    async def secret(self, name: str) -> bytes:
        """32 random bytes kept in Redis under ``name``: the same for every store on this prefix, blocking or async."""
        return cast("bytes", await self._run(self._secret(name)))

    async def erase(self, e164: str, *, to_hash: str, at: float) -> None:
        """Forget the number, keeping a do-not-contact tombstone (see ``stores.base.Erasure``)."""
        await self._audit.flush()  # a queued record of the number is erased with the others
        with self._consent.writing():
            await self._run(self._erase(e164, to_hash, at))

    # -- opt-outs -------------------------------------------------------------------
    async def opt_out(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        with self._consent.writing():
            return bool(await self._run(self._opt_out(e164, scope, source, at)))

    async def opt_in(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        return bool(await self._run(self._opt_in(e164, scope, source, at)))

    async def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        return cast("str | None", await self._run(self._opted_out_scope(e164, scopes)))

    async def consent_history(self, e164: str, *, limit: int = 50) -> list[ConsentChange]:
        return cast("list[ConsentChange]", await self._run(self._consent_history(e164, limit)))

    # -- delivery failures and suppression -----------------------------------------
    async def record_failure(self, e164: str, event_id: str, *, at: float, window_seconds: float) -> int:
        with self._consent.writing():
            return int(await self._run(self._record_failure(e164, event_id, at, window_seconds)))

    async def suppress(self, e164: str, *, ttl_seconds: float, reason: str, at: float) -> None:
        with self._consent.writing():
            await self._run(self._suppress(e164, ttl_seconds, reason))

    async def suppression(self, e164: str, *, now: float, window_seconds: float, threshold: int) -> str | None:
        return cast("str | None", await self._run(self._suppression(e164, now, window_seconds, threshold)))

    async def screening(
        self, e164: str, scopes: Sequence[str], *, now: float, window_seconds: float, threshold: int
    ) -> tuple[str | None, str | None]:
        answer = await self._run(self._screening(e164, scopes, now, window_seconds, threshold))
        return cast("tuple[str | None, str | None]", answer)

    async def lift_suppression(self, e164: str) -> bool:
        return bool(await self._run(self._lift_suppression(e164)))

    # -- idempotency ---------------------------------------------------------------
    async def claim(self, key: str, fingerprint: str, *, ttl_seconds: float) -> Claim:
        return cast("Claim", await self._run(self._claim(key, fingerprint, ttl_seconds)))

    async def complete(self, key: str, token: str, result: bytes, *, ttl_seconds: float) -> None:
        await self._run(self._settle(key, token, "done", result, ttl_seconds))

    async def abandon(self, key: str, token: str) -> None:
        await self._run(self._settle(key, token, "", None, 1))

    async def mark_unknown(self, key: str, token: str, *, ttl_seconds: float) -> None:
        await self._run(self._settle(key, token, "unknown", None, ttl_seconds))

    # -- delivery statuses ---------------------------------------------------------
    async def apply_status(
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
        return bool(await self._run(verb))

    async def apply_status_event(
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
        return cast("tuple[bool, bool]", await self._run(verb))

    async def status_of(self, sid: str) -> StatusRecord | None:
        return cast("StatusRecord | None", await self._run(self._status_of(sid)))

    # -- rate limits ---------------------------------------------------------------
    async def reserve(self, bucket: str, *, rate_per_second: float, burst: int, now: float) -> float:
        """Reserve a permit on the Redis server's clock (``now`` is ignored: hosts' clocks differ)."""
        return float(await self._run(self._reserve(bucket, rate_per_second, burst)))

    async def take(
        self, bucket: str, *, rate_per_second: float, burst: int, now: float, max_wait: float
    ) -> tuple[bool, float]:
        """A permit on the Redis server's clock, shared by every process and host (``now`` is ignored)."""
        return cast("tuple[bool, float]", await self._run(self._take(bucket, rate_per_second, burst, max_wait)))

    async def pause(self, bucket: str, *, until: float) -> None:
        """``until`` is this host's clock (``time.time()``); Redis keeps the pause by the seconds left."""
        await self._run(self._pause(bucket, until - time.time() if until > 0 else 0.0))

    async def paused_until(self, bucket: str) -> float:
        left = float(await self._run(self._pause_left(bucket)))
        return time.time() + left if left > 0 else 0.0

    # -- ledger --------------------------------------------------------------------
    async def spend(self, caps: Sequence[tuple[str, float]], amount: float, *, ttl_seconds: float) -> str | None:
        """Every cap's total, all or none, in one script (see ``stores.base.Ledger``)."""
        return cast("str | None", await self._run(self._spend(caps, amount, ttl_seconds)))

    # -- windows -------------------------------------------------------------------
    async def hit(
        self, key: str, event: str, *, at: float, window_seconds: float, limit: int
    ) -> tuple[int, float | None]:
        """One event of a sliding window (see ``stores.base.Windows``): one script on the window's key."""
        return cast("tuple[int, float | None]", await self._run(self._hit(key, event, at, window_seconds, limit)))

    async def hits(
        self, checks: Sequence[tuple[str, float, int]], event: str, *, at: float
    ) -> list[tuple[int, float | None]]:
        """Several windows' events in one round trip (see ``stores.base.WindowBatch``)."""
        return cast("list[tuple[int, float | None]]", await self._run(self._hits(checks, event, at)))

    async def tally(self, ranges: Sequence[tuple[str, float, float]]) -> list[int]:
        """Events per ``(key, since, until)`` in one round trip (see ``stores.base.WindowTally``)."""
        return cast("list[int]", await self._run(self._tally(ranges)))

    # -- audit ---------------------------------------------------------------------
    async def record(self, entry: AuditEntry) -> None:
        """Queued, and sent with the next batch by a task on this loop (see ``stores.write_behind``)."""
        self._same_loop()
        self._audit.add(entry)

    async def flush(self) -> None:
        """Send the audit records this store has queued (see ``stores.write_behind``) now; reads do this first."""
        await self._audit.flush()

    async def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        await self._audit.flush()  # this process's own records first
        return cast("list[dict[str, Any]]", await self._run(self._recent(limit)))


@asynccontextmanager
async def _no_turn() -> AsyncIterator[None]:
    yield
