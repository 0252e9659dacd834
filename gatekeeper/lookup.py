"""Step 3, enrich: Twilio Lookup v2 through the SDK, behind a cache and a single-flight lock.

* Only allowlisted fields are asked for; each field keeps its own fetch time,
  so a short-lived field (``sms_pumping_risk``) is refreshed alone while the
  long-lived line type stays cached.
* The cache key is ``lookup:v2:{e164}:{fields_hash}:{country}`` where country
  is the number's own region from the parse: the same number hits the cache
  whatever country hint the caller gave.
* Concurrent misses for one key make one request: the first caller holds the
  store's fill lock (a thread lock in memory, a Redis lock across processes),
  the others wait for it and then read the cache.
* A GET is retried on network errors, 5xx and 429 (``Retry-After`` honoured);
  any other 4xx is final. What cannot be had raises ``LookupUnavailable``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextlib import suppress
from copy import copy
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import requests
from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from gatekeeper import metrics
from gatekeeper.errors import ConfigError, LookupUnavailable, RateLimited, StoreUnavailable
from gatekeeper.models import DATED, LOOKUP_PACKAGES, Phone, PhoneFacts, package
from gatekeeper.phone import mask
from gatekeeper.rates import LookupGuard
from gatekeeper.retries import Backoff, TransientError, call_with_retries, parse_retry_after
from gatekeeper.settings import Settings
from gatekeeper.stores.base import CachedLookup, Call, LookupCache, Steps, lookup_key, lookup_prefix, run

log = logging.getLogger("gatekeeper.lookup")

K = TypeVar("K")
V = TypeVar("V")


#: Lookup answers kept in process memory in front of the store (see LookupService).
MEMO_ENTRIES = 10_000


class Memo(OrderedDict[K, V]):
    """A bounded in-process map: past ``max_entries`` the oldest entry goes first (0 keeps nothing).

    Eviction is O(1) (``popitem``). Safe to share between threads under the GIL: each step is one C
    call, and two threads evicting at once only evict one entry more.
    """

    def __init__(self, max_entries: int) -> None:
        super().__init__()
        self.max_entries = max_entries

    def remember(self, key: K, value: V) -> None:
        if self.max_entries <= 0:
            return
        self[key] = value
        if len(self) > self.max_entries:
            with suppress(KeyError):  # another thread emptied it first
                self.popitem(last=False)


def fields_hash(fields: tuple[str, ...]) -> str:
    return hashlib.sha256(",".join(sorted(fields)).encode()).hexdigest()[:12]


def local_facts(phone: Phone) -> PhoneFacts:
    """What the parse alone knows; used when Lookup is off or unavailable."""
    assert phone.e164 is not None
    return PhoneFacts(e164=phone.e164, country_code=phone.region, line_type=phone.local_line_type, source="local")


def facts_from_payload(
    e164: str, region: str | None, payload: Mapping[str, Any], fetched_at: float, fields: tuple[str, ...]
) -> PhoneFacts:
    """PhoneFacts from a Lookup v2 JSON answer; every package is optional (null when not requested)."""
    lti = payload.get("line_type_intelligence") or {}
    caller = payload.get("caller_name") or {}
    risk = payload.get("sms_pumping_risk") or {}
    score = risk.get("sms_pumping_risk_score")
    err = lti.get("error_code")
    return PhoneFacts(
        e164=payload.get("phone_number") or e164,
        country_code=payload.get("country_code") or region,
        line_type=lti.get("type"),
        carrier_name=lti.get("carrier_name"),
        mcc=lti.get("mobile_country_code"),
        mnc=lti.get("mobile_network_code"),
        caller_name=caller.get("caller_name"),
        source="lookup",
        fetched_at=fetched_at,
        valid=payload.get("valid"),
        carrier_error_code=int(err) if err is not None else None,
        sms_pumping_risk_score=int(score) if score is not None else None,
        sms_pumping_blocked=risk.get("number_blocked"),
        sim_swapped=((payload.get("sim_swap") or {}).get("last_sim_swap") or {}).get("swapped_in_period"),
        reassigned=(payload.get("reassigned_number") or {}).get("is_number_reassigned"),
        line_status=(payload.get("line_status") or {}).get("status"),
        fields=fields,
    )


@dataclass(frozen=True)
class LookupConfig:
    positive_ttl_seconds: float = 7 * 86_400
    negative_ttl_seconds: float = 3_600
    field_ttl_seconds: Mapping[str, float] | None = None
    timeout_seconds: float = 3.0
    max_retries: int = 2
    retry_backoff_ms: float = 200
    retry_jitter_ms: float = 100
    max_retry_after_ms: float = 10_000
    fill_wait_seconds: float = 10.0
    cache_enabled: bool = True
    memo_entries: int = MEMO_ENTRIES

    @classmethod
    def from_settings(cls, settings: Settings) -> LookupConfig:
        lk, cache = settings.lookup, settings.cache
        return cls(
            positive_ttl_seconds=cache.ttl_seconds,
            negative_ttl_seconds=cache.negative_ttl_seconds,
            field_ttl_seconds=lk.field_ttl_seconds,
            timeout_seconds=lk.timeout_ms / 1000,
            max_retries=lk.max_retries,
            retry_backoff_ms=lk.retry_backoff_ms,
            retry_jitter_ms=lk.retry_jitter_ms,
            max_retry_after_ms=lk.max_retry_after_ms,
            fill_wait_seconds=lk.fill_wait_ms / 1000,
            cache_enabled=cache.enabled,
            memo_entries=cache.facts_memo_entries,
        )


class LookupService:
    """Facts for a parsed number, from the cache or one Lookup v2 request.

    In front of the store sits an in-process memo of the answers this process last read or fetched,
    keyed like the store. What it holds: one ``CachedLookup`` per cache key, at most ``memo_entries``
    (oldest out first). What ends an entry: each use checks its fields' freshness against the
    purpose's max age, exactly as a store read would, and a stale one is read from the store again;
    a fetch by this process replaces it at once. What it buys: the store read on a repeated number,
    which is a lock on the memory store and a round trip on Redis (``./run bench`` prints both).
    Another process's refresh in a shared cache is seen when the answer held here ages out, as with
    any cache.
    """

    def __init__(
        self,
        client: Client,
        cache: LookupCache,
        config: LookupConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        backoff: Backoff | None = None,
        before_request: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.before_request = before_request
        self.guard: LookupGuard | None = None  # budgets, breaker and concurrency cap (set by the gate)
        self.cache = cache
        self.config = config or LookupConfig()
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff or Backoff(
            base_ms=self.config.retry_backoff_ms,
            jitter_ms=self.config.retry_jitter_ms,
            max_retry_after_ms=self.config.max_retry_after_ms,
        )
        self._field_ttl = dict(self.config.field_ttl_seconds or {})
        self._memo: Memo[str, CachedLookup] = Memo(self.config.memo_entries)
        # Stamped (with a number never used before) after every fill, so a read that began before
        # a fill can tell and does not keep what it read over what the fill brought.
        self._stamps = itertools.count()
        self._last_fill = next(self._stamps)
        self._hashes: dict[tuple[str, ...], str] = {}

    def with_before_request(self, hook: Callable[[], None]) -> LookupService:
        """A copy sharing the client, the cache and the memo that calls ``hook`` before every HTTP attempt.

        Batch enrichment hangs its rate-limit permit here, so exactly the requests that reach
        Twilio (retries included) are paced; cache hits and waits on another caller's fill are free.
        """
        twin = copy(self)
        twin.before_request = hook
        return twin

    def _ttl(self, field: str) -> float:
        return self._field_ttl.get(package(field), self.config.positive_ttl_seconds)

    def _stale(
        self, entry: CachedLookup, fields: tuple[str, ...], now: float, max_age: float | None
    ) -> tuple[str, ...]:
        """The fields of ``entry`` past their own TTL, capped by the purpose's max age (all, once a
        negative answer is past the negative TTL)."""
        if entry.negative:
            return fields if entry.fetched_at + self.config.negative_ttl_seconds <= now else ()
        # Stale at the very second its age is reached, as a store expires an entry (expires_at <= now).
        return tuple(f for f in fields if self._fresh_until(entry, f, max_age) <= now)

    def _fresh_until(self, entry: CachedLookup, field: str, max_age: float | None) -> float:
        """When ``field`` of ``entry`` stops being fresh: its own TTL, capped by the purpose's max age."""
        fetched = entry.field_times.get(field)
        if fetched is None:
            return float("-inf")
        ttl = self._ttl(field)
        return fetched + (ttl if max_age is None else min(ttl, max_age))

    def facts(self, phone: Phone, fields: tuple[str, ...], *, max_age_seconds: float | None = None) -> PhoneFacts:
        """Facts for ``phone`` (which must be valid); ``source`` says "cache" or "lookup"."""
        assert phone.e164 is not None
        if not self.config.cache_enabled:
            return self._fill(phone, fields, None, fields)
        key = self.key_for(phone, fields)
        held = self.memo_hit(key, fields, max_age_seconds)
        if held is not None:
            return held
        hit = self._cached(key, fields, max_age_seconds)
        metrics.cache_read(isinstance(hit, PhoneFacts))
        if isinstance(hit, PhoneFacts):
            return hit
        try:
            lock = self.cache.fill_lock(
                key,
                ttl_seconds=self.config.timeout_seconds * (self.config.max_retries + 1) + 5,
                wait_seconds=self.config.fill_wait_seconds,
            )
            with lock as acquired:
                if not acquired:
                    log.warning("lookup fill lock for %s not acquired in time; fetching anyway", mask(phone.e164))
                hit = self._cached(key, fields, max_age_seconds)  # filled while we waited?
                if isinstance(hit, PhoneFacts):
                    return hit
                return self._fill(phone, fields, hit, hit.stale if hit else fields, key=key)
        except StoreUnavailable as exc:
            log.warning("lookup cache unavailable (%s); asking Lookup directly", exc)
            return self._fill(phone, fields, None, fields)

    def held(
        self, phone: Phone, fields: tuple[str, ...], *, max_age_seconds: float | None = None
    ) -> tuple[str, PhoneFacts, float] | None:
        """What this process holds for ``phone``: ``(key, facts, fresh_until)``, or None.

        ``holds(key, facts)`` stays True while these very facts are held (until a fetch replaces them
        or they are evicted); ``fresh_until`` is when the first of ``fields`` ages out for ``max_age_seconds``.
        """
        assert phone.e164 is not None
        key = self._key(phone.e164, phone.region, fields)
        entry = self._memo.get(key)
        if entry is None or entry.negative:
            return None
        until = min((self._fresh_until(entry, f, max_age_seconds) for f in fields), default=0.0)
        return key, entry.facts, until

    def holds(self, key: str, facts: PhoneFacts) -> bool:
        """Whether the facts held for ``key`` are still ``facts`` themselves (see :meth:`held`)."""
        entry = self._memo.get(key)
        return entry is not None and entry.facts is facts

    # -- the pure part, shared with the async Lookup (gatekeeper.aio) ---------------------
    def key_for(self, phone: Phone, fields: tuple[str, ...]) -> str:
        """The cache key of ``phone``'s answer for ``fields``."""
        assert phone.e164 is not None
        return self._key(phone.e164, phone.region, fields)

    def memo_hit(self, key: str, fields: tuple[str, ...], max_age: float | None) -> PhoneFacts | None:
        """The facts this process holds for ``key`` when they are fresh for ``max_age``, counted as a cache hit."""
        held = self._memo.get(key)
        if held is not None and not self._stale(held, fields, self.clock(), max_age):
            metrics.cache_read(True)
            return held.facts
        return None

    @property
    def stamp(self) -> int:
        """Changes with every fill by this process: take it before a store read, give it to :meth:`seen`."""
        return self._last_fill

    def seen(
        self, key: str, entry: CachedLookup | None, stamp: int, fields: tuple[str, ...], max_age: float | None
    ) -> PhoneFacts | Partial | None:
        """What a store read of ``key`` (begun at ``stamp``) gives: fresh facts, a partial answer to refresh, or
        nothing; a read answer is held in memory unless a fill overtook it."""
        if entry is None:
            return None
        self._remember(key, entry, stamp)
        stale = self._stale(entry, fields, self.clock(), max_age)
        if not stale:
            return entry.facts
        return None if entry.negative else Partial(entry, stale)

    def request_params(self, fields: tuple[str, ...], region: str | None) -> dict[str, object]:
        """Lookup's query parameters for ``fields`` of a number parsed in ``region``."""
        params: dict[str, object] = {}
        if fields:
            params["Fields"] = ",".join(package(f) for f in fields)
        for field in fields:
            if DATED in field:
                params["LastVerifiedDate"] = field.split(DATED, 1)[1]
        if region:
            params["CountryCode"] = region
        return params

    def merged(
        self, phone: Phone, fields: tuple[str, ...], partial: Partial | None, wanted: tuple[str, ...], payload: Any
    ) -> tuple[PhoneFacts, CachedLookup, float]:
        """The facts a Lookup answer gives, the cache entry to keep (merged into ``partial``'s when only some
        fields were refreshed) and its TTL."""
        assert phone.e164 is not None
        now = self.clock()
        negative = payload.get("valid") is False
        if partial is not None and not negative:
            merged = dict(partial.entry.payload)
            asked = {package(f) for f in wanted}
            merged.update({k: v for k, v in payload.items() if k not in _PACKAGES or k in asked})
            times = {**partial.entry.field_times, **{f: now for f in wanted}}
        else:
            merged, times = dict(payload), {f: now for f in fields}
        facts = facts_from_payload(phone.e164, phone.region, merged, min(times.values(), default=now), fields)
        # Stored as the cache will serve it, so a hit costs no copy on the hot path.
        entry = CachedLookup(
            facts=replace(facts, source="cache"), payload=merged, field_times=times, fetched_at=now, negative=negative
        )
        ttl = (
            self.config.negative_ttl_seconds
            if negative
            else max(self._ttl(f) for f in fields)
            if fields
            else self.config.positive_ttl_seconds
        )
        return facts, entry, ttl

    def forget(self, e164: str) -> None:
        """Drop what this process holds about ``e164`` (an erasure): its routes go with it (they need the facts)."""
        prefix = lookup_prefix(e164)
        for key in [k for k in self._memo if k.startswith(prefix)]:
            self._memo.pop(key, None)

    def filled(self, key: str, entry: CachedLookup) -> None:
        """This process fetched ``entry``: what it held for the number is older now, the next decision uses this."""
        stamp = self._last_fill = next(self._stamps)
        self._remember(key, entry, stamp)

    # -- blocking I/O --------------------------------------------------------------
    def _key(self, e164: str, region: str | None, fields: tuple[str, ...]) -> str:
        fh = self._hashes.get(fields) or self._hashes.setdefault(fields, fields_hash(fields))
        return lookup_key(e164, fh, region or "ZZ")

    def _cached(self, key: str, fields: tuple[str, ...], max_age: float | None) -> PhoneFacts | Partial | None:
        stamp = self._last_fill
        try:
            entry = self.cache.get_lookup(key)
        except StoreUnavailable as exc:
            log.warning("lookup cache unavailable (%s)", exc)
            return None
        return self.seen(key, entry, stamp, fields, max_age)

    def _remember(self, key: str, entry: CachedLookup, stamp: int) -> None:
        """Hold ``entry`` in the memo, unless a fill landed since ``stamp`` (then what was read may be
        older than what the fill brought, and the memo drops the key instead of shadowing the fill)."""
        self._memo.remember(key, entry)
        if self._last_fill != stamp:
            self._memo.pop(key, None)

    def _fill(
        self,
        phone: Phone,
        fields: tuple[str, ...],
        partial: Partial | None,
        wanted: tuple[str, ...],
        *,
        key: str | None = None,
    ) -> PhoneFacts:
        assert phone.e164 is not None
        payload = self._fetch(phone.e164, wanted, phone.region)
        facts, entry, ttl = self.merged(phone, fields, partial, wanted, payload)
        if key is not None:
            try:
                self.cache.put_lookup(key, entry, ttl_seconds=ttl)
            except StoreUnavailable as exc:
                log.warning("lookup cache write failed (%s); the answer is kept in this process only", exc)
            self.filled(key, entry)
        return facts

    def _fetch(self, e164: str, fields: tuple[str, ...], region: str | None) -> dict[str, Any]:
        guard = self.guard
        if guard is None:
            return self._attempts(e164, self.request_params(fields, region))
        account = self.client.account_sid
        with guard.slots:  # [lookup] max_concurrent Lookups in flight in this process; the rest wait their turn
            admission = run(guard.stores, guard.breaker.admit_steps(account))
            if admission == "open":
                raise refused_by_breaker(e164)
            try:
                payload = self._attempts(e164, self.request_params(fields, region))
            except LookupUnavailable as exc:
                if exc.reason != "rate_limited":
                    run(guard.stores, guard.breaker.result_steps(account, admission, ok=False))
                raise
            run(guard.stores, guard.breaker.result_steps(account, admission, ok=True))
            return payload

    def _attempts(self, e164: str, params: dict[str, object]) -> dict[str, Any]:
        """The request and the retries that are safe; what still fails is LookupUnavailable."""
        try:
            return call_with_retries(
                lambda: self._fetch_once(e164, params),
                retry_if=lambda exc: isinstance(exc, TransientError),
                max_retries=self.config.max_retries,
                wait=self.backoff,
                sleep=self.sleep,
            )
        except TransientError as exc:
            raise LookupUnavailable(
                f"Lookup for {mask(e164)} failed after {self.config.max_retries + 1} attempts: {exc.reason}",
                reason=exc.reason,
                status=exc.status,
            ) from exc
        except RateLimited as exc:
            raise rate_limited(e164, exc) from exc

    def _fetch_once(self, e164: str, params: dict[str, object]) -> dict[str, Any]:
        # The SDK's own request path (auth, edge/region, the configured HttpClient) with two things
        # fetch() cannot give: a per-request timeout and the response headers (Retry-After).
        if self.before_request is not None:
            self.before_request()
        guard = self.guard
        if guard is not None:  # a permit of the lookups budget for every request that reaches Twilio, retries too
            wait = run(guard.stores, guard.budgets.take_steps("lookups", self.client.account_sid))
            if wait:
                self.sleep(wait)
        version = self.client.lookups.v2
        uri = f"/PhoneNumbers/{e164}"
        started = time.perf_counter()
        try:
            response = version.request("GET", uri, params=params, timeout=self.config.timeout_seconds)
        except requests.exceptions.RequestException as exc:
            metrics.lookup_request("error")
            metrics.lookup_timed(None, time.perf_counter() - started)
            raise TransientError(f"network:{type(exc).__name__}") from exc
        metrics.lookup_timed(response.status_code, time.perf_counter() - started)
        try:
            return answer(e164, response, lambda: version.exception("GET", uri, response, "Unable to fetch record"))
        except TransientError as exc:
            pause = exc.retry_after_seconds
            if guard is not None and exc.status == 429 and pause:
                run(guard.stores, guard.budgets.pause_steps("lookups", self.client.account_sid, pause))
                if pause > guard.budgets.max_wait:  # not worth a retry: every caller waits the pause out
                    raise RateLimited("lookups", pause) from exc
            raise

    def correct(self, phone: Phone, facts: PhoneFacts, *, line_type: str) -> None:
        """Twilio itself said what the number is (21614 on a send: not SMS-capable); the cached answer, and
        what this process holds, now say ``line_type``, so the next decision routes by it without a Lookup."""
        run(self, self.correct_steps(phone, facts, line_type=line_type))  # ``self.cache``: the role named

    def correct_steps(self, phone: Phone, facts: PhoneFacts, *, line_type: str) -> Steps[None]:
        """:meth:`correct` as cache calls: the cached answer, else (cache unreadable or empty) the one held here."""
        key = self.key_for(phone, facts.fields)
        try:
            entry = yield Call("cache", "get_lookup", (key,))
        except StoreUnavailable:
            entry = None
        fixed = self.corrected(phone, entry or self._memo.get(key), line_type)
        if fixed is None:
            return
        try:
            yield Call("cache", "put_lookup", (key, fixed[0]), {"ttl_seconds": fixed[1]})
        except StoreUnavailable as exc:
            log.warning("lookup cache write failed (%s); the correction is kept in this process only", exc)
        self.filled(key, fixed[0])

    def corrected(
        self, phone: Phone, entry: CachedLookup | None, line_type: str
    ) -> tuple[CachedLookup, float] | None:
        """``entry`` saying ``line_type`` now, and the TTL to keep it for; None when there is nothing to correct."""
        if entry is None or entry.negative:
            return None
        lti = {**(entry.payload.get("line_type_intelligence") or {}), "type": line_type}
        payload = {**entry.payload, "line_type_intelligence": lti}
        fixed = replace(entry, facts=replace(entry.facts, line_type=line_type), payload=payload)
        log.info("Lookup facts of %s corrected by Twilio's answer: %s", mask(phone.e164), line_type)
        return fixed, max((self._ttl(f) for f in entry.facts.fields), default=1.0)


