"""A bounded in-process memo, for the results the hot path keeps in front of the stores."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import suppress
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(OrderedDict[K, V]):
    """A map of at most ``max_entries``: past that, the oldest entry goes first.

    Eviction is O(1) (``popitem``); popping the first key of a plain ``dict`` instead rescans the
    slots its earlier deletions left, which costs microseconds per insert once the memo is full.
    Safe to share between threads under the GIL: each step is one C call, and two threads evicting
    at once only evict one entry more.
    """

    def __init__(self, max_entries: int) -> None:
        super().__init__()
        self.max_entries = max_entries

    def remember(self, key: K, value: V) -> None:
        self[key] = value
        if len(self) > self.max_entries:
            with suppress(KeyError):  # another thread emptied it first
                self.popitem(last=False)
