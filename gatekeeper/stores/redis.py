"""The Redis store: shared by every process and host of a deployment.

Every read-modify-write is one command, one MULTI or one Lua script — never
SETNX then EXPIRE, never KEYS — and every key carries a ``{hash tag}`` so a
number's keys share one Redis Cluster slot. Connection and timeout errors are
translated to :class:`~gatekeeper.errors.StoreUnavailable` at this edge.

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

import base64
import json
import re
import secrets
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, NamedTuple, cast

import redis
from pydantic import TypeAdapter
from redis.exceptions import LockError, RedisError

from gatekeeper.errors import InvalidArgument, StoreUnavailable
from gatekeeper.models import AuditEntry, StatusRecord
from gatekeeper.stores.base import (
    ACCOUNT_SCOPE,
    ERASED,
    CachedLookup,
    Claim,
    ConsentChange,
    Risk,
    lookup_prefix,
    subject_key,
)

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

# KEYS[1] audit stream; ARGV: record json, max entries, max age ms or ''. The stream ID and the retention cutoff
# are both Redis's clock (see RedisVerbs._record); with a retention the stream expires when its newest record ages out.
_RECORD = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
if ARGV[3] ~= '' then
  local cutoff = tonumber(string.match(id, '^%d+')) - tonumber(ARGV[3])
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', cutoff))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return id
"""
#: Erasure reads the audit stream this many records at a time.
_AUDIT_PAGE = 1000


class Op(NamedTuple):
    """One Redis command (``name`` is the client's method), or ``script:<name>`` with ``keys`` and ``args``."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}  # noqa: RUF012 - never mutated: a NamedTuple default shared read-only


class Pipe(NamedTuple):
    """Commands sent together in one round trip (a MULTI when ``transaction``); answered with their results."""

    ops: tuple[Op, ...]
    transaction: bool = False


Verb = Generator[Op | Pipe, Any, Any]
SCRIPTS = {
    "record_failure": _RECORD_FAILURE,
    "claim": _CLAIM,
    "settle": _SETTLE,
    "apply_status": _APPLY_STATUS,
    "reserve": _RESERVE,
    "record": _RECORD,
}


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _script(name: str, key: str, *args: Any) -> Op:
    return Op(f"script:{name}", (), {"keys": [key], "args": list(args)})


def glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern (``{`` and ``}`` are literal there already)."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def unavailable(exc: RedisError) -> StoreUnavailable:
    """redis-py's error as the one kind callers handle."""
    return StoreUnavailable(f"Redis store unavailable: {type(exc).__name__}: {exc}")


