"""Connecting the Redis stores as ``[redis]`` says: one server, a Redis Cluster, or the primary that Sentinels name,
always through a pool that *waits* for a free connection.

redis-py's default pool opens a connection per concurrent command and raises at once past its limit: under a burst
(a thousand threads deciding at once) most commands failed, each failure refusing a send (``store:unavailable``) or
skipping the Lookup cache's single-flight lock (a Lookup per thread). Here every client takes at most
``max_connections`` connections per process (per node on a cluster); a command finding them all busy waits up to
``pool_timeout_seconds`` for one, and only then fails, as ``MaxConnectionsError``, which the stores report as
``StoreUnavailable(reason="pool_exhausted")`` (the gate's ``store:pool_exhausted``).

- standalone: :class:`WaitingRedis` over :class:`WaitingPool` (``redis.asyncio.Redis`` over :class:`AsyncWaitingPool`).
- cluster: :class:`WaitingCluster` with a :class:`WaitingPool` per node. ``redis.asyncio.cluster.RedisCluster``
  has no pool class to give: its nodes raise when full, so :class:`AsyncWaitingCluster` holds each command to a turn
  among ``max_connections``, waiting as the pools do.
- sentinel: the primary of ``service_name``, as the Sentinels name it at each (re)connection, over
  :class:`WaitingSentinelPool` / :class:`AsyncWaitingSentinelPool`.

The blocking clients' locks (the Lookup cache's fill lock) are :class:`QueuedLock` locks: a thousand threads of one
process waiting for one number's fill lock wait their turn in the process, and one of them at a time asks Redis.
redis-py's own lock has every waiter poll Redis (a command every few milliseconds each): the waiters took every
connection, so the burst's other commands waited out the pool (refusals, ``store:pool_exhausted``; a fill lock that
could not be asked for, a Lookup more), and the lock passed from waiter to waiter slowly enough that hundreds waited
out ``[lookup] fill_wait_ms`` (``tests/test_redis_scale.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.cluster import RedisCluster
from redis.connection import SSLConnection, parse_url
from redis.exceptions import MaxConnectionsError
from redis.lock import Lock
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from gatekeeper.stores.base import Risk

Mode = Literal["standalone", "cluster", "sentinel"]


@dataclass(frozen=True)
class RedisTarget:
    """Where a Redis store connects, and its pool: ``[redis]`` as the stores take it (``wiring`` builds one).

    ``url`` names the server (standalone), any node (cluster), or only the database and credentials of the
    primary (sentinel: the Sentinels at ``sentinels``, ``(host, port)`` pairs, name its address for
    ``service_name``; ``sentinel_password`` is the Sentinels' own, if they require one).
    """

    url: str = field(repr=False)  # may hold a password
    mode: Mode = "standalone"
    sentinels: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 2.0
    max_connections: int = 50
    pool_timeout_seconds: float = 2.0
    consent_watch_seconds: float = 1.0  # the blocking store's consent watch (``redis_watch``); 0: none

    def _sockets(self) -> dict[str, Any]:
        return {"socket_timeout": self.timeout_seconds, "socket_connect_timeout": self.timeout_seconds}

    def _pool(self) -> dict[str, Any]:
        return {"max_connections": self.max_connections, "timeout": self.pool_timeout_seconds, **self._sockets()}

    def _primary(self) -> dict[str, Any]:
        """The URL's database, credentials and options, for the primary the Sentinels name (its host is theirs)."""
        options: dict[str, Any] = parse_url(self.url)  # type: ignore[no-untyped-call]
        for ignored in ("host", "port", "path"):
            options.pop(ignored, None)
        if options.pop("connection_class", None) is SSLConnection:
            options["ssl"] = True
        return options

    def _sentinel_options(self) -> dict[str, Any]:
        return {**self._sockets(), **({"password": self.sentinel_password} if self.sentinel_password else {})}


def _exhausted(size: int, wait: float | None) -> MaxConnectionsError:
    """Every connection of the pool stayed busy for the pool's whole wait: redis-py's own error for a full pool,
    so its cluster client does not take it for a failed node, and the stores report ``pool_exhausted``."""
    return MaxConnectionsError(f"all {size} connections of this process's pool stayed busy for {wait}s")


#: While a cluster pipeline of this thread runs (:meth:`WaitingCluster.pipeline`): whether a wait for a node's
#: connection ran out in it already.
_PIPELINE_WAITED: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar(
    "gatekeeper_pipeline_waited", default=None
)


class WaitingPool(redis.BlockingConnectionPool):
    """redis-py's blocking pool, failing with ``MaxConnectionsError`` when its wait runs out. In a cluster pipeline
    whose wait ran out already it fails at once: redis-py retries such a pipeline (up to ten times), and each retry
    waiting the pool out again made a wait of ``pool_timeout_ms`` last eleven times as long."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        waited = _PIPELINE_WAITED.get()
        if waited and waited[0]:
            raise _exhausted(self.max_connections, self.timeout)
        try:
            return super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.ConnectionError as exc:
            if isinstance(exc.__context__, queue.Empty):  # the wait ran out; not a connection that failed
                if waited is not None:
                    waited[0] = True
                raise _exhausted(self.max_connections, self.timeout) from exc
            raise


class WaitingSentinelPool(SentinelConnectionPool, WaitingPool):
    """The Sentinel-managed pool (connections to whichever server is the primary), waiting as :class:`WaitingPool`."""


class LockTurns:
    """Per lock name, the local lock a thread of this process holds while it asks Redis for that lock or holds it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._turns: dict[str, tuple[threading.Lock, list[int]]] = {}  # name -> (turn, [threads using it])

    def enter(self, name: str) -> threading.Lock:
        with self._guard:
            turn, users = self._turns.setdefault(name, (threading.Lock(), [0]))
            users[0] += 1
            return turn

    def leave(self, name: str) -> None:
        """Done with ``name``'s turn (the lock released, or never had): forgotten once no thread uses it."""
        with self._guard:
            users = self._turns[name][1]
            users[0] -= 1
            if not users[0]:
                del self._turns[name]

    def __len__(self) -> int:
        """How many lock names a thread of this process is waiting for or holding."""
        return len(self._turns)


class QueuedLock(Lock):
    """redis-py's Lock, asked for by one thread of this process at a time: the others wait for their turn on a local
    lock (no connection, no polling), all within the lock's own ``blocking_timeout``. Across processes it is the same
    lock (the same key, token and scripts)."""

    def __init__(self, redis: Any, name: str, **kwargs: Any) -> None:
        super().__init__(redis, name, **kwargs)
        self._turns: LockTurns = redis.lock_turns

    def acquire(
        self,
        sleep: float | None = None,
        blocking: bool | None = None,
        blocking_timeout: float | None = None,
        token: str | None = None,
    ) -> bool:
        blocking = self.blocking if blocking is None else blocking
        wait = self.blocking_timeout if blocking_timeout is None else blocking_timeout
        started = time.monotonic()
        turn = self._turns.enter(self.name)
        had = turn.acquire(True, -1 if wait is None else max(wait, 0)) if blocking else turn.acquire(False)
        if not had:
            self._turns.leave(self.name)
            return False
        left = None if wait is None else max(wait - (time.monotonic() - started), 0.0)
        try:
            acquired = super().acquire(sleep=sleep, blocking=blocking, blocking_timeout=left, token=token)
        except BaseException:
            self._end_turn(turn)
            raise
        if not acquired:
            self._end_turn(turn)
            return False
        self.local.turn = turn  # beside the token: per thread when the lock is thread-local
        return True

    def release(self) -> None:
        turn, self.local.turn = getattr(self.local, "turn", None), None
        try:
            super().release()
        finally:
            if turn is not None:
                self._end_turn(turn)

    def _end_turn(self, turn: threading.Lock) -> None:
        turn.release()
        self._turns.leave(self.name)


class _QueuedLocks:
    """A blocking client whose ``lock()`` makes :class:`QueuedLock` locks (unless given another ``lock_class``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock_turns = LockTurns()

    def lock(  # noqa: PLR0917 - redis-py's own signature: its callers may pass these by position
        self,
        name: str,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        lock_class: Any | None = None,
        thread_local: bool = True,
        raise_on_release_error: bool = True,
    ) -> Any:
        options: dict[str, Any] = {"timeout": timeout, "sleep": sleep, "blocking": blocking}
        options.update(
            blocking_timeout=blocking_timeout, lock_class=lock_class or QueuedLock, thread_local=thread_local
        )
        if not raise_on_release_error:  # passed only when asked for: redis-py before 5.3 has no such argument
            options["raise_on_release_error"] = False
        return super().lock(name, **options)  # type: ignore[misc]


class WaitingRedis(_QueuedLocks, redis.Redis):
    """``redis.Redis`` with :class:`QueuedLock` locks (one server, or the primary Sentinels name)."""


class _PoolWaitNotRetried(Retry):
    """The cluster client's own retries (its backoff, count and errors), but for a pool's wait that ran out: redis-py
    retries a MULTI on any connection error, and a full pool retried ten times, with backoffs between, held an
    opt-out for eleven waits (25 s and more with ``pool_timeout_ms`` 2000) instead of one."""

    @classmethod
    def of(cls, retry: Retry) -> _PoolWaitNotRetried:
        twin = cls.__new__(cls)
        twin.__dict__.update(vars(retry))
        return twin

    def call_with_retry(self, do: Any, fail: Any, is_retryable: Any = None, with_failure_count: bool = False) -> Any:
        def retryable(error: Exception) -> bool:
            return not isinstance(error, MaxConnectionsError) and (is_retryable is None or is_retryable(error))

        return super().call_with_retry(do, fail, retryable, with_failure_count)


class WaitingCluster(_QueuedLocks, RedisCluster):
    """``RedisCluster`` with :class:`QueuedLock` locks, on which a full pool fails as one, after one wait.

    redis-py takes the pool's ``MaxConnectionsError`` for a failed node in its pipelines (though not on its command
    path). A plain pipeline then re-reads the cluster's slots from nodes whose pools are as full: the re-read failed,
    and the pipeline raised "Redis Cluster cannot be connected" instead, so a full pool read as a cluster down
    (``store:unavailable``), and every wait run out cost a re-read of the slots. Here a re-read asked for while a
    pool's wait is being handled is skipped (the layout did not change) and the pipeline's retries fail at once
    (:class:`WaitingPool`); a MULTI does not retry a pool's wait (:class:`_PoolWaitNotRetried`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry = _PoolWaitNotRetried.of(self.retry)
        manager = self.nodes_manager
        reread = manager.initialize

        def initialize(*args: Any, **kwargs: Any) -> Any:
            if isinstance(sys.exc_info()[1], MaxConnectionsError):  # asked for while handling a pool's wait
                return None
            return reread(*args, **kwargs)

        manager.initialize = initialize  # type: ignore[method-assign]  # this client's manager only

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        execute = pipe.execute

        def waiting_once(*args: Any, **kwargs: Any) -> Any:
            mine = _PIPELINE_WAITED.set([False])
            try:
                return execute(*args, **kwargs)
            finally:
                _PIPELINE_WAITED.reset(mine)

        pipe.execute = waiting_once
        return pipe


