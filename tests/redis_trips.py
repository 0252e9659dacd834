"""Counting what a Redis client sends: commands and round trips, per thread, as redis-py's blocking client sends
them (shared by the tests that hold the counts and by ``bench/redis_trips.py`` that prints them).

A round trip is one write of packed commands (one command, or a whole pipeline) whose answers are then read; a
command is one packed command. Counting per thread tells the caller's own trips from those of the audit's
write-behind thread. Connection handshakes count too: warm a store up before counting.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from redis import connection as redis_connection


@dataclass
class Trips:
    """What each thread sent while counting."""

    commands: Counter[int] = field(default_factory=Counter)
    round_trips: Counter[int] = field(default_factory=Counter)

    def of(self, thread: int | None = None) -> tuple[int, int]:
        """(commands, round trips) of one thread (the counting thread by default)."""
        ident = threading.get_ident() if thread is None else thread
        return self.commands[ident], self.round_trips[ident]

    def total(self) -> tuple[int, int]:
        return sum(self.commands.values()), sum(self.round_trips.values())


@contextmanager
def counting() -> Iterator[Trips]:
    """Count every command and round trip of redis-py's blocking connections while inside."""
    trips = Trips()
    lock = threading.Lock()
    saved: list[tuple[type, str, Callable[..., Any]]] = []

    def wrap(cls: type, name: str, tally: Counter[int], weight: Callable[..., int]) -> None:
        original = getattr(cls, name)

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                tally[threading.get_ident()] += weight(*args)
            return original(self, *args, **kwargs)

        saved.append((cls, name, original))
        setattr(cls, name, counted)

    wrap(redis_connection.AbstractConnection, "send_packed_command", trips.round_trips, lambda *a: 1)
    for serializer in (redis_connection.PythonRespSerializer, redis_connection.HiredisRespSerializer):
        wrap(serializer, "pack", trips.commands, lambda *a: 1)
    try:
        yield trips
    finally:
        for cls, name, original in saved:
            setattr(cls, name, original)
