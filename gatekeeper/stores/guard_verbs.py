"""The guard's optional store verbs: sliding windows (velocity rules, conversion tallies) and a ledger (spend
caps). Part of ``stores.base`` (re-exported there), apart only to keep modules small."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from gatekeeper.errors import InvalidArgument


@runtime_checkable
class Windows(Protocol):
    """Optional, for the guard's velocity rules and cooldowns: sliding windows of events, one atomic verb.

    Every attempt counts, refused or not (so an attack keeps its own limit reached); an event id recorded twice
    counts once (a retried check does not count double)."""

    def hit(self, key: str, event: str, *, at: float, window_seconds: float, limit: int) -> tuple[int, float | None]:
        """Record ``event`` under ``key`` at ``at`` and count the events in the window ending at ``at``
        (``(at - window_seconds, at]``), this one included. With that count above ``limit``, also when a new event
        would next fit (the time the oldest event keeping it out leaves the window); else None. Events older than
        the window are forgotten."""


@runtime_checkable
class WindowBatch(Protocol):
    """Optional, beside :class:`Windows`: several windows' events in one step (one Redis round trip for every
    rule an attempt counts in, instead of one per rule)."""

    def hits(
        self, checks: Sequence[tuple[str, float, int]], event: str, *, at: float
    ) -> list[tuple[int, float | None]]:
        """:meth:`Windows.hit` for each ``(key, window_seconds, limit)`` of ``checks``, with one event at ``at``;
        the answers in order."""


@runtime_checkable
class WindowTally(Protocol):
    """Optional, beside :class:`Windows`: windows' events counted without recording one (the guard reads how many
    verifications a prefix started and how many were approved, ``conversion.py``)."""

    def tally(self, ranges: Sequence[tuple[str, float, float]]) -> list[int]:
        """For each ``(key, since, until)``: how many of the key's events are at times in ``(since, until]``
        (events a :meth:`Windows.hit` has not yet forgotten); the answers in order, in one step."""


def check_window(window_seconds: float, limit: int) -> None:
    """:meth:`Windows.hit`'s arguments, checked alike by every backend. With more than ``limit`` events in the
    window, a new one fits once all but ``limit - 1`` have left: when the ``count - limit``-th oldest (from 0)
    leaves, at its time plus the window."""
    if window_seconds <= 0 or limit < 1:
        raise InvalidArgument("a window needs window_seconds > 0 and limit >= 1")


@runtime_checkable
class Ledger(Protocol):
    """Optional, for spend caps: running totals that grow only while every cap they are held to allows it."""

    def spend(self, caps: Sequence[tuple[str, float]], amount: float, *, ttl_seconds: float) -> str | None:
        """Add ``amount`` to each ``(key, cap)``'s total, all or none: None when every total stays within its cap
        (all added), else the first key it would pass (nothing added). A total is kept ``ttl_seconds`` after each
        amount: pass the time left in its period (and a margin)."""
