"""What Gatekeeper keeps, as Protocols with one domain verb per method.

There is no generic ``get``/``set``: each verb is one atomic step in every
backend (one Redis command or one Lua script), so callers cannot build
check-then-act races out of them. Times are epoch seconds passed in by the
caller, so tests drive a fake clock.

Key layout (Redis; the memory store keys its maps by the same identifiers). Every key carries a
``{hash tag}`` so the keys of one number, subject, SID or to_hash live on one Redis Cluster slot. A number's
consent, failures and suppression are filed under its ``subject`` (:func:`subject_key`: a keyed hash, so the store
does not name the number); only the Lookup cache, which sending needs, holds the number itself::

    {prefix}secret:{name}                               32 random bytes, made once (SET NX): see SecretKeeper
    {prefix}lookup:v2:{e164}:{fields_hash}:{country}   cached Lookup answer
    {prefix}fill:{...same...}                           single-flight lock for that answer
    {prefix}optout:{subject}                            hash  scope -> change record
    {prefix}consent:{subject}                           list  consent history, newest first (no number in it)
    {prefix}fail:{subject}                              zset  failure event -> time
    {prefix}supp:{subject}                              suppression marker (TTL)
    {prefix}idem:{key}                                  idempotency claim
    {prefix}status:{sid}                                latest delivery status
    {prefix}status_by:{to_hash}                         set   the SIDs of that to_hash's statuses (erasure's index)
    {prefix}rate:{bucket}                               GCRA theoretical arrival time
    {prefix}audit                                       stream of decision records
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import Callable, Generator, Hashable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, NamedTuple, Protocol, TypeVar, runtime_checkable

from gatekeeper.errors import InvalidArgument, InvalidArgumentType, StoreUnavailable
from gatekeeper.models import AuditEntry, PhoneFacts, StatusRecord
from gatekeeper.stores.guard_verbs import Ledger, WindowBatch, Windows, WindowTally

__all__ = [  # AuditEntry is re-exported: custom stores import it from here
    "ACCOUNT_SCOPE",
    "AuditEntry",
    "AuditLog",
    "CachedLookup",
    "Claim",
    "ConsentChange",
    "FailureStore",
    "IdempotencyStore",
    "Ledger",
    "LookupCache",
    "OptOutStore",
    "RateLimiter",
    "Screening",
    "StatusEvents",
    "StatusStore",
    "Stores",
    "SuppressionVersion",
    "WindowBatch",
    "WindowTally",
    "Windows",
    "blocking",
    "lookup_key",
    "version_reader",
]

log = logging.getLogger("gatekeeper.stores")

#: The scope of an account-wide opt-out (the default, and what STOPALL always uses).
ACCOUNT_SCOPE = "*"
#: A number no one has: what a health probe reads.
_PROBE_NUMBER = "+10000000000"


class Call(NamedTuple):
    """One store verb a step needs: ``getattr(stores.<role>, verb)(*args, **kwargs)``."""

    role: str
    verb: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}  # noqa: RUF012 - never mutated: a NamedTuple default shared read-only


T = TypeVar("T")

#: An operation written as the store calls it needs (sans-I/O): :func:`run` carries it out blocking,
#: the async gate with awaits; the logic between the calls is written once.
Steps = Generator[Call, Any, T]


def run(stores: object, steps: Steps[T]) -> T:
    """Carry out ``steps`` with blocking store calls on ``stores`` (a :class:`Stores`, or any object with the
    roles the steps name); a store's error is thrown back into the steps."""
    answer: Any = None
    failure: BaseException | None = None
    while True:
        try:
            call = steps.send(answer) if failure is None else steps.throw(failure)
        except StopIteration as end:
            result: T = end.value
            return result
        answer, failure = None, None
        try:
            answer = getattr(getattr(stores, call.role), call.verb)(*call.args, **call.kwargs)
        except StoreUnavailable as exc:
            failure = exc


def lookup_key(e164: str, fields_hash: str, country: str) -> str:
    """The cache key of one Lookup answer (without the store's prefix)."""
    return f"{lookup_prefix(e164)}{fields_hash}:{country}"


