"""The embedded store: one process, thread-safe, bounded.

Every collection that a long-running process could grow without limit is an
LRU map capped at ``max_entries``; expired entries are dropped as they are met.
Opt-outs are the exception: forgetting one would message a person who said
STOP, so they are never evicted; past ``max_opt_outs`` a new opt-out raises
:class:`~gatekeeper.errors.StoreUnavailable` instead (the webhook then answers
503 and Twilio retries) — use the Redis store for real volumes.
"""

from __future__ import annotations

import bisect
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, TypeVar

from gatekeeper.errors import InvalidArgument, StoreUnavailable
from gatekeeper.models import AuditEntry, StatusRecord
from gatekeeper.stores.base import (
    ACCOUNT_SCOPE,
    ERASED,
    CachedLookup,
    Claim,
    ConsentChange,
    Risk,
    gcra,
    lookup_prefix,
    subject_key,
)
from gatekeeper.stores.guard_verbs import check_window

V = TypeVar("V")


class _LRU(Generic[V]):
    """An LRU map with per-entry expiry. Not thread-safe by itself; the store holds the lock."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._data: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    def get(self, key: str) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires_at, value = item
        if expires_at <= self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: str, value: V, ttl_seconds: float) -> None:
        self._data[key] = (self._clock() + ttl_seconds, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def pop(self, key: str) -> V | None:
        item = self._data.pop(key, None)
        return None if item is None else item[1]

    def __len__(self) -> int:
        return len(self._data)


@dataclass
class _IdemRecord:
    fingerprint: str
    state: str
    token: str
    result: bytes | None = None


class MemoryStore:
    """Every store protocol in one process's memory."""

    #: Its verbs take a lock held for microseconds and never wait on anything else: the async gate calls them
    #: in place (see ``stores.base.blocking``).
    blocking = False

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        max_opt_outs: int = 1_000_000,
        max_audit: int = 10_000,
        audit_max_age_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise InvalidArgument("max_entries must be at least 1")
        self._lock = threading.RLock()
        self._clock = clock
        self._max_opt_outs = max_opt_outs
        self._lookups: _LRU[CachedLookup] = _LRU(max_entries, clock)
        self._fill_locks: dict[str, tuple[threading.Lock, int]] = {}
        self._opt_outs: dict[str, dict[str, ConsentChange]] = {}
        # Consent history is evidence: bounded by the opt-out cap, not the (smaller) cache cap.
        self._consent: _LRU[deque[ConsentChange]] = _LRU(max_opt_outs, clock)
        self._failures: _LRU[dict[str, float]] = _LRU(max_entries, clock)
        self._suppressed: _LRU[tuple[float, str]] = _LRU(max_entries, clock)  # (until, reason) on the caller's clock
        self._idem: _LRU[_IdemRecord] = _LRU(max_entries, clock)
        self._statuses: _LRU[StatusRecord] = _LRU(max_entries, clock)
        self._status_rank: dict[str, int] = {}
        self._rates: _LRU[float] = _LRU(max_entries, clock)
        self._audit: deque[AuditEntry] = deque(maxlen=max_audit)
        self._audit_max_age = audit_max_age_seconds
        self._suppressing_writes = 0  # see suppression_version
        self._secrets: dict[str, bytes] = {}
        self._ledger: _LRU[float] = _LRU(max_entries, clock)
        self._windows: _LRU[tuple[list[tuple[float, str]], set[str]]] = _LRU(max_entries, clock)
        self._paused: dict[str, float] = {}  # a bucket's pause: few (one per Twilio API and account)

    def durability(self) -> list[Risk]:
        """Everything here lives in this process: for tests and explicit use, not for consent in production."""
        return [
            Risk(
                "store:memory",
                "opt-outs live in this process's memory: lost when it ends, and unseen by any other process",
            )
        ]

    # -- lookup cache ---------------------------------------------------------------
    def get_lookup(self, key: str) -> CachedLookup | None:
        with self._lock:
            return self._lookups.get(key)

    def put_lookup(self, key: str, entry: CachedLookup, *, ttl_seconds: float) -> None:
        with self._lock:
            self._lookups.put(key, entry, ttl_seconds)

    @contextmanager
    def fill_lock(self, key: str, *, ttl_seconds: float, wait_seconds: float) -> Iterator[bool]:
        # One lock object per key while anyone holds or waits for it; refcounted so the map stays small.
        with self._lock:
            lock, users = self._fill_locks.get(key, (threading.Lock(), 0))
            self._fill_locks[key] = (lock, users + 1)
        acquired = lock.acquire(timeout=max(wait_seconds, 0.0))
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()
            with self._lock:
                lock, users = self._fill_locks[key]
                if users <= 1:
                    del self._fill_locks[key]
                else:
                    self._fill_locks[key] = (lock, users - 1)

    # -- secrets and subjects -------------------------------------------------------
    def secret(self, name: str) -> bytes:
        """Random per store object: this store lives in one process."""
        found = self._secrets.get(name)
        if found is not None:
            return found
        with self._lock:
            return self._secrets.setdefault(name, secrets.token_bytes(32))

    def _subject(self, e164: str) -> str:
        """The key of a number's consent, failures and suppression (see ``stores.base.subject_key``)."""
        return subject_key(self.secret("consent"), e164)

    # -- opt-outs -------------------------------------------------------------------
    def _note_consent(self, change: ConsentChange) -> None:
        history = self._consent.get(change.e164)
        if history is None:
            history = deque(maxlen=50)
        history.appendleft(change)
        self._consent.put(change.e164, history, 10 * 365 * 86400)

    def opt_out(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        subject = self._subject(e164)
        with self._lock:
            scopes = self._opt_outs.get(subject)
            if scopes is None:
                if len(self._opt_outs) >= self._max_opt_outs:
                    raise StoreUnavailable(
                        f"memory store holds {self._max_opt_outs} opted-out numbers; use the Redis store"
                    )
                scopes = self._opt_outs[subject] = {}
            changed = scope not in scopes
            self._suppressing_writes += 1
            change = ConsentChange(e164=subject, scope=scope, opted_out=True, source=source, at=at)
            scopes[scope] = change
            self._note_consent(change)
            return changed

    def opt_in(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        subject = self._subject(e164)
        with self._lock:
            scopes = self._opt_outs.get(subject, {})
            if scope == ACCOUNT_SCOPE:
                changed = bool(scopes)
                self._opt_outs.pop(subject, None)
            else:
                changed = scopes.pop(scope, None) is not None
                if not scopes:
                    self._opt_outs.pop(subject, None)
            self._note_consent(ConsentChange(e164=subject, scope=scope, opted_out=False, source=source, at=at))
            return changed

    def suppression_version(self) -> int:
        """Counts the writes that can suppress a number (this store lives in one process: it sees them all)."""
        return self._suppressing_writes

    def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        subject = self._subject(e164)
        with self._lock:
            have = self._opt_outs.get(subject)
            if not have:
                return None
            return next((s for s in scopes if s in have), None)

    def consent_history(self, e164: str, *, limit: int = 50) -> list[ConsentChange]:
        subject = self._subject(e164)
        with self._lock:
            history = self._consent.get(subject)
            return [replace(c, e164=e164) for c in list(history)[:limit]] if history else []

    # -- delivery failures and suppression -----------------------------------------
    def record_failure(self, e164: str, event_id: str, *, at: float, window_seconds: float) -> int:
        subject = self._subject(e164)
        with self._lock:
            events = self._failures.get(subject) or {}
            self._suppressing_writes += 1
            events.setdefault(event_id, at)
            cutoff = at - window_seconds
            events = {k: t for k, t in events.items() if t > cutoff}
            self._failures.put(subject, events, window_seconds)
            return len(events)

    def suppress(self, e164: str, *, ttl_seconds: float, reason: str, at: float) -> None:
        subject = self._subject(e164)
        with self._lock:
            # Expiry is judged against the caller's ``now`` (as the failure window is), so a fake clock drives it.
            self._suppressing_writes += 1
            self._suppressed.put(subject, (at + ttl_seconds, reason), float("inf"))

    def suppression(self, e164: str, *, now: float, window_seconds: float, threshold: int) -> str | None:
        subject = self._subject(e164)
        with self._lock:
            marker = self._suppressed.get(subject)
            if marker is not None and marker[0] > now:
                return f"suppressed:{marker[1]}"
            events = self._failures.get(subject)
            if not events:
                return None
            count = sum(1 for t in events.values() if t > now - window_seconds)
            return f"failures:{count}" if count >= threshold else None

    def lift_suppression(self, e164: str) -> bool:
        subject = self._subject(e164)
        with self._lock:
            had_supp = self._suppressed.pop(subject) is not None
            had_fail = self._failures.pop(subject) is not None
            return had_supp or had_fail

    # -- erasure --------------------------------------------------------------------
    def erase(self, e164: str, *, to_hash: str, at: float) -> None:
        """Forget the number (see ``stores.base.Erasure``), keeping a do-not-contact tombstone."""
        subject = self._subject(e164)
        prefix = lookup_prefix(e164)
        with self._lock:
            for key in [k for k in self._lookups._data if k.startswith(prefix)]:
                self._lookups.pop(key)
            self._consent.pop(subject)
            self._failures.pop(subject)
            self._suppressed.pop(subject)
            for sid in [s for s, (_, r) in self._statuses._data.items() if r.to_hash == to_hash]:
                self._statuses.pop(sid)
                self._status_rank.pop(sid, None)
            kept = [e for e in self._audit if e.to_hash != to_hash]
            self._audit.clear()
            self._audit.extend(kept)
            tombstone = ConsentChange(e164=subject, scope=ACCOUNT_SCOPE, opted_out=True, source=ERASED, at=at)
            self._opt_outs[subject] = {ACCOUNT_SCOPE: tombstone}
            self._note_consent(tombstone)
            self._suppressing_writes += 1

    # -- idempotency ---------------------------------------------------------------
    def claim(self, key: str, fingerprint: str, *, ttl_seconds: float) -> Claim:
        with self._lock:
            rec = self._idem.get(key)
            if rec is None:
                token = secrets.token_hex(8)
                self._idem.put(key, _IdemRecord(fingerprint, "pending", token), ttl_seconds)
                return Claim(won=True, state="pending", fingerprint=fingerprint, token=token)
            state: Literal["pending", "done", "unknown"] = (
                "done" if rec.state == "done" else "unknown" if rec.state == "unknown" else "pending"
            )
            return Claim(won=False, state=state, fingerprint=rec.fingerprint, result=rec.result)

    def _owned(self, key: str, token: str) -> _IdemRecord | None:
        rec = self._idem.get(key)
        return rec if rec is not None and rec.token == token else None

    def complete(self, key: str, token: str, result: bytes, *, ttl_seconds: float) -> None:
        with self._lock:
            rec = self._owned(key, token)
            if rec is not None:
                self._idem.put(key, _IdemRecord(rec.fingerprint, "done", token, result), ttl_seconds)

    def abandon(self, key: str, token: str) -> None:
        with self._lock:
            if self._owned(key, token) is not None:
                self._idem.pop(key)

    def mark_unknown(self, key: str, token: str, *, ttl_seconds: float) -> None:
        with self._lock:
            rec = self._owned(key, token)
            if rec is not None:
                self._idem.put(key, _IdemRecord(rec.fingerprint, "unknown", token), ttl_seconds)

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
        with self._lock:
            current = self._statuses.get(sid)
            if current is not None and self._status_rank.get(sid, -1) >= rank:
                return False
            record = StatusRecord(sid=sid, status=status, error_code=error_code, updated_at=at, to_hash=to_hash)
            self._statuses.put(sid, record, ttl_seconds)
            self._status_rank[sid] = rank
            if len(self._status_rank) > 2 * self._statuses._max:
                self._status_rank = {k: v for k, v in self._status_rank.items() if self._statuses.get(k)}
            return True

    def status_of(self, sid: str) -> StatusRecord | None:
        with self._lock:
            return self._statuses.get(sid)

    # -- rate limits (GCRA) --------------------------------------------------------
    def reserve(self, bucket: str, *, rate_per_second: float, burst: int, now: float) -> float:
        return self.take(bucket, rate_per_second=rate_per_second, burst=burst, now=now, max_wait=float("inf"))[1]

    def take(
        self, bucket: str, *, rate_per_second: float, burst: int, now: float, max_wait: float
    ) -> tuple[bool, float]:
        with self._lock:
            wait, tat = gcra(self._rates.get(bucket), self._paused.get(bucket, 0.0), now, rate_per_second, burst)
            if wait > max_wait:
                return False, wait
            self._rates.put(bucket, tat, tat - now + burst / rate_per_second + 1)
            return True, wait

    def pause(self, bucket: str, *, until: float) -> None:
        with self._lock:
            if until > 0:
                self._paused[bucket] = until
            else:
                self._paused.pop(bucket, None)

    def paused_until(self, bucket: str) -> float:
        with self._lock:
            return self._paused.get(bucket, 0.0)

    # -- windows ---------------------------------------------------------------------
    def hit(self, key: str, event: str, *, at: float, window_seconds: float, limit: int) -> tuple[int, float | None]:
        check_window(window_seconds, limit)
        with self._lock:
            times, events = self._windows.get(key) or ([], set())
            if event not in events:
                events.add(event)
                bisect.insort(times, (at, event))
            gone = bisect.bisect_right(times, (at - window_seconds, "\uffff"))
            for _, old in times[:gone]:
                events.discard(old)
            del times[:gone]
            self._windows.put(key, (times, events), window_seconds)
            count = len(times)
            return count, (times[count - limit][0] + window_seconds if count > limit else None)

    def tally(self, ranges: Sequence[tuple[str, float, float]]) -> list[int]:
        with self._lock:
            held = [self._windows.get(key) for key, _, _ in ranges]
            return [
                0 if kept is None else sum(1 for at, _ in kept[0] if since < at <= until)
                for kept, (_, since, until) in zip(held, ranges, strict=True)
            ]

    # -- ledger ----------------------------------------------------------------------
    def spend(self, caps: Sequence[tuple[str, float]], amount: float, *, ttl_seconds: float) -> str | None:
        with self._lock:
            totals = [self._ledger.get(key) or 0.0 for key, _ in caps]
            over = next((key for (key, cap), total in zip(caps, totals, strict=True) if total + amount > cap), None)
            if over is None:
                for (key, _), total in zip(caps, totals, strict=True):
                    self._ledger.put(key, total + amount, ttl_seconds)  # refreshed: a period's key ends with it
            return over

    # -- audit ---------------------------------------------------------------------
    def record(self, entry: AuditEntry) -> None:
        with self._lock:
            self._audit.append(entry)  # immutable: kept as is, formatted only when read
            self._expire_audit()

    def _expire_audit(self) -> None:
        """Drop records past the retention (oldest first: the ring is in time order)."""
        if self._audit_max_age is not None:
            cutoff = self._clock() - self._audit_max_age
            while self._audit and self._audit[0].at < cutoff:
                self._audit.popleft()

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            self._expire_audit()
            newest = list(self._audit)[-limit:][::-1] if limit > 0 else []
        return [e.as_dict() for e in newest]
