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
from collections.abc import Callable, Mapping
from copy import copy
from dataclasses import dataclass, replace
from typing import Any

import requests
from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from gatekeeper import metrics
from gatekeeper.errors import LookupUnavailable, StoreUnavailable
from gatekeeper.memo import Memo
from gatekeeper.models import LOOKUP_PACKAGES, Phone, PhoneFacts
from gatekeeper.phone import mask
from gatekeeper.retries import Backoff, TransientError, call_with_retries, parse_retry_after
from gatekeeper.stores.base import CachedLookup, LookupCache, lookup_key

log = logging.getLogger("gatekeeper.lookup")


#: Fresh facts kept in process memory in front of the store (see LookupService._remember).
_RECENT_MAX = 10_000
#: What the in-process memo is keyed by: the cache key and the purpose's max age.
Handle = tuple[str, float | None]
#: What it holds: when the facts stop being fresh, and the facts.
Held = tuple[float, PhoneFacts]


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


class LookupService:
    """Facts for a parsed number, from the cache or one Lookup v2 request."""

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
        self._recent: Memo[Handle, Held] = Memo(_RECENT_MAX)
        self._max_ages: set[float | None] = set()  # the max ages ``_recent`` is keyed by
        # Stamped (with a number never used before) after every fill, so a read that began before
        # a fill can tell and does not remember what it read.
        self._stamps = itertools.count()
        self._last_fill = next(self._stamps)
        self._hashes: dict[tuple[str, ...], str] = {}

    def with_before_request(self, hook: Callable[[], None]) -> LookupService:
        """A copy sharing the client and the cache that calls ``hook`` before every HTTP attempt.

        Batch enrichment hangs its rate-limit permit here, so exactly the requests that reach
        Twilio (retries included) are paced; cache hits and waits on another caller's fill are free.
        """
        twin = copy(self)
        twin.before_request = hook
        return twin

    def _ttl(self, field: str) -> float:
        return self._field_ttl.get(field, self.config.positive_ttl_seconds)

    def _fresh_until(self, entry: CachedLookup, field: str, max_age: float | None) -> float:
        """When ``field`` of ``entry`` stops being fresh: its own TTL, capped by the purpose's max age."""
        fetched = entry.field_times.get(field)
        if fetched is None:
            return float("-inf")
        ttl = self._ttl(field)
        return fetched + (ttl if max_age is None else min(ttl, max_age))

    def _stale(
        self, entry: CachedLookup, fields: tuple[str, ...], now: float, max_age: float | None
    ) -> tuple[str, ...]:
        if entry.negative:
            return ()
        return tuple(f for f in fields if self._fresh_until(entry, f, max_age) < now)

    def facts(self, phone: Phone, fields: tuple[str, ...], *, max_age_seconds: float | None = None) -> PhoneFacts:
        """Facts for ``phone`` (which must be valid); ``source`` says "cache" or "lookup"."""
        assert phone.e164 is not None
        if not self.config.cache_enabled:
            return self._fill(phone, fields, None, fields)
        key = self._key(phone.e164, phone.region, fields)
        recent = self._recent.get((key, max_age_seconds))
        if recent is not None and recent[0] > self.clock():
            metrics.cache_read(True)
            return recent[1]
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
                return self._fill(phone, fields, hit, hit.stale if hit else fields, key=key, max_age=max_age_seconds)
        except StoreUnavailable as exc:
            log.warning("lookup cache unavailable (%s); asking Lookup directly", exc)
            return self._fill(phone, fields, None, fields)

    def _key(self, e164: str, region: str | None, fields: tuple[str, ...]) -> str:
        fh = self._hashes.get(fields) or self._hashes.setdefault(fields, fields_hash(fields))
        return lookup_key(e164, fh, region or "ZZ")

    def held(
        self, phone: Phone, fields: tuple[str, ...], *, max_age_seconds: float | None = None
    ) -> tuple[Mapping[Handle, Held], Handle, Held] | None:
        """The facts this process holds for ``phone``, as ``(holder, handle, (fresh_until, facts))``, or None.

        ``holder.get(handle) is held`` for as long as these very facts are held: until they are
        refreshed or evicted. The gate keeps a decision routed from them that long, and no longer
        than ``fresh_until``.
        """
        assert phone.e164 is not None
        handle = (self._key(phone.e164, phone.region, fields), max_age_seconds)
        held = self._recent.get(handle)
        return None if held is None else (self._recent, handle, held)

    def _cached(self, key: str, fields: tuple[str, ...], max_age: float | None) -> PhoneFacts | _Partial | None:
        stamp = self._last_fill
        try:
            entry = self.cache.get_lookup(key)
        except StoreUnavailable as exc:
            log.warning("lookup cache unavailable (%s)", exc)
            return None
        if entry is None:
            return None
        stale = self._stale(entry, fields, self.clock(), max_age)
        if not stale:
            self._remember(key, max_age, entry, fields, stamp)
            return entry.facts
        return _Partial(entry, stale)

    def _remember(
        self, key: str, max_age: float | None, entry: CachedLookup, fields: tuple[str, ...], stamp: int
    ) -> None:
        """Keep fresh facts in this process until the first of their fields ages out.

        It spares the hot path the store (a lock in memory, a round trip to Redis). Facts this
        process fetches again (say an MFA re-check after 24 h) replace what it holds at once; facts
        another process refreshed in a shared store are seen when the ones held here age out, as
        with any cache. ``stamp`` is the fill stamp from before the store was read: if a fill came
        since, what was read may be older than the store, and it is not kept. Bounded: the oldest
        memo goes first.
        """
        if entry.negative:
            until = entry.fetched_at + self.config.negative_ttl_seconds
        else:
            until = min((self._fresh_until(entry, f, max_age) for f in fields), default=0.0)
        handle = (key, max_age)
        self._max_ages.add(max_age)
        self._recent.remember(handle, (until, entry.facts))
        if self._last_fill != stamp:  # a fill landed while this was read: drop it rather than shadow the fill
            self._recent.pop(handle, None)

    def _fill(
        self,
        phone: Phone,
        fields: tuple[str, ...],
        partial: _Partial | None,
        wanted: tuple[str, ...],
        *,
        key: str | None = None,
        max_age: float | None = None,
    ) -> PhoneFacts:
        assert phone.e164 is not None
        payload = self._fetch(phone.e164, wanted, phone.region)
        now = self.clock()
        negative = payload.get("valid") is False
        if partial is not None and not negative:
            merged = dict(partial.entry.payload)
            merged.update({k: v for k, v in payload.items() if k not in _PACKAGES or k in wanted})
            times = {**partial.entry.field_times, **{f: now for f in wanted}}
        else:
            merged, times = dict(payload), {f: now for f in fields}
        facts = facts_from_payload(phone.e164, phone.region, merged, min(times.values(), default=now), fields)
        if key is not None:
            # Stored as the cache will serve it, so a hit costs no copy on the hot path.
            entry = CachedLookup(
                facts=replace(facts, source="cache"),
                payload=merged,
                field_times=times,
                fetched_at=now,
                negative=negative,
            )
            ttl = (
                self.config.negative_ttl_seconds
                if negative
                else max(self._ttl(f) for f in fields)
                if fields
                else self.config.positive_ttl_seconds
            )
            try:
                self.cache.put_lookup(key, entry, ttl_seconds=ttl)
            except StoreUnavailable as exc:
                log.warning("lookup cache write failed (%s); the answer is kept in this process only", exc)
            # Whatever this process held for the number, under any purpose's max age, is older now;
            # what it just fetched is what the next decision should use.
            stamp = self._last_fill = next(self._stamps)
            for held_for in tuple(self._max_ages):
                self._recent.pop((key, held_for), None)
            self._remember(key, max_age, entry, fields, stamp)
        return facts

    def _fetch(self, e164: str, fields: tuple[str, ...], region: str | None) -> dict[str, Any]:
        params: dict[str, object] = {}
        if fields:
            params["Fields"] = ",".join(fields)
        if region:
            params["CountryCode"] = region
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

    def _fetch_once(self, e164: str, params: dict[str, object]) -> dict[str, Any]:
        # The SDK's own request path (auth, edge/region, the configured HttpClient) with two things
        # fetch() cannot give: a per-request timeout and the response headers (Retry-After).
        if self.before_request is not None:
            self.before_request()
        version = self.client.lookups.v2
        uri = f"/PhoneNumbers/{e164}"
        try:
            response = version.request("GET", uri, params=params, timeout=self.config.timeout_seconds)
        except requests.exceptions.RequestException as exc:
            metrics.lookup_request("error")
            raise TransientError(f"network:{type(exc).__name__}") from exc
        status = response.status_code
        metrics.lookup_request("invalid" if status == 404 else "answered" if 200 <= status < 300 else "error")
        if 200 <= status < 300:
            try:
                data = json.loads(response.text)
            except ValueError as exc:
                raise TransientError("bad_json", status=status) from exc
            if not isinstance(data, dict):
                raise TransientError("bad_json", status=status)
            return data
        error: TwilioException = version.exception("GET", uri, response, "Unable to fetch record")
        if status == 404:  # Lookup v1 style "no such number": cache it as invalid
            return {"phone_number": e164, "valid": False, "validation_errors": ["NOT_FOUND"]}
        if status == 429 or status >= 500:
            headers = response.headers or {}
            retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
            raise TransientError(f"http_{status}", status=status, retry_after_seconds=retry_after) from error
        code = getattr(error, "code", None)
        raise LookupUnavailable(
            f"Lookup refused the request: HTTP {status}, code {code}", reason=f"http_{status}", status=status
        ) from error


# A partial refresh merges only the packages it asked for (the others come back null).
_PACKAGES = frozenset(LOOKUP_PACKAGES)


@dataclass(frozen=True)
class _Partial:
    """A cached entry with some fields past their age: only those are fetched again."""

    entry: CachedLookup
    stale: tuple[str, ...]
