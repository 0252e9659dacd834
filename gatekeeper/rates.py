"""Budgets on the live path: a token bucket per Twilio API and account, and Lookup's circuit breaker.

**Budgets** (``[rates]``): every Lookup request and every send takes a permit from the bucket of its
API (``lookups``, ``messages``, ``calls``, ``verify``) and account, a GCRA bucket in the rate-limit
store, so every process sharing the store shares the rate. A caller waits for its permit at most
``[rates] max_wait_ms``; past that nothing is spent (:meth:`~gatekeeper.stores.base.Budget.take`
takes no permit it would not use) and :class:`~gatekeeper.errors.RateLimited` is raised. A 429 from
Twilio with ``Retry-After`` pauses the whole bucket for every process. A rate of 0 (the default)
means no limit and costs no store call; a pause then holds in this process only.

**Paced** APIs (``Budgets(..., paced={"lookups": rate})``, batch enrichment's): the caller takes each
permit itself, beforehand, with :meth:`Budgets.pace_steps`, from the same bucket, at its own rate and
with no burst (and moves the next ones with :meth:`Budgets.push_steps` when its request went late);
``take_steps`` then takes none (only pauses hold it up), and a 429's pause still reaches every process.
Live traffic and a batch on one account thus draw on one budget.

**The breaker**: Lookups that fail ``[lookup] breaker_failures`` times in a row (after their retries)
open it for ``breaker_interval_seconds``: a pause of the breaker's bucket in the store, so every
process stops calling Lookup at once. While it is open a new number costs no Lookup attempt, and
the decision follows ``on_lookup_error`` (reason ``lookup:breaker_open``); when the interval is over
one caller across the processes probes (a bucket of one permit per interval): its success closes
the breaker, its failure opens it again.

Each step is written once as store calls (``stores.base.Steps``): the blocking gate runs them with
``stores.base.run``, the async gate awaits them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from gatekeeper.errors import RateLimited
from gatekeeper.settings import RateSettings
from gatekeeper.stores.base import Budget, Call, Steps, Stores

log = logging.getLogger("gatekeeper.lookup")

Api = Literal["lookups", "messages", "calls", "verify"]
#: What the breaker found when a Lookup asked to go: closed, open (no Lookup), or this caller's probe.
Admission = Literal["closed", "open", "probe"]


_FAR = 3600.0  # seconds: "however far off" for a store's take (a number every store can read)


def _bucket(kind: str, api: str, account: str | None) -> str:
    return f"{kind}:{api}:{account or '-'}"


class Budgets:
    """The buckets of ``[rates]`` (see the module docstring)."""

    def __init__(
        self,
        stores: Stores,
        settings: RateSettings,
        *,
        clock: Callable[[], float] = time.time,
        paced: Mapping[str, float] | None = None,
    ) -> None:
        self._stores = stores
        self._settings = settings
        self._clock = clock
        self._pauses: dict[str, float] = {}  # this process's pauses, for buckets the store keeps none of
        self._paced = dict(paced or {})  # API -> rate, for APIs whose caller takes each permit with pace_steps

    @property
    def max_wait(self) -> float:
        """The longest a caller waits for a permit, in seconds."""
        return self._settings.max_wait_ms / 1000

    def rate(self, api: Api) -> float:
        return float(getattr(self._settings, f"{api}_per_second"))

    def free(self, api: str, account: str | None) -> bool:
        """Whether a permit costs nothing to take: the API has no rate and this process saw no pause of it."""
        if getattr(self._settings, f"{api}_per_second", 0.0) > 0:
            return False
        # on every send: no string built, no clock read, while this process has seen no pause at all
        return not self._pauses or self._pauses.get(_bucket("rate", api, account), 0.0) <= self._clock()

    def take_steps(self, api: Api, account: str | None) -> Steps[float]:
        """The seconds to wait before this caller's permit; raises RateLimited past ``[rates] max_wait_ms``."""
        rate, bucket = self.rate(api), _bucket("rate", api, account)
        now, max_wait = self._clock(), self._settings.max_wait_ms / 1000
        wait = max(0.0, self._pauses.get(bucket, 0.0) - now)
        if rate > 0 and wait <= max_wait and api not in self._paced:
            burst = max(1, int(rate * self._settings.burst_seconds))
            limits = {"rate_per_second": rate, "burst": burst, "now": now}
            if isinstance(self._stores.rate_limits, Budget):
                taken, due = yield Call("rate_limits", "take", (bucket,), {**limits, "max_wait": max_wait})
                wait = max(wait, due) if taken else max(due, max_wait + 1e-9)
            else:
                wait = max(wait, (yield Call("rate_limits", "reserve", (bucket,), limits)))
        if wait > max_wait:
            raise RateLimited(api, wait)
        return float(wait)

    def pause_steps(self, api: Api, account: str | None, seconds: float) -> Steps[None]:
        """Twilio said to wait ``seconds`` (``Retry-After``): no permit of the bucket before then, in every process
        sharing the store when the bucket has a rate (else in this one)."""
        bucket = _bucket("rate", api, account)
        until = self._clock() + seconds
        self._pauses[bucket] = max(self._pauses.get(bucket, 0.0), until)
        if (self.rate(api) > 0 or api in self._paced) and isinstance(self._stores.rate_limits, Budget):
            yield Call("rate_limits", "pause", (bucket,), {"until": until})

    def pace_steps(self, api: Api, account: str | None, *, lead: float) -> Steps[tuple[bool, float]]:
        """One try at a permit of a paced API: ``(True, wait)`` when one was taken, due in ``wait`` <= ``lead``
        seconds; else ``(False, wait)``, nothing taken, the seconds until one is due. Permits come at the paced
        rate with no burst, each stamped when due rather than when asked for: a caller that comes late moves the
        ones after it instead of using up time that has passed. A store without ``Budget`` reserves (always
        taken, however far off)."""
        bucket, now = _bucket("rate", api, account), self._clock()
        paused = self._pauses.get(bucket, 0.0) - now
        if paused > lead:
            return False, paused
        limits = {"rate_per_second": self._paced[api], "burst": 1, "now": now}
        if isinstance(self._stores.rate_limits, Budget):
            taken, wait = yield Call("rate_limits", "take", (bucket,), {**limits, "max_wait": lead})
            return bool(taken), float(wait)
        return True, float((yield Call("rate_limits", "reserve", (bucket,), limits)))

    def push_steps(self, api: Api, account: str | None, seconds: float) -> Steps[None]:
        """Move a paced API's next permits ``seconds`` later (a permit of that length, however far off): its last
        request went that late (a slow store answer, a busy host), and the ones after it must not catch up."""
        bucket = _bucket("rate", api, account)
        limits = {"rate_per_second": 1 / seconds, "burst": 1, "now": self._clock()}
        if isinstance(self._stores.rate_limits, Budget):
            yield Call("rate_limits", "take", (bucket,), {**limits, "max_wait": _FAR})
        else:
            yield Call("rate_limits", "reserve", (bucket,), limits)


