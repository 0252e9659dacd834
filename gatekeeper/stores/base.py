"""What Gatekeeper keeps, as Protocols with one domain verb per method.

There is no generic ``get``/``set``: each verb is one atomic step in every
backend (one Redis command or one Lua script), so callers cannot build
check-then-act races out of them. Times are epoch seconds passed in by the
caller, so tests drive a fake clock.

Key layout (Redis; the memory store uses the same strings). Every key carries
the phone number or SID as a ``{hash tag}`` so one number's keys live on one
Redis Cluster slot::

    {prefix}lookup:v2:{e164}:{fields_hash}:{country}   cached Lookup answer
    {prefix}fill:{...same...}                           single-flight lock for that answer
    {prefix}optout:{e164}                               hash  scope -> change record
    {prefix}consent:{e164}                              list  consent history, newest first
    {prefix}fail:{e164}                                 zset  failure event -> time
    {prefix}supp:{e164}                                 suppression marker (TTL)
    {prefix}idem:{key}                                  idempotency claim
    {prefix}status:{sid}                                latest delivery status
    {prefix}rate:{bucket}                               GCRA theoretical arrival time
    {prefix}audit                                       stream of decision records
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from gatekeeper.models import PhoneFacts, StatusRecord

#: The scope of an account-wide opt-out (the default, and what STOPALL always uses).
ACCOUNT_SCOPE = "*"

#: The optional ``int`` attribute by which a store living in this process counts the writes that can
#: make a number suppressed (an opt-out, a delivery failure, a suppression). Time alone only ever lifts
#: a suppression, so while the count stands still a number the gate found clear is still clear and it
#: need not read the store again. A store that has the attribute promises to bump it on every such
#: write, subclasses included; a store other processes write to (Redis) must not have it, and is read
#: on every decision.
SUPPRESSION_WRITES = "suppression_writes"


def lookup_key(e164: str, fields_hash: str, country: str) -> str:
    """The cache key of one Lookup answer (without the store's prefix)."""
    return f"lookup:v2:{{{e164}}}:{fields_hash}:{country}"


@dataclass(frozen=True, slots=True)
class CachedLookup:
    """One cached Lookup answer: the facts, the raw payload and when each field was fetched.

    ``negative`` marks an answer that says the number is invalid (cached for
    the shorter negative TTL). ``payload`` keeps Lookup's JSON so a refresh of
    one short-lived field can merge into it.
    """

    facts: PhoneFacts
    payload: Mapping[str, Any]
    field_times: Mapping[str, float]
    fetched_at: float
    negative: bool = False


@dataclass(frozen=True, slots=True)
class ConsentChange:
    """One recorded consent change for a number."""

    e164: str
    scope: str
    opted_out: bool
    source: str
    at: float


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to an idempotency claim.

    ``won`` is True for the caller that now owns the key (``token`` proves it);
    otherwise ``state`` says where the first caller is and ``result`` holds its
    stored answer once ``state == "done"``.
    """

    won: bool
    state: Literal["pending", "done", "unknown"]
    fingerprint: str
    token: str | None = None
    result: bytes | None = None


class AuditEntry(NamedTuple):
    """One decision as the audit keeps it: the number only masked and hashed.

    Built on every decision, so it shares what the decision already holds (the reasons, the facts)
    instead of copying them, and it is a named tuple, the cheapest immutable record to build;
    :meth:`as_dict` is the stored and reported form.
    """

    at: float
    purpose: str
    to: str  # masked: +1415555****
    to_hash: str
    action: str
    channel: str | None
    reasons: tuple[str, ...]
    twilio_code: int | None
    enforced: bool
    cache_hit: bool
    facts: PhoneFacts | None
    clock_marks: tuple[float, float, float, float, float]  # perf_counter at start, after each step, at the end

    def as_dict(self) -> dict[str, Any]:
        f = self.facts
        start, normalized, suppressed, enriched, end = self.clock_marks

        def us(seconds: float) -> float:
            return round(seconds * 1e6, 1)

        return {
            "at": self.at,
            "purpose": self.purpose,
            "to": self.to,
            "to_hash": self.to_hash,
            "action": self.action,
            "channel": self.channel,
            "reasons": list(self.reasons),
            "twilio_code": self.twilio_code,
            "enforced": self.enforced,
            "cache_hit": self.cache_hit,
            "facts": None
            if f is None
            else {
                "country": f.country_code,
                "line_type": f.line_type,
                "carrier": f.carrier_name,
                "source": f.source,
                "fetched_at": f.fetched_at,
            },
            "timings_us": {
                "normalize": us(normalized - start),
                "suppress": us(suppressed - normalized),
                "enrich": us(enriched - suppressed),
                "total": us(end - start),
            },
        }


@runtime_checkable
class LookupCache(Protocol):
    def get_lookup(self, key: str) -> CachedLookup | None:
        """The cached answer for ``key``, or None when absent or expired."""

    def put_lookup(self, key: str, entry: CachedLookup, *, ttl_seconds: float) -> None:
        """Store ``entry`` under ``key`` for ``ttl_seconds``."""

    def fill_lock(self, key: str, *, ttl_seconds: float, wait_seconds: float) -> AbstractContextManager[bool]:
        """Hold the single-flight lock for filling ``key``; yields False if it could not be had in time."""


@runtime_checkable
class OptOutStore(Protocol):
    def opt_out(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        """Record an opt-out; True if it changed anything."""

    def opt_in(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        """Lift what matches: the account scope lifts every scope, a sender scope only itself."""

    def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        """The first of ``scopes`` this number opted out of, or None."""

    def consent_history(self, e164: str, *, limit: int = 50) -> list[ConsentChange]:
        """Recorded consent changes for the number, newest first."""


@runtime_checkable
class FailureStore(Protocol):
    def record_failure(self, e164: str, event_id: str, *, at: float, window_seconds: float) -> int:
        """Count one hard failure (once per ``event_id``); returns failures inside the window."""

    def suppress(self, e164: str, *, ttl_seconds: float, reason: str, at: float) -> None:
        """Suppress the number for ``ttl_seconds``."""

    def suppression(self, e164: str, *, now: float, window_seconds: float, threshold: int) -> str | None:
        """Why the number is suppressed now (``"suppressed:<reason>"`` or ``"failures:<n>"``), or None."""

    def lift_suppression(self, e164: str) -> bool:
        """Clear the suppression and the failure count; True if there was anything to clear."""


@runtime_checkable
class IdempotencyStore(Protocol):
    def claim(self, key: str, fingerprint: str, *, ttl_seconds: float) -> Claim:
        """Atomically claim ``key`` or report the existing claim."""

    def complete(self, key: str, token: str, result: bytes, *, ttl_seconds: float) -> None:
        """Store the owner's result under the claim."""

    def abandon(self, key: str, token: str) -> None:
        """Release the owner's claim (nothing happened, a retry may proceed)."""

    def mark_unknown(self, key: str, token: str, *, ttl_seconds: float) -> None:
        """The owner failed in a way that may have acted; later claims see ``state == "unknown"``."""


@runtime_checkable
class StatusStore(Protocol):
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
        """Store the status unless one of higher or equal ``rank`` is stored; True if applied."""

    def status_of(self, sid: str) -> StatusRecord | None:
        """The stored status for ``sid``."""


@runtime_checkable
class RateLimiter(Protocol):
    def reserve(self, bucket: str, *, rate_per_second: float, burst: int, now: float) -> float:
        """Reserve one permit; returns the seconds to wait before using it (0 when free now)."""


@runtime_checkable
class AuditLog(Protocol):
    def record(self, entry: AuditEntry) -> None:
        """Append one decision record."""

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest records, newest first."""


@dataclass
class Stores:
    """The stores one :class:`~gatekeeper.gate.Gatekeeper` uses; any field may be swapped.

    The gate reads every field on each use, except ``cache``: its Lookup service is bound to the
    cache the gate was built with, so swap the cache before building the gate.
    """

    cache: LookupCache
    opt_outs: OptOutStore
    failures: FailureStore
    idempotency: IdempotencyStore
    statuses: StatusStore
    rate_limits: RateLimiter
    audit: AuditLog
    closers: list[Any] = field(default_factory=list, repr=False)

    @classmethod
    def using(cls, backend: Any) -> Stores:
        """One object implementing every protocol (``MemoryStore``, ``RedisStore``) for all roles."""
        return cls(
            cache=backend,
            opt_outs=backend,
            failures=backend,
            idempotency=backend,
            statuses=backend,
            rate_limits=backend,
            audit=backend,
        )

    @classmethod
    def memory(cls, *, max_entries: int = 100_000) -> Stores:
        from gatekeeper.stores.memory import MemoryStore

        return cls.using(MemoryStore(max_entries=max_entries))