class RedisVerbs:
    """The store's verbs as Redis commands, and the key layout; no connection (see the module docstring)."""

    def __init__(self, *, prefix: str, audit_max: int, audit_max_age_seconds: float | None = None) -> None:
        if audit_max_age_seconds is not None and audit_max_age_seconds <= 0:
            raise InvalidArgument("audit_max_age_seconds must be > 0 (or None: kept until audit_max pushes it out)")
        self._p = prefix
        self._audit_max = audit_max
        self._audit_max_age = audit_max_age_seconds
        self._secrets: dict[str, bytes] = {}  # name -> secret, as Redis keeps it: read once per store object

    def _k(self, kind: str, ident: str) -> str:
        return f"{self._p}{kind}:{{{ident}}}"

    # -- lookup cache ---------------------------------------------------------------
    def _get_lookup(self, key: str) -> Verb:
        raw = yield Op("get", (self._p + key,))
        return None if raw is None else _CACHED.validate_json(raw)

    def _put_lookup(self, key: str, entry: CachedLookup, ttl_seconds: float) -> Verb:
        yield Op("set", (self._p + key, _CACHED.dump_json(entry)), {"px": _ms(ttl_seconds)})

    # -- secrets and subjects -------------------------------------------------------
    def _secret(self, name: str) -> Generator[Op | Pipe, Any, bytes]:
        """The secret ``name``: made by whichever process asks first (SET NX), then read back in the same round trip,
        so every process gets the winner's; cached, since it never changes. Not a MULTI: a secret is never
        rewritten or deleted, so the GET after the SET NX on one connection reads the one value there is."""
        kept = self._secrets.get(name)
        if kept is None:
            key = self._k("secret", name)
            _, kept = yield Pipe((Op("set", (key, secrets.token_bytes(32)), {"nx": True}), Op("get", (key,))))
            self._secrets[name] = kept = bytes(kept)
        return kept

    def _subject(self, e164: str) -> Generator[Op | Pipe, Any, str]:
        """The key a number's consent, failures and suppression are filed under (``stores.base.subject_key``)."""
        return subject_key((yield from self._secret("consent")), e164)

    # -- opt-outs -------------------------------------------------------------------
    def _opt_out(self, e164: str, scope: str, source: str, at: float) -> Verb:
        subject = yield from self._subject(e164)
        change = json.dumps({"scope": scope, "opted_out": True, "source": source, "at": at})
        history = self._k("consent", subject)
        hset = Op("hset", (self._k("optout", subject), scope, change))
        added, *_ = yield Pipe((hset, *self._history(history, change)), transaction=True)
        return bool(added)

    def _opt_in(self, e164: str, scope: str, source: str, at: float) -> Verb:
        subject = yield from self._subject(e164)
        change = json.dumps({"scope": scope, "opted_out": False, "source": source, "at": at})
        key, history = self._k("optout", subject), self._k("consent", subject)
        lift = Op("delete", (key,)) if scope == ACCOUNT_SCOPE else Op("hdel", (key, scope))
        removed, *_ = yield Pipe((lift, *self._history(history, change)), transaction=True)
        return bool(removed)

    @staticmethod
    def _history(key: str, change: str) -> tuple[Op, Op]:
        return Op("lpush", (key, change)), Op("ltrim", (key, 0, _CONSENT_HISTORY - 1))

    def _opted_out_scope(self, e164: str, scopes: Sequence[str]) -> Verb:
        if not scopes:
            return None
        subject = yield from self._subject(e164)
        found = yield Op("hmget", (self._k("optout", subject), list(scopes)))
        return next((s for s, v in zip(scopes, found, strict=False) if v is not None), None)

    def _consent_history(self, e164: str, limit: int) -> Verb:
        subject = yield from self._subject(e164)
        rows = yield Op("lrange", (self._k("consent", subject), 0, max(limit, 1) - 1))
        out = []  # the records hold no number: each is told of the one asked about
        for raw in rows:
            d = json.loads(raw)
            out.append(ConsentChange(e164, d["scope"], d["opted_out"], d["source"], d["at"]))
        return out

    # -- delivery failures and suppression -----------------------------------------
    def _record_failure(self, e164: str, event_id: str, at: float, window_seconds: float) -> Verb:
        subject = yield from self._subject(e164)
        count = yield _script("record_failure", self._k("fail", subject), event_id, at, window_seconds)
        return int(count)

    def _suppress(self, e164: str, ttl_seconds: float, reason: str) -> Verb:
        subject = yield from self._subject(e164)
        yield Op("set", (self._k("supp", subject), reason), {"px": _ms(ttl_seconds)})

    def _suppression(self, e164: str, now: float, window_seconds: float, threshold: int) -> Verb:
        subject = yield from self._subject(e164)
        marker = Op("get", (self._k("supp", subject),))
        failures = Op("zcount", (self._k("fail", subject), f"({now - window_seconds}", "+inf"))
        reason, count = yield Pipe((marker, failures))
        if reason is not None:
            return f"suppressed:{reason.decode()}"
        return f"failures:{count}" if int(count) >= threshold else None

    def _lift_suppression(self, e164: str) -> Verb:
        subject = yield from self._subject(e164)
        removed = yield Op("delete", (self._k("supp", subject), self._k("fail", subject)))
        return bool(removed)

    # -- erasure --------------------------------------------------------------------
    def _erase(self, e164: str, to_hash: str, at: float) -> Verb:
        """Forget the number (see ``stores.base.Erasure``). The tombstone comes first, in one MULTI with the deletion
        of the subject's keys (one slot): should a later step fail, the number is already uncontactable and a retry
        finishes the rest. Each step is idempotent."""
        subject = yield from self._subject(e164)
        optout, history = self._k("optout", subject), self._k("consent", subject)
        tombstone = json.dumps({"scope": ACCOUNT_SCOPE, "opted_out": True, "source": ERASED, "at": at})
        forget = Op("delete", (optout, history, self._k("fail", subject), self._k("supp", subject)))
        keep = (Op("hset", (optout, ACCOUNT_SCOPE, tombstone)), Op("lpush", (history, tombstone)))
        yield Pipe((forget, *keep), transaction=True)
        # The Lookup answers (SCAN, never KEYS), with the keys that filed this number's consent under the number
        # itself before it was keyed by subject: all share the number's slot.
        doomed = [self._k(kind, e164) for kind in ("optout", "consent", "fail", "supp")]
        match, cursor = glob_escape(self._p + lookup_prefix(e164)) + "*", None
        while cursor != 0:
            cursor, keys = yield Op("scan", (cursor or 0,), {"match": match, "count": 1000})
            doomed.extend(keys)
        yield Op("delete", tuple(doomed))
        index = self._k("status_by", to_hash)
        sids = yield Op("smembers", (index,))
        if sids:  # one DEL per status: they live on different slots
            gone = [Op("delete", (self._k("status", sid.decode()),)) for sid in sids]
            yield Pipe((*gone, Op("srem", (index, *sids))))  # SREM, not DEL: a sid indexed meanwhile stays
        yield from self._forget_audit(to_hash)

    def _forget_audit(self, to_hash: str) -> Verb:
        """XDEL every audit record of ``to_hash``, reading the capped stream newest first a page at a time."""
        stream, top, needle = f"{self._p}audit", "+", to_hash.encode()
        while True:
            rows = yield Op("xrevrange", (stream,), {"max": top, "count": _AUDIT_PAGE})
            mine = [i for i, f in rows if needle in f[b"e"] and json.loads(f[b"e"]).get("to_hash") == to_hash]
            if mine:
                yield Op("xdel", (stream, *mine))
            if len(rows) < _AUDIT_PAGE:
                return
            top = "(" + rows[-1][0].decode()

    # -- idempotency ---------------------------------------------------------------
    def _claim(self, key: str, fingerprint: str, ttl_seconds: float) -> Verb:
        token = secrets.token_hex(8)
        mine = json.dumps({"fp": fingerprint, "state": "pending", "token": token, "result": None})
        won, raw = yield _script("claim", self._k("idem", key), mine, _ms(ttl_seconds))
        if int(won):
            return Claim(won=True, state="pending", fingerprint=fingerprint, token=token)
        if raw is None:  # expired between SET and GET cannot happen inside the script; defensive only
            return (yield from self._claim(key, fingerprint, ttl_seconds))
        rec = json.loads(raw)
        result = base64.b64decode(rec["result"]) if isinstance(rec.get("result"), str) else None
        return Claim(won=False, state=rec["state"], fingerprint=rec["fp"], result=result)

    def _settle(self, key: str, token: str, state: str, result: bytes | None, ttl_seconds: float) -> Verb:
        encoded = "" if result is None else base64.b64encode(result).decode()
        yield _script("settle", self._k("idem", key), token, state, encoded, _ms(ttl_seconds))

    # -- delivery statuses ---------------------------------------------------------
    def _apply_status(
        self, sid: str, status: str, rank: int, *, error_code: int | None, at: float, to_hash: str | None, ttl: float
    ) -> Verb:
        code = "" if error_code is None else error_code
        apply = _script("apply_status", self._k("status", sid), rank, status, code, at, to_hash or "", _ms(ttl))
        if not to_hash:
            return bool((yield apply))
        # The index erasure reads, in the same round trip (not the script: another slot), kept as long as the status.
        index = self._k("status_by", to_hash)
        applied, *_ = yield Pipe((apply, Op("sadd", (index, sid)), Op("pexpire", (index, _ms(ttl)))))
        return bool(applied)

    def _status_of(self, sid: str) -> Verb:
        raw = yield Op("hgetall", (self._k("status", sid),))
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
    def _reserve(self, bucket: str, rate_per_second: float, burst: int) -> Verb:
        if rate_per_second <= 0 or burst < 1:
            raise InvalidArgument("rate_per_second must be > 0 and burst >= 1")
        interval = 1.0 / rate_per_second
        micros = yield _script("reserve", self._k("rate", bucket), interval, (burst - 1) * interval)
        return int(micros) / 1e6

    # -- audit ---------------------------------------------------------------------
    def _record(self, entry: AuditEntry) -> Verb:
        """Append, trimming to ``audit_max`` (about) and, exactly, to ``audit_max_age_seconds``. Age is judged on
        Redis's clock, as the stream ID is: not on ``entry.at`` (the recording host's clock), since IDs must grow
        and hosts' clocks differ; a skewed host can neither trim fresh records nor keep stale ones."""
        record = json.dumps(entry.as_dict(), default=str)
        age = "" if self._audit_max_age is None else _ms(self._audit_max_age)
        yield _script("record", f"{self._p}audit", record, self._audit_max, age)

    def _recent(self, limit: int) -> Verb:
        if limit <= 0:
            return []
        read = Op("xrevrange", (f"{self._p}audit",), {"count": limit})
        if self._audit_max_age is None:
            rows = yield read
        else:  # records past the retention but not yet trimmed (no record since) are not shown
            (seconds, micros), rows = yield Pipe((Op("time"), read))
            cutoff = seconds * 1000 + micros // 1000 - _ms(self._audit_max_age)
            rows = [(i, f) for i, f in rows if int(i.split(b"-")[0]) >= cutoff]
        return [json.loads(fields[b"e"]) for _, fields in rows]


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


