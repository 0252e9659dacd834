"""The Redis store: shared by every process and host of a deployment.

Every read-modify-write is one command, one MULTI or one Lua script — never
SETNX then EXPIRE, never KEYS — and every key carries a ``{hash tag}`` so a
number's keys share one Redis Cluster slot. Connection and timeout errors are
translated to :class:`~gatekeeper.errors.StoreUnavailable` at this edge.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import wraps
from typing import Any, ParamSpec, TypeVar, cast

import redis
from pydantic import TypeAdapter
from redis.exceptions import LockError, RedisError

from gatekeeper.errors import InvalidArgument, StoreUnavailable
from gatekeeper.models import AuditEntry, StatusRecord
from gatekeeper.stores.base import ACCOUNT_SCOPE, CachedLookup, Claim, ConsentChange

P = ParamSpec("P")
R = TypeVar("R")

_CACHED = TypeAdapter(CachedLookup)
_CONSENT_HISTORY = 50

# KEYS[1] failure zset; ARGV: event id, time, window seconds. One event counts once.
_RECORD_FAILURE = """
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return redis.call('ZCARD', KEYS[1])
"""

# KEYS[1] claim; ARGV: record json, ttl ms. Claim or read in one step.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, ARGV[1]} end
return {0, redis.call('GET', KEYS[1])}
"""

# KEYS[1] claim; ARGV: token, new state or '' to delete, result (base64 or ''), ttl ms.
# Only the owner (the token) may settle its claim; the fingerprint is kept as claimed.
_SETTLE = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local rec = cjson.decode(v)
if rec['token'] ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) return 1 end
rec['state'] = ARGV[2]
if ARGV[3] ~= '' then rec['result'] = ARGV[3] end
redis.call('SET', KEYS[1], cjson.encode(rec), 'PX', ARGV[4])
return 1
"""

# KEYS[1] status hash; ARGV: rank, status, error code or '', time, to hash or '', ttl ms. Never moves back.
_APPLY_STATUS = """
local cur = redis.call('HGET', KEYS[1], 'rank')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'rank', ARGV[1], 'status', ARGV[2], 'error_code', ARGV[3], 'at', ARGV[4], 'to', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""

