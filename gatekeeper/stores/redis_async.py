"""The Redis store for the async gate: the same verbs and keys as :class:`~gatekeeper.stores.redis.RedisStore`,
carried out with ``redis.asyncio``, so no call waits on the event loop.

Every verb is the blocking store's own (see :class:`~gatekeeper.stores.redis.RedisVerbs`); only the
driver that sends the commands is written here, and the fill lock, which redis-py implements apart
for its async client. Both stores read and write the same keys: processes of either kind share one
deployment's state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import LockError, RedisError

from gatekeeper.errors import InvalidArgument
from gatekeeper.models import AuditEntry, StatusRecord
from gatekeeper.stores.base import ACCOUNT_SCOPE, CachedLookup, Claim, ConsentChange, Risk
from gatekeeper.stores.redis import SCRIPTS, Op, Pipe, RedisVerbs, Verb, durability_risks, unavailable


class AsyncRedisStore(RedisVerbs):
    """Every store verb as a coroutine, on one Redis (or Redis Cluster), with ``redis.asyncio``."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "gk:",
        audit_max: int = 100_000,
        audit_max_age_seconds: float | None = None,
        lock_poll_seconds: float = 0.005,
    ) -> None:
        super().__init__(prefix=prefix, audit_max=audit_max, audit_max_age_seconds=audit_max_age_seconds)
        self._r = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock_poll = lock_poll_seconds
        self._scripts = {name: client.register_script(body) for name, body in SCRIPTS.items()}

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "gk:",
        timeout_seconds: float = 2.0,
        audit_max_age_seconds: float | None = None,
    ) -> AsyncRedisStore:
        """Connect with timeouts set, so a dead Redis fails fast instead of holding a send."""
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds, health_check_interval=30
        )
        return cls(client, prefix=prefix, audit_max_age_seconds=audit_max_age_seconds)

    async def close(self) -> None:
        self._same_loop()
        await self._r.aclose()

    async def durability(self) -> list[Risk]:
        """How this Redis may lose acknowledged opt-outs (see ``stores.redis.durability_risks``)."""
        self._same_loop()
        try:
            info = {**await self._r.info("persistence"), **await self._r.info("memory")}
        except RedisError as exc:
            raise unavailable(exc) from exc
        try:
            save: str | None = str((await self._r.config_get("save")).get("save", ""))
        except RedisError:
            save = None
        return durability_risks(info, save)

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
        except RedisError as exc:
            raise unavailable(exc) from exc

    async def _op(self, target: Any, op: Op) -> Any:
        if op.name.startswith("script:"):
            return await self._scripts[op.name[7:]](client=target, **op.kwargs)
        return await getattr(target, op.name)(*op.args, **op.kwargs)

    async def _pipe(self, step: Pipe) -> Any:
        async with self._r.pipeline(transaction=step.transaction) as pipe:
            for op in step.ops:
                if op.name.startswith("script:"):
                    await self._scripts[op.name[7:]](client=pipe, **op.kwargs)
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
        except RedisError as exc:
            raise unavailable(exc) from exc
        try:
            yield acquired
        finally:
            if acquired:
                with suppress(LockError, RedisError):  # expired, or Redis went away: the TTL frees it
                    await lock.release()

    # -- secrets and erasure --------------------------------------------------------
    async def secret(self, name: str) -> bytes:
        """32 random bytes kept in Redis under ``name``: the same for every store on this prefix, blocking or async."""
        return cast("bytes", await self._run(self._secret(name)))

    async def erase(self, e164: str, *, to_hash: str, at: float) -> None:
        """Forget the number, keeping a do-not-contact tombstone (see ``stores.base.Erasure``)."""
        await self._run(self._erase(e164, to_hash, at))

    # -- opt-outs -------------------------------------------------------------------
    async def opt_out(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        return bool(await self._run(self._opt_out(e164, scope, source, at)))

    async def opt_in(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        return bool(await self._run(self._opt_in(e164, scope, source, at)))

    async def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        return cast("str | None", await self._run(self._opted_out_scope(e164, scopes)))

    async def consent_history(self, e164: str, *, limit: int = 50) -> list[ConsentChange]:
        return cast("list[ConsentChange]", await self._run(self._consent_history(e164, limit)))

    # -- delivery failures and suppression -----------------------------------------
    async def record_failure(self, e164: str, event_id: str, *, at: float, window_seconds: float) -> int:
        return int(await self._run(self._record_failure(e164, event_id, at, window_seconds)))

    async def suppress(self, e164: str, *, ttl_seconds: float, reason: str, at: float) -> None:
        await self._run(self._suppress(e164, ttl_seconds, reason))

    async def suppression(self, e164: str, *, now: float, window_seconds: float, threshold: int) -> str | None:
        return cast("str | None", await self._run(self._suppression(e164, now, window_seconds, threshold)))

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

    async def status_of(self, sid: str) -> StatusRecord | None:
        return cast("StatusRecord | None", await self._run(self._status_of(sid)))

    # -- rate limits ---------------------------------------------------------------
    async def reserve(self, bucket: str, *, rate_per_second: float, burst: int, now: float) -> float:
        """Reserve a permit on the Redis server's clock (``now`` is ignored: hosts' clocks differ)."""
        return float(await self._run(self._reserve(bucket, rate_per_second, burst)))

    # -- audit ---------------------------------------------------------------------
    async def record(self, entry: AuditEntry) -> None:
        await self._run(self._record(entry))

    async def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", await self._run(self._recent(limit)))
