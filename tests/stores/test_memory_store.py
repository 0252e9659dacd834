"""The memory store passes the shared contract, and stays bounded."""

from __future__ import annotations

import pytest
from stores.contract import E164, T0, OnFakeClock, entry
from support import FakeClock

from gatekeeper.errors import StoreUnavailable
from gatekeeper.stores.base import lookup_key
from gatekeeper.stores.memory import MemoryStore


class TestMemoryContract(OnFakeClock):
    @pytest.fixture
    def store(self, clock: FakeClock) -> MemoryStore:
        return MemoryStore(clock=clock)


def test_lru_evicts_least_recently_used(clock: FakeClock) -> None:
    """Past max_entries the least recently used cache entry goes; the map never grows beyond the cap."""
    store = MemoryStore(max_entries=3, clock=clock)
    keys = [lookup_key(f"+1415555267{i}", "h", "US") for i in range(4)]
    for k in keys[:3]:
        store.put_lookup(k, entry(), ttl_seconds=60)
    assert store.get_lookup(keys[0]) is not None  # touch: keys[1] is now the oldest
    store.put_lookup(keys[3], entry(), ttl_seconds=60)
    assert store.get_lookup(keys[1]) is None
    assert all(store.get_lookup(k) is not None for k in (keys[0], keys[2], keys[3]))
    for i in range(1000):
        store.put_lookup(lookup_key(f"+1{i:010d}", "h", "US"), entry(), ttl_seconds=60)
    assert len(store._lookups) == 3


def test_opt_outs_are_never_evicted_but_capped(clock: FakeClock) -> None:
    """Opt-outs survive any amount of cache churn; past their own cap a new one fails loudly."""
    store = MemoryStore(max_entries=2, max_opt_outs=2, clock=clock)
    store.opt_out(E164, source="t", at=T0)
    store.opt_out("+14155552672", source="t", at=T0)
    for i in range(100):
        store.put_lookup(lookup_key(f"+1{i:010d}", "h", "US"), entry(), ttl_seconds=60)
    assert store.opted_out_scope(E164, ["*"]) == "*"
    with pytest.raises(StoreUnavailable):
        store.opt_out("+14155552673", source="t", at=T0)