def lookup_prefix(e164: str) -> str:
    """What every cache key of ``e164``'s Lookup answers starts with (an erasure finds them by it)."""
    return f"lookup:v2:{{{e164}}}:"


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
class SuppressionVersion(Protocol):
    """Optional, for an opt-out or failure store that can tell cheaply that nothing suppressing was written.

    The gate screens a repeated number against the stores on every send, unless the store it would
    read has this: then, while the version is what it was when the number was last found clear, the
    number is still clear (time alone never suppresses a number) and the read is spared.
    """

    def suppression_version(self) -> Hashable:
        """A value that changes with every write that can suppress a number (an opt-out, a hard failure, a
        suppression), whoever made it: a store that other processes write to must see their writes too."""


@runtime_checkable
class StatusEvents(Protocol):
    """Optional, for a status store that can take a status callback whole in one step: seen-check and status
    together (one Redis round trip instead of an idempotency claim, the status, and the claim's settling: three).

    The gate uses it for the events that write nothing else (no failure to count, no opt-out to record); the rest
    go through the idempotency claim as before. Whether an event takes this way depends only on the event and the
    store, so every delivery of one event takes the same way."""

    def apply_status_event(
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
        """``(new, applied)``: False, False when ``event`` was taken already (a duplicate: nothing written); else
        the event is remembered with the status (as long as it is kept) and ``applied`` is what
        :meth:`StatusStore.apply_status` would say."""


@runtime_checkable
class Screening(Protocol):
    """Optional, for a store that keeps both opt-outs and failures: both reads of a screening in one step (one
    Redis round trip instead of two). The gate uses it only when one store holds both roles and the class that
    defines ``screening`` also defines, or inherits, the two reads it stands for (see :func:`screening_reader`)."""

    def screening(
        self, e164: str, scopes: Sequence[str], *, now: float, window_seconds: float, threshold: int
    ) -> tuple[str | None, str | None]:
        """``(opted_out_scope(e164, scopes), suppression(e164, now=..., window_seconds=..., threshold=...))``."""


def screening_trusted(store: object) -> bool:
    """Whether ``store.screening`` answers for its own ``opted_out_scope`` and ``suppression``: not when a subclass
    overrides one of them (reading its own set, say) but inherits ``screening``."""
    return _vouches(store, "screening", ("opted_out_scope", "suppression"))


def status_events_trusted(store: object) -> bool:
    """Whether ``store.apply_status_event`` answers for its own ``apply_status`` (as :func:`screening_trusted`)."""
    return _vouches(store, "apply_status_event", ("apply_status",))


def _vouches(store: object, shortcut: str, verbs: tuple[str, ...]) -> bool:
    """Whether the class defining ``shortcut`` also defines, or inherits, each of ``verbs`` it stands for."""
    cls = type(store)
    owner = _definer(cls, shortcut)
    return owner is not None and all(
        (definer := _definer(cls, verb)) is not None and issubclass(owner, definer) for verb in verbs
    )


#: What a suppression version stands in for, per role: the writes it must follow and the reads it spares.
SCREENING_VERBS: dict[str, tuple[str, ...]] = {
    "opt_outs": ("opt_out", "opted_out_scope"),
    "failures": ("record_failure", "suppress", "suppression"),
}
_TRUSTED: dict[tuple[type, str], bool] = {}


def version_reader(store: object, role: str) -> Callable[[], Hashable] | None:
    """``store.suppression_version`` when it can vouch for the store's ``role`` verbs, else None.

    It can when the class that defines it also defines, or inherits, every verb it stands for. A
    subclass that overrides one of them (say ``opted_out_scope`` reading its own set) but inherits the
    version gets None, so the gate reads that store on every send instead of trusting a count its
    writes never move.
    """
    cls = type(store)
    trusted = _TRUSTED.get((cls, role))
    if trusted is None:
        owner = _definer(cls, "suppression_version")
        trusted = owner is not None and all(
            (definer := _definer(cls, verb)) is not None and issubclass(owner, definer)
            for verb in SCREENING_VERBS[role]
        )
        _TRUSTED[(cls, role)] = trusted
    return store.suppression_version if trusted else None  # type: ignore[attr-defined]


def _definer(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in vars(c)), None)


class Risk(NamedTuple):
    """A way a store may lose what it acknowledged: ``code`` for machines (``persistence:none``,
    ``eviction:allkeys-lru``, ``store:memory``), ``detail`` for people."""

    code: str
    detail: str


@runtime_checkable
class DurabilityReport(Protocol):
    """Optional: a store that can say how it may lose acknowledged writes (an opt-out is a legal record)."""

    def durability(self) -> list[Risk]:
        """The risks, none when what the store acknowledged survives a restart of it and of this process."""