class AsyncWaitingPool(aioredis.BlockingConnectionPool):
    """``redis.asyncio``'s blocking pool, failing with ``MaxConnectionsError`` when its wait runs out."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.ConnectionError as exc:
            if isinstance(exc.__cause__, asyncio.TimeoutError):
                raise _exhausted(self.max_connections, self.timeout) from exc
            raise


class AsyncWaitingSentinelPool(AsyncSentinelConnectionPool, AsyncWaitingPool):
    """The async Sentinel-managed pool, waiting as :class:`AsyncWaitingPool`."""


#: Set while a task holds a turn of an AsyncWaitingCluster: commands it issues within (a multi-key command split
#: by slot, a pipeline's) run in that turn, so no turn ever waits on another.
_IN_TURN: contextvars.ContextVar[bool] = contextvars.ContextVar("gatekeeper_redis_turn", default=False)


class AsyncWaitingCluster(AsyncRedisCluster):
    """``redis.asyncio``'s cluster client, with at most ``max_connections`` commands (or pipelines) in flight from
    this client, each waiting up to ``pool_timeout`` for its turn: so no node's pool (``max_connections`` each)
    is ever full, and a burst waits instead of failing."""

    def __init__(self, *, max_connections: int, pool_timeout: float | None, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._turns_size = self._turns_free = max_connections
        self._turns_wait = pool_timeout
        self._turns: asyncio.Condition | None = None  # made in the loop that first uses it

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """One turn: held for one command or pipeline; ``MaxConnectionsError`` if none came free in time."""
        if _IN_TURN.get():
            yield
            return
        turns = self._turns = self._turns or asyncio.Condition()
        async with turns:
            if not self._turns_free:
                try:
                    await asyncio.wait_for(turns.wait_for(lambda: self._turns_free > 0), self._turns_wait)
                except asyncio.TimeoutError:
                    raise _exhausted(self._turns_size, self._turns_wait) from None
            self._turns_free -= 1
        mine = _IN_TURN.set(True)
        try:
            yield
        finally:
            _IN_TURN.reset(mine)
            async with turns:
                self._turns_free += 1
                turns.notify()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            # Learn the slots before choosing a node: redis-py picks the command's node first and initializes after,
            # so commands racing the first initialization may write on a connection it has just closed.
            await self.initialize()
        async with self.turn():
            return await super().execute_command(*args, **kwargs)


def connect(target: RedisTarget) -> Any:
    """A blocking client for ``target``: ``redis.Redis`` (standalone, sentinel) or ``RedisCluster``. A cluster
    client asks a node for the slots as it is made, so a cluster that cannot be reached raises here."""
    if target.mode == "cluster":
        return WaitingCluster.from_url(target.url, connection_pool_class=WaitingPool, **target._pool())
    if target.mode == "sentinel":
        assert target.service_name is not None
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels), sentinel_kwargs=target._sentinel_options(), **target._sockets()
        )
        options = {**target._primary(), **target._pool(), "health_check_interval": 30}
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            target.service_name, redis_class=WaitingRedis, connection_pool_class=WaitingSentinelPool, **options
        )
    return WaitingRedis.from_pool(WaitingPool.from_url(target.url, health_check_interval=30, **target._pool()))


def connect_async(target: RedisTarget) -> Any:
    """A ``redis.asyncio`` client for ``target``; it connects at its first command, in that command's loop."""
    if target.mode == "cluster":
        sockets = {**target._sockets(), "max_connections": target.max_connections}
        return AsyncWaitingCluster.from_url(target.url, pool_timeout=target.pool_timeout_seconds, **sockets)
    if target.mode == "sentinel":
        assert target.service_name is not None
        sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels), sentinel_kwargs=target._sentinel_options(), **target._sockets()
        )
        options = {**target._primary(), **target._pool(), "health_check_interval": 30}
        return sentinel.master_for(target.service_name, connection_pool_class=AsyncWaitingSentinelPool, **options)
    pool = AsyncWaitingPool.from_url(target.url, health_check_interval=30, **target._pool())
    return aioredis.Redis.from_pool(pool)