class Breaker:
    """Lookup's circuit breaker (see the module docstring); its state in the rate-limit store when it keeps
    pauses, else in this process."""

    def __init__(
        self, stores: Stores, *, failures: int, interval: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._stores = stores
        self._failures = failures
        self._interval = interval
        self._clock = clock
        self._failed = 0  # failed Lookups in a row in this process
        self._open_until: dict[str, float] = {}  # this process's view, for a store that keeps no pauses

    def admit_steps(self, account: str | None) -> Steps[Admission]:
        """Whether a Lookup may go: closed; open (it may not); or a probe after the interval (one per interval)."""
        key, now = _bucket("breaker", "lookups", account), self._clock()
        if isinstance(self._stores.rate_limits, Budget):
            until = yield Call("rate_limits", "paused_until", (key,))
        else:
            until = self._open_until.get(key, 0.0)
        if until == 0.0:
            return "closed"
        if until > now:
            return "open"
        probe = {"rate_per_second": 1 / self._interval, "burst": 1, "now": now, "max_wait": 0.0}
        if isinstance(self._stores.rate_limits, Budget):
            taken, _ = yield Call("rate_limits", "take", (f"{key}:probe",), probe)
        else:
            taken = self._open_until.get(f"{key}:probe", 0.0) <= now
            if taken:
                self._open_until[f"{key}:probe"] = now + self._interval
        return "probe" if taken else "open"

    def result_steps(self, account: str | None, admission: Admission, *, ok: bool) -> Steps[None]:
        """Count a Lookup's result: a success closes an open breaker; enough failures in a row (or a failed probe)
        open it for the interval."""
        key = _bucket("breaker", "lookups", account)
        if ok:
            self._failed = 0
            if admission == "probe":
                log.warning("Lookup breaker closed: a probe succeeded")
                yield from self._set(key, 0.0)
            return
        self._failed += 1
        if admission == "probe" or self._failed >= self._failures:
            why = "its probe failed" if admission == "probe" else f"{self._failed} Lookups failed in a row"
            log.warning("Lookup breaker open for %.0f s: %s (decisions follow on_lookup_error)", self._interval, why)
            yield from self._set(key, self._clock() + self._interval)

    def _set(self, key: str, until: float) -> Steps[None]:
        if isinstance(self._stores.rate_limits, Budget):
            yield Call("rate_limits", "pause", (key,), {"until": until})
        else:
            self._open_until[key] = until


@dataclass
class LookupGuard:
    """What stands before every Lookup of one gate: the budget of the ``lookups`` API, the breaker, and the
    per-process cap on Lookups in flight (``[lookup] max_concurrent``; the async gate keeps its own semaphore)."""

    stores: Stores
    budgets: Budgets
    breaker: Breaker
    max_concurrent: int
    slots: threading.BoundedSemaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = threading.BoundedSemaphore(self.max_concurrent)
