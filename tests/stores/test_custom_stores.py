"""Custom stores pass the same contract: a MemoryStore subclass with its own opt-out set, and one written from scratch.

Both must stop a send to a number that opted out, however often the gate routed it before. Neither
vouches with a suppression version the gate can trust, so the gate reads them on every send.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from stores.contract import E164, T0, OnFakeClock
from support import FakeClock

from gatekeeper.errors import InvalidArgument
from gatekeeper.models import StatusRecord
from gatekeeper.stores.base import (
    ACCOUNT_SCOPE,
    AuditEntry,
    CachedLookup,
    Claim,
    ConsentChange,
    SuppressionVersion,
    version_reader,
)
from gatekeeper.stores.memory import MemoryStore


class OwnOptOutSet(MemoryStore):
    """A MemoryStore that keeps opt-outs in a set of its own; its inherited suppression counter never sees them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.opted_out: set[tuple[str, str]] = set()  # (number, scope)
        self.history: dict[str, list[ConsentChange]] = {}  # newest first
        self.guard = threading.Lock()

    def _note(self, change: ConsentChange) -> None:
        self.history.setdefault(change.e164, []).insert(0, change)

    def opt_out(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        with self.guard:
            changed = (e164, scope) not in self.opted_out
            self.opted_out.add((e164, scope))
            self._note(ConsentChange(e164, scope, True, source, at))
            return changed

    def opt_in(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        with self.guard:
            lifted = {(n, s) for n, s in self.opted_out if n == e164 and scope in (ACCOUNT_SCOPE, s)}
            self.opted_out -= lifted
            self._note(ConsentChange(e164, scope, False, source, at))
            return bool(lifted)

    def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        with self.guard:
            return next((s for s in scopes if (e164, s) in self.opted_out), None)

    def consent_history(self, e164: str, *, limit: int = 50) -> list[ConsentChange]:
        with self.guard:
            return self.history.get(e164, [])[:limit]

    def erase(self, e164: str, *, to_hash: str, at: float) -> None:
        """Its own opt-outs are its own to erase; the rest is the memory store's."""
        super().erase(e164, to_hash=to_hash, at=at)
        with self.guard:
            self.opted_out = {(n, s) for n, s in self.opted_out if n != e164} | {(e164, ACCOUNT_SCOPE)}
            self.history[e164] = [ConsentChange(e164, ACCOUNT_SCOPE, True, "erased", at)]


class ScratchStore:
    """Every store Protocol from scratch: plain dicts under one lock, entries expiring on the injected clock.

    Expired entries are dropped when met, not swept: fine for tests, not for a long-running process.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)  # a fill lock was let go
        self._filling: set[str] = set()
        self._expiring: dict[tuple[str, str], tuple[float, Any]] = {}  # (table, key) -> (expires at, value)
        self._opt_outs: dict[str, set[str]] = {}
        self._consent: dict[str, list[ConsentChange]] = {}  # newest first
        self._suppressed: dict[str, tuple[float, str]] = {}  # (until, reason), judged against the caller's now
        self._rates: dict[str, float] = {}  # GCRA theoretical arrival time
        self._audit: deque[AuditEntry] = deque(maxlen=10_000)

    # Call with the lock held.
    def _get(self, table: str, key: str) -> Any:
        held = self._expiring.get((table, key))
        if held is not None and held[0] <= self._clock():
            del self._expiring[(table, key)]
            return None
        return None if held is None else held[1]

    def _put(self, table: str, key: str, value: Any, ttl_seconds: float) -> None:
        self._expiring[(table, key)] = (self._clock() + ttl_seconds, value)

    # -- LookupCache
    def get_lookup(self, key: str) -> CachedLookup | None:
        with self._lock:
            entry: CachedLookup | None = self._get("lookup", key)
            return entry

    def put_lookup(self, key: str, entry: CachedLookup, *, ttl_seconds: float) -> None:
        with self._lock:
            self._put("lookup", key, entry, ttl_seconds)

    @contextmanager
    def fill_lock(self, key: str, *, ttl_seconds: float, wait_seconds: float) -> Iterator[bool]:
        with self._released:
            acquired = self._released.wait_for(lambda: key not in self._filling, timeout=max(wait_seconds, 0.0))
            if acquired:
                self._filling.add(key)
        try:
            yield acquired
        finally:
            if acquired:
                with self._released:
                    self._filling.discard(key)
                    self._released.notify_all()

    # -- OptOutStore
    def opt_out(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        with self._lock:
            scopes = self._opt_outs.setdefault(e164, set())
            changed = scope not in scopes
            scopes.add(scope)
            self._consent.setdefault(e164, []).insert(0, ConsentChange(e164, scope, True, source, at))
            return changed

    def opt_in(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        with self._lock:
            scopes = self._opt_outs.pop(e164, set())
            lifted = set(scopes) if scope == ACCOUNT_SCOPE else scopes & {scope}
            if scopes - lifted:
                self._opt_outs[e164] = scopes - lifted
            self._consent.setdefault(e164, []).insert(0, ConsentChange(e164, scope, False, source, at))
            return bool(lifted)

    def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        with self._lock:
            have = self._opt_outs.get(e164, set())
            return next((s for s in scopes if s in have), None)

    def consent_history(self, e164: str, *, limit: int = 50) -> list[ConsentChange]:
        with self._lock:
            return self._consent.get(e164, [])[:limit]

    # -- FailureStore
    def record_failure(self, e164: str, event_id: str, *, at: float, window_seconds: float) -> int:
        with self._lock:
            events = self._get("fail", e164) or {}
            events.setdefault(event_id, at)
            events = {k: t for k, t in events.items() if t > at - window_seconds}
            self._put("fail", e164, events, window_seconds)
            return len(events)

    def suppress(self, e164: str, *, ttl_seconds: float, reason: str, at: float) -> None:
        with self._lock:
            self._suppressed[e164] = (at + ttl_seconds, reason)

    def suppression(self, e164: str, *, now: float, window_seconds: float, threshold: int) -> str | None:
        with self._lock:
            until, reason = self._suppressed.get(e164, (now, ""))
            if until > now:
                return f"suppressed:{reason}"
            count = sum(1 for t in (self._get("fail", e164) or {}).values() if t > now - window_seconds)
            return f"failures:{count}" if count >= threshold else None

    def lift_suppression(self, e164: str) -> bool:
        with self._lock:
            had_failures = self._get("fail", e164) is not None
            self._expiring.pop(("fail", e164), None)
            return self._suppressed.pop(e164, None) is not None or had_failures

    # -- IdempotencyStore: the owner's Claim is kept as is (won=False), its token handed out to the owner only
    def claim(self, key: str, fingerprint: str, *, ttl_seconds: float) -> Claim:
        with self._lock:
            held: Claim | None = self._get("idem", key)
            if held is not None:
                return replace(held, token=None)
            token = secrets.token_hex(8)
            self._put("idem", key, Claim(won=False, state="pending", fingerprint=fingerprint, token=token), ttl_seconds)
            return Claim(won=True, state="pending", fingerprint=fingerprint, token=token)

    def _settle(self, key: str, token: str, settled: Claim | None, ttl_seconds: float = 0.0) -> None:
        with self._lock:
            held: Claim | None = self._get("idem", key)
            if held is None or held.token != token:
                return
            if settled is None:
                del self._expiring[("idem", key)]
            else:
                self._put("idem", key, replace(settled, fingerprint=held.fingerprint, token=token), ttl_seconds)

    def complete(self, key: str, token: str, result: bytes, *, ttl_seconds: float) -> None:
        self._settle(key, token, Claim(won=False, state="done", fingerprint="", result=result), ttl_seconds)

    def abandon(self, key: str, token: str) -> None:
        self._settle(key, token, None)

    def mark_unknown(self, key: str, token: str, *, ttl_seconds: float) -> None:
        self._settle(key, token, Claim(won=False, state="unknown", fingerprint=""), ttl_seconds)

    # -- StatusStore
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
            held = self._get("status", sid)
            if held is not None and held[0] >= rank:
                return False
            record = StatusRecord(sid=sid, status=status, error_code=error_code, updated_at=at, to_hash=to_hash)
            self._put("status", sid, (rank, record), ttl_seconds)
            return True

    def status_of(self, sid: str) -> StatusRecord | None:
        with self._lock:
            held = self._get("status", sid)
            return None if held is None else held[1]

    # -- RateLimiter (GCRA)
    def reserve(self, bucket: str, *, rate_per_second: float, burst: int, now: float) -> float:
        if rate_per_second <= 0 or burst < 1:
            raise InvalidArgument("rate_per_second must be > 0 and burst >= 1")
        interval = 1.0 / rate_per_second
        with self._lock:
            tat = max(self._rates.get(bucket, now), now)
            self._rates[bucket] = tat + interval
            return max(0.0, tat - (burst - 1) * interval - now)

    # -- AuditLog
    def record(self, entry: AuditEntry) -> None:
        with self._lock:
            self._audit.append(entry)

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            newest = list(self._audit)[-limit:][::-1] if limit > 0 else []
        return [e.as_dict() for e in newest]


class TestOwnOptOutSetContract(OnFakeClock):
    @pytest.fixture
    def store(self, clock: FakeClock) -> OwnOptOutSet:
        return OwnOptOutSet(clock=clock)


class TestScratchStoreContract(OnFakeClock):
    @pytest.fixture
    def store(self, clock: FakeClock) -> ScratchStore:
        return ScratchStore(clock=clock)


def test_inherited_version_is_not_trusted_for_an_own_opt_out_set() -> None:
    """The inherited counter ignores the subclass's opt-outs, so it vouches for its failures only, not opt-outs."""
    store = OwnOptOutSet()
    before = store.suppression_version()
    store.opt_out(E164, source="sms:STOP", at=T0)
    assert store.suppression_version() == before  # why the gate must not trust it for opt-outs
    assert version_reader(store, "opt_outs") is None
    assert version_reader(store, "failures") is not None


def test_scratch_store_has_no_version() -> None:
    """A store without suppression_version gets no version reader, so the gate reads it on every send."""
    store = ScratchStore()
    assert not isinstance(store, SuppressionVersion)
    assert (version_reader(store, "opt_outs"), version_reader(store, "failures")) == (None, None)
