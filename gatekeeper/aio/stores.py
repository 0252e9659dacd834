"""The gate's stores, as the async gate calls them: every verb awaited, whatever the backend.

* a backend whose verbs are coroutines (:class:`~gatekeeper.stores.redis_async.AsyncRedisStore`)
  is awaited;
* a backend that declares it never blocks (``blocking = False``: the memory store) is called in
  place: its verbs take a lock for microseconds, which an event loop can afford;
* any other backend (a custom store, a store on disk) may wait, so it runs in a worker thread and
  the event loop never waits on it.

A store's :class:`~gatekeeper.errors.StoreUnavailable` is raised from the await as from the call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, TypeVar

from gatekeeper.errors import StoreUnavailable
from gatekeeper.stores.base import Call, Risk, Steps, Stores, blocking, unchecked

log = logging.getLogger("gatekeeper")

T = TypeVar("T")


class AsyncStores:
    """Awaits any store verb of ``stores`` (read on each use, as ``Stores`` asks)."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self._kinds: dict[tuple[type, str], str] = {}

    async def call(self, call: Call) -> Any:
        """One store verb, awaited in the way its backend needs."""
        backend = getattr(self.stores, call.role)
        method = getattr(backend, call.verb)
        kind = self._kinds.get((type(backend), call.verb))
        if kind is None:
            kind = "await" if inspect.iscoroutinefunction(method) else "thread" if blocking(backend) else "inline"
            self._kinds[(type(backend), call.verb)] = kind
        if kind == "await":
            return await method(*call.args, **call.kwargs)
        if kind == "inline":
            return method(*call.args, **call.kwargs)
        return await asyncio.to_thread(method, *call.args, **call.kwargs)

    async def run(self, steps: Steps[T]) -> T:
        """Carry out ``steps`` (see ``gatekeeper.suppress.Steps``), a store's error thrown back into them."""
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
                answer = await self.call(call)
            except StoreUnavailable as exc:
                failure = exc

    async def durability(self) -> list[Risk]:
        """How the stores may lose what they acknowledged, as ``Stores.durability`` says, awaited."""
        risks: list[Risk] = []
        for probe in self.stores.durability_probes():
            try:
                risks.extend(await self.call(probe))
            except StoreUnavailable as exc:
                risks.append(unchecked(exc))
        return list(dict.fromkeys(risks))

    async def health(self) -> dict[str, bool]:
        """Whether each store the webhooks write can be read, as ``Stores.health`` says, awaited."""
        out: dict[str, bool] = {}
        for probe in self.stores.health_probes():
            try:
                await self.call(probe)
                healthy = True
            except StoreUnavailable as exc:
                log.error("%s store unavailable: %s", probe.role, exc)
                healthy = False
            out.update(dict.fromkeys(self.stores.roles_of(probe), healthy))
        return out