def unchecked(exc: StoreUnavailable) -> Risk:
    """The risk of a store that could not say how it keeps what it stores (it is unreachable)."""
    return Risk("durability:unchecked", f"the store could not say how it keeps what it stores: {exc}")


def checked_durability(report: Callable[[], list[Risk]]) -> list[Risk]:
    """A store's durability report, or the risk that it could not give one."""
    try:
        return report()
    except StoreUnavailable as exc:
        return [unchecked(exc)]


@runtime_checkable
class SecretKeeper(Protocol):
    """Optional: a store that keeps secrets for the processes sharing it (the audit's pseudonym key)."""

    def secret(self, name: str) -> bytes:
        """32 random bytes kept under ``name``, made on first use; the same for every process sharing the store."""


@runtime_checkable
class Erasure(Protocol):
    """Optional: a store that can forget one number (a data-subject erasure request)."""

    def erase(self, e164: str, *, to_hash: str, at: float) -> None:
        """Forget ``e164``: its Lookup answers, consent history, failures and suppression, and the statuses and
        audit records under ``to_hash`` (the audit's pseudonym of it); keep a do-not-contact tombstone, an
        account-wide opt-out with source ``erased`` at ``at``."""


@lru_cache(maxsize=8_192)  # screening a repeated number need not hash it again
def subject_key(secret: bytes, e164: str) -> str:
    """How a store keys a number's consent, failures and suppression: a keyed hash (HMAC-SHA256 under the store's
    ``consent`` secret), so what it holds does not name the number."""
    return hmac.digest(secret, e164.encode(), "sha256").hex()[:40]


#: The source of the consent change :meth:`Erasure.erase` leaves behind.
ERASED = "erased"


@runtime_checkable
class EventJournal(Protocol):
    """Webhook events kept on this host until the shared store takes them (see ``gatekeeper.stores.journal``)."""

    def append(
        self, kind: str, subject: str | None, params: Sequence[tuple[str, str]], token: str | None, body: bytes
    ) -> int:
        """Keep one verified event, durably, before the webhook answers 2xx; its sequence number."""

    def pending(self, limit: int = 100) -> list[Any]:
        """The oldest events waiting (``JournalEntry``), oldest first."""

    def count(self) -> int:
        """How many events wait."""

    def holds(self, subject: str) -> bool:
        """Whether an event about ``subject`` (a number's key) waits."""

    def applied(self, seq: int) -> None:
        """Forget an event the shared store now holds."""

    def replaying(self, ttl_seconds: float) -> AbstractContextManager[bool]:
        """The lease that lets one process at a time replay."""


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
class Budget(Protocol):
    """Optional, for a rate limiter shared by every process: permits taken only when due soon enough, and pauses
    (a 429's ``Retry-After``, an open circuit breaker) that every process honours."""

    def take(
        self, bucket: str, *, rate_per_second: float, burst: int, now: float, max_wait: float
    ) -> tuple[bool, float]:
        """Take one permit if it is due within ``max_wait`` seconds (a pause included): ``(True, wait)``; else take
        nothing and return ``(False, wait)``, the wait it would have needed."""

    def pause(self, bucket: str, *, until: float) -> None:
        """No permit of ``bucket`` before ``until`` (the caller's clock); 0 lifts a pause."""

    def paused_until(self, bucket: str) -> float:
        """When ``bucket``'s pause ends (0.0 when it has none)."""


def gcra(tat: float | None, paused: float, now: float, rate_per_second: float, burst: int) -> tuple[float, float]:
    """One permit of a GCRA bucket whose theoretical arrival time is ``tat`` (None: new) and which is paused until
    ``paused``: the wait before it may be used, and the bucket's next ``tat``. A permit after a pause comes at its
    end with no burst; the ones after it are spaced at the rate."""
    if rate_per_second <= 0 or burst < 1:
        raise InvalidArgument("rate_per_second must be > 0 and burst >= 1")
    interval = 1.0 / rate_per_second
    tolerance = (burst - 1) * interval
    base = max(tat if tat is not None else now, now, paused + tolerance)
    return max(0.0, base - tolerance - now), base + interval


