"""Connecting the Redis stores as ``[redis]`` says: one server, a Redis Cluster, or the primary that Sentinels name,
always through a pool that *waits* for a free connection.

redis-py's default pool opens a connection per concurrent command and raises at once past its limit: under a burst
(a thousand threads deciding at once) most commands failed, each failure refusing a send (``store:unavailable``) or
skipping the Lookup cache's single-flight lock (a Lookup per thread). Here every client takes at most
``max_connections`` connections per process (per node on a cluster); a command finding them all busy waits up to
``pool_timeout_seconds`` for one, and only then fails, as ``MaxConnectionsError``, which the stores report as
``StoreUnavailable(reason="pool_exhausted")`` (the gate's ``store:pool_exhausted``).

- standalone: ``redis.Redis`` over :class:`WaitingPool` (``redis.asyncio.Redis`` over :class:`AsyncWaitingPool`).
- cluster: ``redis.cluster.RedisCluster`` with a :class:`WaitingPool` per node. ``redis.asyncio.cluster.RedisCluster``
  has no pool class to give: its nodes raise when full, so :class:`AsyncWaitingCluster` holds each command to a turn
  among ``max_connections``, waiting as the pools do.
- sentinel: the primary of ``service_name``, as the Sentinels name it at each (re)connection, over
  :class:`WaitingSentinelPool` / :class:`AsyncWaitingSentinelPool`.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
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


class WaitingPool(redis.BlockingConnectionPool):
    """redis-py's blocking pool, failing with ``MaxConnectionsError`` when its wait runs out."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.ConnectionError as exc:
            if isinstance(exc.__context__, queue.Empty):  # the wait ran out; not a connection that failed
                raise _exhausted(self.max_connections, self.timeout) from exc
            raise


class WaitingSentinelPool(SentinelConnectionPool, WaitingPool):
    """The Sentinel-managed pool (connections to whichever server is the primary), waiting as :class:`WaitingPool`."""


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
        return RedisCluster.from_url(target.url, connection_pool_class=WaitingPool, **target._pool())
    if target.mode == "sentinel":
        assert target.service_name is not None
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels), sentinel_kwargs=target._sentinel_options(), **target._sockets()
        )
        options = {**target._primary(), **target._pool(), "health_check_interval": 30}
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            target.service_name, connection_pool_class=WaitingSentinelPool, **options
        )
    return redis.Redis.from_pool(WaitingPool.from_url(target.url, health_check_interval=30, **target._pool()))


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
