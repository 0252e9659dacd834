"""The Redis store's verbs as Redis commands, and its key layout; no connection.

Each verb is written once, as a generator that yields the Redis commands it needs (:class:`Op`, or a
:class:`Pipe` of them sent in one round trip) and turns their answers into the verb's result.
:class:`~gatekeeper.stores.redis.RedisStore` carries the commands out with redis-py's blocking client,
:class:`~gatekeeper.stores.redis_async.AsyncRedisStore` with ``redis.asyncio``: the logic and the key layout
cannot drift apart. See :mod:`gatekeeper.stores.redis` for what the store promises.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Generator, Sequence
from typing import Any, NamedTuple

from pydantic import TypeAdapter
from redis.exceptions import MaxConnectionsError, RedisClusterException, RedisError

from gatekeeper.errors import InvalidArgument, StoreUnavailable
from gatekeeper.masking import mask_text
from gatekeeper.models import AuditEntry, StatusRecord
from gatekeeper.stores.base import (
    ACCOUNT_SCOPE,
    ERASED,
    CachedLookup,
    Claim,
    ConsentChange,
    lookup_prefix,
    subject_key,
)
from gatekeeper.stores.guard_verbs import check_window

_CACHED = TypeAdapter(CachedLookup)
_CONSENT_HISTORY = 50

#: Erasure reads the audit stream this many records at a time.
_AUDIT_PAGE = 1000


class Op(NamedTuple):
    """One Redis command (``name`` is the client's method), or ``script:<name>`` with ``keys`` and ``args``, or
    ``scan_at`` (``args``: a key, a cursor): SCAN the server holding that key's slot (on a cluster, its node)."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}  # noqa: RUF012 - never mutated: a NamedTuple default shared read-only


class Pipe(NamedTuple):
    """Commands sent together in one round trip (a MULTI when ``transaction``); answered with their results."""

    ops: tuple[Op, ...]
    transaction: bool = False


Verb = Generator[Op | Pipe, Any, Any]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _script(name: str, key: str, *args: Any) -> Op:
    return Op(f"script:{name}", (), {"keys": [key], "args": list(args)})


def glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern (``{`` and ``}`` are literal there already)."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def unavailable(exc: RedisError | RedisClusterException) -> StoreUnavailable:
    """redis-py's error as the one kind callers handle; a full pool (``MaxConnectionsError``: waited for in vain,
    see ``redis_connect``) says so."""
    if isinstance(exc, MaxConnectionsError):
        return StoreUnavailable(f"Redis store pool exhausted: {exc}", reason="pool_exhausted")
    return StoreUnavailable(f"Redis store unavailable: {type(exc).__name__}: {_describe(exc)}")


#: redis-py names a failed pipeline command with its arguments, which may be a secret or a number's key.
_PIPELINE_COMMAND = re.compile(r"Command # (\d+) \(.*\) of pipeline caused error", re.DOTALL)


def _describe(exc: Exception) -> str:
    """``exc``'s message without the arguments of the command that failed (a stored secret, a key) and with any
    number in it masked: it is logged and shown."""
    return mask_text(_PIPELINE_COMMAND.sub(r"command #\1 of a pipeline failed", str(exc)))


class RedisVerbs:
    """The store's verbs as Redis commands, and the key layout; no connection (see the module docstring)."""

    def __init__(self, *, prefix: str, audit_max: int, audit_max_age_seconds: float | None = None) -> None:
        if audit_max_age_seconds is not None and audit_max_age_seconds <= 0:
            raise InvalidArgument("audit_max_age_seconds must be > 0 (or None: kept until audit_max pushes it out)")
        self._p = prefix
        self._audit_max = audit_max
        self._audit_max_age = audit_max_age_seconds
        self._cluster = False  # a Redis Cluster: one script may not touch keys of two slots (set by the runner)
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
        _, suppression = yield from self._screening(e164, (), now, window_seconds, threshold)
        return suppression

    def _screening(self, e164: str, scopes: Sequence[str], now: float, window_seconds: float, threshold: int) -> Verb:
        """Both screening reads in one command (a script over the subject's keys, one slot): the opt-outs, the
        suppression marker and the failures in the window."""
        subject = yield from self._subject(e164)
        keys = [self._k("optout", subject), self._k("supp", subject), self._k("fail", subject)]
        scope, reason, count = yield Op("script:screen", (), {"keys": keys, "args": [now - window_seconds, *scopes]})
        if reason:
            return scope.decode() or None, f"suppressed:{reason.decode()}"
        return scope.decode() or None, (f"failures:{count}" if int(count) >= threshold else None)

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
        # Every key starting with ``first`` has its hash tag in ``first``: one slot, so one node to scan on a cluster.
        first = self._p + lookup_prefix(e164)
        match, cursor = glob_escape(first) + "*", None
        while cursor != 0:
            cursor, keys = yield Op("scan_at", (first, cursor or 0), {"match": match, "count": 1000})
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

    def _status_event(
        self,
        event: str,
        sid: str,
        status: str,
        rank: int,
        *,
        error_code: int | None,
        at: float,
        to_hash: str | None,
        ttl: float,
    ) -> Verb:
        code = "" if error_code is None else error_code
        args = [event, rank, status, code, at, to_hash or "", _ms(ttl), sid]
        keys = [self._k("status", sid)]
        if not to_hash:
            new, applied = yield Op("script:status_event", (), {"keys": keys, "args": args})
        elif not self._cluster:  # one server: the erasure index in the same script
            keys.append(self._k("status_by", to_hash))
            new, applied = yield Op("script:status_event", (), {"keys": keys, "args": args})
        else:  # a cluster: the index (another slot) beside it, in the same round trip
            index = self._k("status_by", to_hash)
            script = Op("script:status_event", (), {"keys": keys, "args": args})
            (new, applied), *_ = yield Pipe((script, Op("sadd", (index, sid)), Op("pexpire", (index, _ms(ttl)))))
        return bool(new), bool(applied)

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

    def _take(self, bucket: str, rate_per_second: float, burst: int, max_wait: float) -> Verb:
        if rate_per_second <= 0 or burst < 1:
            raise InvalidArgument("rate_per_second must be > 0 and burst >= 1")
        interval = 1.0 / rate_per_second
        keys = [self._k("rate", bucket), self._k("pause", bucket)]  # one hash tag: one slot
        taken, wait = yield Op("script:take", (), {"keys": keys, "args": [interval, (burst - 1) * interval, max_wait]})
        return bool(int(taken)), float(wait)

    def _pause(self, bucket: str, seconds: float) -> Verb:
        yield _script("pause", self._k("pause", bucket), f"{seconds:.6f}")

    def _pause_left(self, bucket: str) -> Verb:
        left = yield _script("pause_left", self._k("pause", bucket))
        return float(left)

    # -- ledger --------------------------------------------------------------------
    def _spend(self, caps: Sequence[tuple[str, float]], amount: float, ttl_seconds: float) -> Verb:
        if not caps:
            return None
        keys = [f"{self._p}spend:{{ledger}}:{key}" for key, _ in caps]  # one slot: one script sees every total
        args = [repr(float(amount)), _ms(ttl_seconds), *(repr(float(cap)) for _, cap in caps)]
        over = yield Op("script:spend", (), {"keys": keys, "args": args})
        return caps[int(over) - 1][0] if int(over) else None

    # -- windows -------------------------------------------------------------------
    def _hit(self, key: str, event: str, at: float, window_seconds: float, limit: int) -> Verb:
        check_window(window_seconds, limit)
        count, free_at = yield _script("hit", self._k("win", key), event, at, window_seconds, limit)
        return int(count), (float(free_at) if free_at else None)

    def _hits(self, checks: Sequence[tuple[str, float, int]], event: str, at: float) -> Verb:
        """Every window's script in one pipeline: one round trip (a cluster's client sends each node its own)."""
        for _, window_seconds, limit in checks:
            check_window(window_seconds, limit)
        scripts = tuple(_script("hit", self._k("win", key), event, at, w, limit) for key, w, limit in checks)
        answers = (yield Pipe(scripts)) if scripts else []
        return [(int(count), float(free_at) if free_at else None) for count, free_at in answers]

    def _tally(self, ranges: Sequence[tuple[str, float, float]]) -> Verb:
        """Every window's ZCOUNT in one pipeline: one round trip."""
        counts = tuple(Op("zcount", (self._k("win", key), f"({since!r}", repr(until))) for key, since, until in ranges)
        answers = (yield Pipe(counts)) if counts else []
        return [int(n) for n in answers]

    # -- audit ---------------------------------------------------------------------
    def _record(self, entries: Sequence[AuditEntry]) -> Verb:
        """Append, in order and in one command, trimming to ``audit_max`` (about) and, exactly, to
        ``audit_max_age_seconds``. Age is judged on Redis's clock, as the stream ID is: not on ``entry.at`` (the
        recording host's clock), since IDs must grow and hosts' clocks differ; a skewed host can neither trim fresh
        records nor keep stale ones."""
        if not entries:
            return
        records = [json.dumps(entry.as_dict(), default=str) for entry in entries]
        age = "" if self._audit_max_age is None else _ms(self._audit_max_age)
        yield _script("record", f"{self._p}audit", self._audit_max, age, *records)

    def _recent(self, limit: int) -> Verb:
        if limit <= 0:
            return []
        stream = f"{self._p}audit"
        if self._audit_max_age is None:
            rows = yield Op("xrevrange", (stream,), {"count": limit})
            records = [fields[b"e"] for _, fields in rows]
        else:  # records past the retention but not yet trimmed (no record since) are not shown
            records = yield _script("recent", stream, limit, _ms(self._audit_max_age))
        return [json.loads(record) for record in records]