class RedisStore(RedisVerbs):
    """Every store protocol on one Redis (or Redis Cluster with hash-tagged keys), with redis-py's blocking client."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "gk:",
        audit_max: int = 100_000,
        audit_max_age_seconds: float | None = None,
        lock_poll_seconds: float = 0.005,
    ) -> None:
        super().__init__(prefix=prefix, audit_max=audit_max, audit_max_age_seconds=audit_max_age_seconds)
        self._r = client
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
    ) -> RedisStore:
        """Connect with timeouts set, so a dead Redis fails fast instead of hanging a send."""
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=30,
        )
        return cls(client, prefix=prefix, audit_max_age_seconds=audit_max_age_seconds)

    def close(self) -> None:
        self._r.close()

    def durability(self) -> list[Risk]:
        """How this Redis may lose acknowledged opt-outs (see :func:`durability_risks`)."""
        try:
            info = {**self._r.info("persistence"), **self._r.info("memory")}
        except RedisError as exc:
            raise unavailable(exc) from exc
        try:
            save: str | None = str(self._r.config_get("save").get("save", ""))
        except RedisError:  # CONFIG renamed or refused (managed Redis): the schedule cannot be read
            save = None
        return durability_risks(info, save)

    def _run(self, verb: Verb) -> Any:
        """Carry out a verb's commands with the blocking client, its errors as StoreUnavailable."""
        answer: Any = None
        try:
            while True:
                step = verb.send(answer)
                answer = self._pipe(step) if isinstance(step, Pipe) else self._op(self._r, step)
        except StopIteration as end:
            return end.value
        except RedisError as exc:
            raise unavailable(exc) from exc

    def _op(self, target: Any, op: Op) -> Any:
        if op.name.startswith("script:"):
            return self._scripts[op.name[7:]](client=target, **op.kwargs)
        return getattr(target, op.name)(*op.args, **op.kwargs)

    def _pipe(self, step: Pipe) -> Any:
        with self._r.pipeline(transaction=step.transaction) as pipe:
            for op in step.ops:
                self._op(pipe, op)
            return pipe.execute()

    # -- lookup cache ---------------------------------------------------------------
    def get_lookup(self, key: str) -> CachedLookup | None:
        return cast("CachedLookup | None", self._run(self._get_lookup(key)))

    def put_lookup(self, key: str, entry: CachedLookup, *, ttl_seconds: float) -> None:
        self._run(self._put_lookup(key, entry, ttl_seconds))

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
            raise unavailable(exc) from exc
        try:
            yield acquired
        finally:
            if acquired:
                # Expired under us or Redis went away: the lock's TTL frees it either way.
                with suppress(LockError, RedisError):
                    lock.release()

    # -- secrets and erasure --------------------------------------------------------
    def secret(self, name: str) -> bytes:
        """32 random bytes kept in Redis under ``name``: the same for every process on this prefix."""
        return cast("bytes", self._run(self._secret(name)))

    def erase(self, e164: str, *, to_hash: str, at: float) -> None:
        """Forget the number, keeping a do-not-contact tombstone (see ``stores.base.Erasure``)."""
        self._run(self._erase(e164, to_hash, at))

    # -- opt-outs -------------------------------------------------------------------
    def opt_out(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        return bool(self._run(self._opt_out(e164, scope, source, at)))

    def opt_in(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        return bool(self._run(self._opt_in(e164, scope, source, at)))

    def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        return cast("str | None", self._run(self._opted_out_scope(e164, scopes)))

    def consent_history(self, e164: str, *, limit: int = 50) -> list[ConsentChange]:
        return cast("list[ConsentChange]", self._run(self._consent_history(e164, limit)))

    # -- delivery failures and suppression -----------------------------------------
    def record_failure(self, e164: str, event_id: str, *, at: float, window_seconds: float) -> int:
        return int(self._run(self._record_failure(e164, event_id, at, window_seconds)))

    def suppress(self, e164: str, *, ttl_seconds: float, reason: str, at: float) -> None:
        self._run(self._suppress(e164, ttl_seconds, reason))

    def suppression(self, e164: str, *, now: float, window_seconds: float, threshold: int) -> str | None:
        return cast("str | None", self._run(self._suppression(e164, now, window_seconds, threshold)))

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

    def status_of(self, sid: str) -> StatusRecord | None:
        return cast("StatusRecord | None", self._run(self._status_of(sid)))

    # -- rate limits ---------------------------------------------------------------
    def reserve(self, bucket: str, *, rate_per_second: float, burst: int, now: float) -> float:
        """Reserve a permit on the Redis server's clock (``now`` is ignored: hosts' clocks differ)."""
        return float(self._run(self._reserve(bucket, rate_per_second, burst)))

    # -- audit ---------------------------------------------------------------------
    def record(self, entry: AuditEntry) -> None:
        self._run(self._record(entry))

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self._run(self._recent(limit)))
