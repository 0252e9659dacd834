"""The gate for asyncio applications: :class:`AsyncGatekeeper`, the same pipeline with every wait awaited.

::

    from gatekeeper.aio import AsyncGatekeeper

    gate = AsyncGatekeeper.from_settings(Settings.load("config/gatekeeper.toml"))
    outcome = await gate.notify("+14155550100", "Your package arrives today", from_="+15005550006")
    await gate.close()
"""

from gatekeeper.aio.gate import AsyncGatekeeper
from gatekeeper.aio.lookup import AsyncLookupService
from gatekeeper.aio.stores import AsyncStores

__all__ = ["AsyncGatekeeper", "AsyncLookupService", "AsyncStores"]