def durability_risks(info: dict[str, Any], save: str | None) -> list[Risk]:
    """What a Redis server's ``INFO persistence`` and ``INFO memory`` (merged) and its RDB save schedule
    (``CONFIG GET save``; None when CONFIG is not permitted) say it may lose. Opt-outs and consent history
    are kept without a TTL, so an eviction policy that only evicts keys with one (``volatile-*``) or none
    (``noeviction``) never drops them; an ``allkeys-*`` policy may."""
    risks = []
    if int(info.get("aof_enabled", 0)) != 1:
        if save is None:
            risks.append(
                Risk(
                    "persistence:unknown",
                    "AOF is off and the RDB schedule cannot be read (CONFIG is not "
                    "permitted): opt-outs may not survive a restart of Redis",
                )
            )
        elif not save.strip():
            risks.append(
                Risk("persistence:none", "appendonly no and no RDB save: a restart of Redis loses every opt-out")
            )
        else:
            risks.append(
                Risk(
                    "persistence:rdb_only",
                    f"RDB snapshots only (save {save}): opt-outs acknowledged "
                    "since the last snapshot are lost if Redis stops",
                )
            )
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy.startswith("allkeys-"):
        risks.append(
            Risk(
                f"eviction:{policy}",
                f"maxmemory-policy {policy} may evict opt-outs, or the secret they are keyed under, under memory "
                "pressure: use noeviction, or volatile-* (neither has a TTL)",
            )
        )
    return risks


def primaries_risks(reports: dict[str, tuple[dict[str, Any], str | None]]) -> list[Risk]:
    """The risks of a cluster, from each primary's INFO and save schedule (``node name -> (info, save)``): each
    risk once, naming the primaries it was found on (a number's opt-outs live on one primary: any primary at risk
    puts some opt-outs at risk)."""
    found: dict[str, tuple[Risk, list[str]]] = {}
    for node, (info, save) in sorted(reports.items()):
        for risk in durability_risks(info, save):
            found.setdefault(risk.code, (risk, []))[1].append(node)
    return [
        Risk(risk.code, f"{risk.detail} (on {len(nodes)} of {len(reports)} primaries: {', '.join(nodes)})")
        for risk, nodes in found.values()
    ]