#: Why a Lookup was not made that is not logged per decision: a budget spent or a breaker open would log every
#: decision while it lasts (the breaker logs its opening and closing; the decision's reason says which).
QUIET_REASONS = frozenset({"rate_limited", "breaker_open"})


def rate_limited(e164: str, exc: RateLimited) -> LookupUnavailable:
    """The lookups budget (or Twilio's Retry-After) allows no Lookup in time: the decision follows
    ``on_lookup_error`` with the reason ``lookup:rate_limited``."""
    return LookupUnavailable(
        f"Lookup for {mask(e164)} not made: the budget allows none for {exc.retry_after_seconds:.1f} s",
        reason="rate_limited",
    )


def refused_by_breaker(e164: str) -> LookupUnavailable:
    """Lookup keeps failing: no attempt while the breaker is open (reason ``lookup:breaker_open``)."""
    return LookupUnavailable(f"Lookup for {mask(e164)} not made: the breaker is open", reason="breaker_open")


def answer(e164: str, response: Any, error: Callable[[], TwilioException]) -> dict[str, Any]:
    """Lookup's JSON answer for ``e164`` from one HTTP response, or the error it amounts to.

    Raises TransientError (network-like: 429, 5xx, unreadable JSON; retried), ConfigError (401/403:
    the credentials cannot use Lookup; retrying cannot help) or LookupUnavailable (any other refusal,
    or an answer about another number, which is never trusted). ``error`` builds twilio's own
    exception for the chain. Shared by the blocking and the async Lookup.
    """
    status = response.status_code
    metrics.lookup_request("invalid" if status == 404 else "answered" if 200 <= status < 300 else "error")
    if 200 <= status < 300:
        try:
            data = json.loads(response.text)
        except ValueError as exc:
            raise TransientError("bad_json", status=status) from exc
        if not isinstance(data, dict):
            raise TransientError("bad_json", status=status)
        answered = data.get("phone_number")
        if answered is not None and answered != e164:
            raise LookupUnavailable(
                f"Lookup answered for {mask(str(answered))} when asked about {mask(e164)}; the answer is not used",
                reason="answer_for_another_number",
                status=status,
            )
        return data
    refused = error()
    if status == 404:  # Lookup v1 style "no such number": cache it as invalid
        return {"phone_number": e164, "valid": False, "validation_errors": ["NOT_FOUND"]}
    if status == 429 or status >= 500:
        headers = response.headers or {}
        retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
        raise TransientError(f"http_{status}", status=status, retry_after_seconds=retry_after) from refused
    code = getattr(refused, "code", None)
    if status in (401, 403):
        raise ConfigError(
            f"Lookup refused the credentials (HTTP {status}, code {code}): check the account SID and auth token "
            "or API key, and that the account may use Lookup",
            key="twilio",
        ) from refused
    raise LookupUnavailable(
        f"Lookup refused the request: HTTP {status}, code {code}", reason=f"http_{status}", status=status
    ) from refused


# A partial refresh merges only the packages it asked for (the others come back null).
_PACKAGES = frozenset(LOOKUP_PACKAGES)


@dataclass(frozen=True)
class Partial:
    """A cached entry with some fields past their age: only those are fetched again."""

    entry: CachedLookup
    stale: tuple[str, ...]