# KEYS[1] theoretical arrival time; ARGV: interval s, tolerance s. GCRA on the server's clock,
# so every host shares one budget whatever its own clock says. Returns the wait in microseconds.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - now + tolerance + 1) * 1000))
return math.floor(wait * 1e6)
"""


def _translated(fn: Callable[P, R]) -> Callable[P, R]:
    """Map redis-py's errors to StoreUnavailable, chained, so callers handle one kind."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis store unavailable: {type(exc).__name__}: {exc}") from exc

    return wrapper


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStore:
    """Every store protocol on one Redis (or Redis Cluster with hash-tagged keys)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "gk:",
        audit_max: int = 100_000,
        lock_poll_seconds: float = 0.005,
    ) -> None:
        self._r = client
        self._p = prefix
        self._audit_max = audit_max
        self._lock_poll = lock_poll_seconds
        self._record_failure = client.register_script(_RECORD_FAILURE)
        self._claim = client.register_script(_CLAIM)
        self._settle = client.register_script(_SETTLE)
        self._apply_status = client.register_script(_APPLY_STATUS)
        self._reserve = client.register_script(_RESERVE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "gk:", timeout_seconds: float = 2.0) -> RedisStore:
        """Connect with timeouts set, so a dead Redis fails fast instead of hanging a send."""
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=30,
        )
        return cls(client, prefix=prefix)

    def close(self) -> None:
        self._r.close()

    def _k(self, kind: str, ident: str) -> str:
        return f"{self._p}{kind}:{{{ident}}}"

    # -- lookup cache ---------------------------------------------------------------
    @_translated
    def get_lookup(self, key: str) -> CachedLookup | None:
        raw = cast("bytes | None", self._r.get(self._p + key))
        return None if raw is None else _CACHED.validate_json(raw)

    @_translated
    def put_lookup(self, key: str, entry: CachedLookup, *, ttl_seconds: float) -> None:
        self._r.set(self._p + key, _CACHED.dump_json(entry), px=_ms(ttl_seconds))

    @contextmanager
    def fill_lock(self, key: str, *, ttl_seconds: float, wait_seconds: float) -> Iterator[bool]:
        lock = self._r.lock(
            f"{self._p}fill:{key}",
            timeout=ttl_seconds,
            sleep=self._lock_poll,
            blocking_timeout=max(wait_seconds, 0.001),
            thread_local=False,
        )
        try:
            acquired = bool(lock.acquire())
        except RedisError as exc:
            raise StoreUnavailable(f"Redis store unavailable: {exc}") from exc
        try:
            yield acquired
        finally:
            if acquired:
                # Expired under us or Redis went away: the lock's TTL frees it either way.
                with suppress(LockError, RedisError):
                    lock.release()

    # -- opt-outs -------------------------------------------------------------------
    def _change(self, e164: str, scope: str, opted_out: bool, source: str, at: float) -> str:
        return json.dumps({"scope": scope, "opted_out": opted_out, "source": source, "at": at})

    @_translated
    def opt_out(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        change = self._change(e164, scope, True, source, at)
        history = self._k("consent", e164)
        with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("optout", e164), scope, change)
            pipe.lpush(history, change)
            pipe.ltrim(history, 0, _CONSENT_HISTORY - 1)
            added = pipe.execute()[0]
        return bool(added)

    @_translated
    def opt_in(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        change = self._change(e164, scope, False, source, at)
        key, history = self._k("optout", e164), self._k("consent", e164)
        with self._r.pipeline(transaction=True) as pipe:
            if scope == ACCOUNT_SCOPE:
                pipe.delete(key)
            else:
                pipe.hdel(key, scope)
            pipe.lpush(history, change)
            pipe.ltrim(history, 0, _CONSENT_HISTORY - 1)
            removed = pipe.execute()[0]
        return bool(removed)

    @_translated
    def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        if not scopes:
            return None
        found = cast("list[bytes | None]", self._r.hmget(self._k("optout", e164), list(scopes)))
        return next((s for s, v in zip(scopes, found, strict=False) if v is not None), None)

    @_translated
    def consent_history(self, e164: str, *, limit: int = 50) -> list[ConsentChange]:
        rows = cast("list[bytes]", self._r.lrange(self._k("consent", e164), 0, max(limit, 1) - 1))
        out = []
        for raw in rows:
            d = json.loads(raw)
            out.append(
                ConsentChange(e164=e164, scope=d["scope"], opted_out=d["opted_out"], source=d["source"], at=d["at"])
            )
        return out

    # -- delivery failures and suppression -----------------------------------------
    @_translated
    def record_failure(self, e164: str, event_id: str, *, at: float, window_seconds: float) -> int:
        return int(self._record_failure(keys=[self._k("fail", e164)], args=[event_id, at, window_seconds]))

    @_translated
    def suppress(self, e164: str, *, ttl_seconds: float, reason: str, at: float) -> None:
        self._r.set(self._k("supp", e164), reason, px=_ms(ttl_seconds))

    @_translated
    def suppression(self, e164: str, *, now: float, window_seconds: float, threshold: int) -> str | None:
        with self._r.pipeline(transaction=False) as pipe:
            pipe.get(self._k("supp", e164))
            pipe.zcount(self._k("fail", e164), f"({now - window_seconds}", "+inf")
            reason, count = pipe.execute()
        if reason is not None:
            return f"suppressed:{reason.decode()}"
        return f"failures:{count}" if int(count) >= threshold else None

    @_translated
    def lift_suppression(self, e164: str) -> bool:
        return bool(self._r.delete(self._k("supp", e164), self._k("fail", e164)))

    # -- idempotency ---------------------------------------------------------------
    @_translated
    def claim(self, key: str, fingerprint: str, *, ttl_seconds: float) -> Claim:
        token = secrets.token_hex(8)
        mine = json.dumps({"fp": fingerprint, "state": "pending", "token": token, "result": None})
        won, raw = cast("list[Any]", self._claim(keys=[self._k("idem", key)], args=[mine, _ms(ttl_seconds)]))
        if int(won):
            return Claim(won=True, state="pending", fingerprint=fingerprint, token=token)
        if raw is None:  # expired between SET and GET cannot happen inside the script; defensive only
            return self.claim(key, fingerprint, ttl_seconds=ttl_seconds)
        rec = json.loads(raw)
        result = base64.b64decode(rec["result"]) if isinstance(rec.get("result"), str) else None
        return Claim(won=False, state=rec["state"], fingerprint=rec["fp"], result=result)

    def _settle_claim(self, key: str, token: str, state: str, result: bytes | None, ttl_seconds: float) -> None:
        encoded = "" if result is None else base64.b64encode(result).decode()
        self._settle(keys=[self._k("idem", key)], args=[token, state, encoded, _ms(ttl_seconds)])

    @_translated
    def complete(self, key: str, token: str, result: bytes, *, ttl_seconds: float) -> None:
        self._settle_claim(key, token, "done", result, ttl_seconds)

    @_translated
    def abandon(self, key: str, token: str) -> None:
        self._settle_claim(key, token, "", None, 1)

    @_translated
    def mark_unknown(self, key: str, token: str, *, ttl_seconds: float) -> None:
        self._settle_claim(key, token, "unknown", None, ttl_seconds)

    # -- delivery statuses ---------------------------------------------------------
    @_translated
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
        args: list[str | int | float] = [
            rank,
            status,
            "" if error_code is None else error_code,
            at,
            to_hash or "",
            _ms(ttl_seconds),
        ]
        return bool(self._apply_status(keys=[self._k("status", sid)], args=args))

    @_translated
    def status_of(self, sid: str) -> StatusRecord | None:
        raw = cast("dict[bytes, bytes]", self._r.hgetall(self._k("status", sid)))
        if not raw:
            return None
        code = raw.get(b"error_code", b"")
        return StatusRecord(
            sid=sid,
            status=raw[b"status"].decode(),
            error_code=int(code) if code else None,
            updated_at=float(raw.get(b"at", b"0")),
            to_hash=raw.get(b"to", b"").decode() or None,
        )

    # -- rate limits ---------------------------------------------------------------
    @_translated
    def reserve(self, bucket: str, *, rate_per_second: float, burst: int, now: float) -> float:
        """Reserve a permit on the Redis server's clock (``now`` is ignored: hosts' clocks differ)."""
        if rate_per_second <= 0 or burst < 1:
            raise InvalidArgument("rate_per_second must be > 0 and burst >= 1")
        interval = 1.0 / rate_per_second
        micros = self._reserve(keys=[self._k("rate", bucket)], args=[interval, (burst - 1) * interval])
        return int(micros) / 1e6

    # -- audit ---------------------------------------------------------------------
    @_translated
    def record(self, entry: AuditEntry) -> None:
        record = json.dumps(entry.as_dict(), default=str)
        self._r.xadd(f"{self._p}audit", {"e": record}, maxlen=self._audit_max, approximate=True)

    @_translated
    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        rows = cast("list[tuple[bytes, dict[bytes, bytes]]]", self._r.xrevrange(f"{self._p}audit", count=limit))
        return [json.loads(fields[b"e"]) for _, fields in rows]