@runtime_checkable
class AuditLog(Protocol):
    def record(self, entry: AuditEntry) -> None:
        """Append one decision record."""

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest records, newest first."""


def blocking(store: object) -> bool:
    """Whether a store's verbs may wait (on a disk, a network, another thread). A store declares ``blocking =
    False`` when they never do, like the memory store; the async gate then calls them in place instead of in
    a worker thread. A store whose verbs are coroutines (``AsyncRedisStore``) is awaited either way."""
    return bool(getattr(store, "blocking", True))


@dataclass
class Stores:
    """The stores one :class:`~gatekeeper.gate.Gatekeeper` uses; any field may be swapped.

    The gate relies on nothing but what these Protocols declare, and reads every field on each use,
    except ``cache``: its Lookup service is bound to the cache the gate was built with, so swap the
    cache before building the gate.
    """

    cache: LookupCache
    opt_outs: OptOutStore
    failures: FailureStore
    idempotency: IdempotencyStore
    statuses: StatusStore
    rate_limits: RateLimiter
    audit: AuditLog
    #: Optional: the guard's sliding windows (``Windows``); None: velocity rules count nothing.
    windows: Windows | None = None
    #: Optional: spend totals (``Ledger``); None: spend caps are not kept.
    ledger: Ledger | None = None
    #: Optional: webhook events this host could not store yet (``gatekeeper.stores.journal``); while one about
    #: a number waits, the gate refuses to send to it.
    journal: EventJournal | None = None
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
            windows=backend if isinstance(backend, Windows) else None,
            ledger=backend if isinstance(backend, Ledger) else None,
        )

    def health_probes(self) -> list[Call]:
        """One read per distinct backend the webhooks write, named by the first role it serves."""
        probes = [
            Call("opt_outs", "opted_out_scope", (_PROBE_NUMBER, [ACCOUNT_SCOPE])),
            Call("failures", "suppression", (_PROBE_NUMBER,), {"now": 0.0, "window_seconds": 1, "threshold": 1}),
            Call("statuses", "status_of", ("healthz",)),
            Call("idempotency", "claim", ("healthz", "healthz"), {"ttl_seconds": 1.0}),
        ]
        seen: set[int] = set()
        distinct = []
        for probe in probes:
            backend = getattr(self, probe.role)
            if id(backend) not in seen:
                seen.add(id(backend))
                distinct.append(probe)
        return distinct

    def roles_of(self, probe: Call) -> list[str]:
        """Every role the backend ``probe`` reads also serves."""
        backend = getattr(self, probe.role)
        return [role for role in ("opt_outs", "failures", "statuses", "idempotency") if getattr(self, role) is backend]

    def health(self) -> dict[str, bool]:
        """Whether each store the webhooks write can be read (``await AsyncStores(stores).health()`` for
        stores whose verbs are coroutines)."""
        out: dict[str, bool] = {}
        for probe in self.health_probes():
            verb = getattr(getattr(self, probe.role), probe.verb)
            if inspect.iscoroutinefunction(verb):
                raise InvalidArgumentType(
                    f"the {probe.role} store is async: use await gatekeeper.aio.AsyncStores(stores).health()"
                )
            try:
                verb(*probe.args, **probe.kwargs)
                healthy = True
            except StoreUnavailable as exc:
                log.error("%s store unavailable: %s", probe.role, exc)
                healthy = False
            out.update(dict.fromkeys(self.roles_of(probe), healthy))
        return out

    def durability_probes(self) -> list[Call]:
        """A ``durability`` call per distinct backend the webhooks write that can report its risks."""
        return [
            Call(probe.role, "durability")
            for probe in self.health_probes()
            if isinstance(getattr(self, probe.role), DurabilityReport)
        ]

    def durability(self) -> list[Risk]:
        """How the stores the webhooks write may lose what they acknowledged (see :class:`DurabilityReport`);
        ``await AsyncStores(stores).durability()`` for stores whose verbs are coroutines."""
        risks: list[Risk] = []
        for probe in self.durability_probes():
            verb = getattr(getattr(self, probe.role), probe.verb)
            if inspect.iscoroutinefunction(verb):
                raise InvalidArgumentType(
                    f"the {probe.role} store is async: use await gatekeeper.aio.AsyncStores(stores).durability()"
                )
            risks.extend(checked_durability(verb))
        return list(dict.fromkeys(risks))

    @classmethod
    def memory(cls, *, max_entries: int = 100_000) -> Stores:
        from gatekeeper.stores.memory import MemoryStore

        return cls.using(MemoryStore(max_entries=max_entries))
