"""Step 3 for the async gate: Lookup v2 awaited, with the blocking service's rules, cache and memo.

Everything but the I/O is the :class:`~gatekeeper.lookup.LookupService`'s own (the cache key, the
memo and when it is fresh, what a store read gives, the merged answer, the fill), so both gates
answer alike and share what one process holds. Concurrent misses for one key make one request:
coroutines of this process queue on an ``asyncio`` lock per key (1,000 tasks asking for one new
number → 1 Lookup), and across processes the cache's own fill lock serves when the cache is an
async store (Redis).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any

from twilio.base.exceptions import TwilioException

from gatekeeper import metrics
from gatekeeper.aio.stores import AsyncStores
from gatekeeper.errors import LookupUnavailable, RateLimited, StoreUnavailable, TransientError
from gatekeeper.lookup import LookupService, Partial, answer, rate_limited, refused_by_breaker
from gatekeeper.models import Phone, PhoneFacts
from gatekeeper.phone import mask
from gatekeeper.retries import call_with_retries_async, network_error
from gatekeeper.stores.base import Call, blocking

log = logging.getLogger("gatekeeper.lookup")


class AsyncLookupService:
    """Facts for a parsed number, awaited: from the memo, the cache, or one Lookup v2 request."""

    def __init__(
        self,
        rules: LookupService,
        stores: AsyncStores,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rules = rules
        self._stores = stores
        self._sleep = sleep
        self._flights: dict[str, tuple[asyncio.Lock, int]] = {}
        self._slots: asyncio.Semaphore | None = None  # [lookup] max_concurrent, made in the loop on first use

    async def facts(self, phone: Phone, fields: tuple[str, ...], *, max_age_seconds: float | None = None) -> PhoneFacts:
        """Facts for ``phone`` (which must be valid); ``source`` says "cache" or "lookup"."""
        rules = self.rules
        if not rules.config.cache_enabled:
            return await self._fill(phone, fields, None, fields, key=None)
        key = rules.key_for(phone, fields)
        held = rules.memo_hit(key, fields, max_age_seconds)
        if held is not None:
            return held
        async with self._flight(key):
            held = rules.memo_hit(key, fields, max_age_seconds)  # filled while this coroutine queued?
            if held is not None:
                return held
            hit = await self._cached(key, fields, max_age_seconds)
            metrics.cache_read(isinstance(hit, PhoneFacts))
            if isinstance(hit, PhoneFacts):
                return hit
            async with self._store_lock(key, phone):
                hit = await self._cached(key, fields, max_age_seconds)  # filled by another process meanwhile?
                if isinstance(hit, PhoneFacts):
                    return hit
                return await self._fill(phone, fields, hit, hit.stale if hit else fields, key=key)

    @asynccontextmanager
    async def _flight(self, key: str) -> AsyncIterator[None]:
        """One coroutine at a time per key in this process; the lock is dropped when nobody waits on it."""
        lock, users = self._flights.get(key, (asyncio.Lock(), 0))
        self._flights[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._flights[key]
            if users <= 1:
                del self._flights[key]
            else:
                self._flights[key] = (lock, users - 1)

    @asynccontextmanager
    async def _store_lock(self, key: str, phone: Phone) -> AsyncIterator[bool]:
        """The cache's own fill lock, across processes: an async store's awaited, a blocking store's (the SQLite
        file, a custom store) taken and released in a worker thread. In-process coroutines are already one at a
        time, which is all an in-memory cache could add, so one that never blocks is not asked."""
        cache = self._stores.stores.cache
        awaited = inspect.iscoroutinefunction(cache.get_lookup)  # an async store's fill_lock is an async one
        if not awaited and not blocking(cache):
            yield True
            return
        config = self.rules.config
        ttl = config.timeout_seconds * (config.max_retries + 1) + 5
        lock: Any = cache.fill_lock(key, ttl_seconds=ttl, wait_seconds=config.fill_wait_seconds)
        enter, leave = (lock.__aenter__, lock.__aexit__) if awaited else _in_thread(lock)
        try:
            acquired = await enter()
        except StoreUnavailable as exc:
            log.warning("lookup cache unavailable (%s); asking Lookup directly", exc)
            yield False
            return
        if not acquired:
            log.warning("lookup fill lock for %s not acquired in time; fetching anyway", mask(phone.e164))
        try:
            yield acquired
        finally:
            await leave(None, None, None)

    async def _cached(self, key: str, fields: tuple[str, ...], max_age: float | None) -> PhoneFacts | Partial | None:
        stamp = self.rules.stamp
        try:
            entry = await self._stores.call(Call("cache", "get_lookup", (key,)))
        except StoreUnavailable as exc:
            log.warning("lookup cache unavailable (%s)", exc)
            return None
        return self.rules.seen(key, entry, stamp, fields, max_age)

    async def _fill(
        self,
        phone: Phone,
        fields: tuple[str, ...],
        partial: Partial | None,
        wanted: tuple[str, ...],
        *,
        key: str | None,
    ) -> PhoneFacts:
        assert phone.e164 is not None
        payload = await self._fetch(phone.e164, wanted, phone.region)
        facts, entry, ttl = self.rules.merged(phone, fields, partial, wanted, payload)
        if key is not None:
            try:
                await self._stores.call(Call("cache", "put_lookup", (key, entry), {"ttl_seconds": ttl}))
            except StoreUnavailable as exc:
                log.warning("lookup cache write failed (%s); the answer is kept in this process only", exc)
            self.rules.filled(key, entry)
        return facts

    async def _fetch(self, e164: str, fields: tuple[str, ...], region: str | None) -> dict[str, Any]:
        """``LookupService._fetch`` awaited: the same breaker, budget and cap (an asyncio semaphore)."""
        guard = self.rules.guard
        params = self.rules.request_params(fields, region)
        if guard is None:
            return await self._attempts(e164, params)
        account = self.rules.client.account_sid
        if self._slots is None:
            self._slots = asyncio.Semaphore(guard.max_concurrent)
        async with self._slots:
            admission = await self._stores.run(guard.breaker.admit_steps(account))
            if admission == "open":
                raise refused_by_breaker(e164)
            try:
                payload = await self._attempts(e164, params)
            except LookupUnavailable as exc:
                if exc.reason != "rate_limited":
                    await self._stores.run(guard.breaker.result_steps(account, admission, ok=False))
                raise
            await self._stores.run(guard.breaker.result_steps(account, admission, ok=True))
            return payload

    async def _attempts(self, e164: str, params: dict[str, object]) -> dict[str, Any]:
        config = self.rules.config
        try:
            return await call_with_retries_async(
                lambda: self._fetch_once(e164, params),
                retry_if=lambda exc: isinstance(exc, TransientError),
                max_retries=config.max_retries,
                wait=self.rules.backoff,
                sleep=self._sleep,
            )
        except TransientError as exc:
            raise LookupUnavailable(
                f"Lookup for {mask(e164)} failed after {config.max_retries + 1} attempts: {exc.reason}",
                reason=exc.reason,
                status=exc.status,
            ) from exc
        except RateLimited as exc:
            raise rate_limited(e164, exc) from exc

    async def _fetch_once(self, e164: str, params: dict[str, object]) -> dict[str, Any]:
        guard, account = self.rules.guard, self.rules.client.account_sid
        if guard is not None:
            wait = await self._stores.run(guard.budgets.take_steps("lookups", account))
            if wait:
                await self._sleep(wait)
        version = self.rules.client.lookups.v2
        uri = f"/PhoneNumbers/{e164}"
        started = perf_counter()
        try:
            response = await version.request_async("GET", uri, params=params, timeout=self.rules.config.timeout_seconds)
        except Exception as exc:
            if not network_error(exc):
                raise
            metrics.lookup_request("error")
            metrics.lookup_timed(None, perf_counter() - started)
            raise TransientError(f"network:{type(exc).__name__}") from exc
        metrics.lookup_timed(response.status_code, perf_counter() - started)

        def error() -> TwilioException:
            return version.exception("GET", uri, response, "Unable to fetch record")

        try:
            return answer(e164, response, error)
        except TransientError as exc:
            pause = exc.retry_after_seconds
            if guard is not None and exc.status == 429 and pause:
                await self._stores.run(guard.budgets.pause_steps("lookups", account, pause))
                if pause > guard.budgets.max_wait:
                    raise RateLimited("lookups", pause) from exc
            raise


def _in_thread(lock: Any) -> tuple[Callable[[], Awaitable[Any]], Callable[..., Awaitable[Any]]]:
    """A blocking context manager's enter and exit, each awaited in a worker thread."""

    async def enter() -> Any:
        return await asyncio.to_thread(lock.__enter__)

    async def leave(*exc_info: Any) -> Any:
        return await asyncio.to_thread(lock.__exit__, *exc_info)

    return enter, leave
