"""Synthetic traffic for the guard, on fixed seeds (shared by ``tests/test_guard.py``, which holds the figures, and
``bench/guard.py``, which prints them): an SMS-pumping attack and a legitimate trace of the same length, each run
through a gate whose Lookups go to the sandbox, on a fake clock.

- attack: sequential numbers in one prefix (a block of mobiles walked through), 50 OTP requests a second, each
  from a new client key (rotating IPs), none completed;
- legitimate: random mobiles across 10 countries, at the same rate, one client key per user.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers

from gatekeeper import Gatekeeper

COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "MX", "NG", "ID", "PH")
RATE_PER_SECOND = 50
VA = "VA" + "0" * 32


@dataclass(frozen=True)
class Attempt:
    number: str
    client_key: str
    at_offset: float  # seconds from the trace's start


@dataclass(frozen=True)
class Result:
    attempts: int
    blocked: int
    first_blocked: int | None  # the 1-based index of the first refused attempt
    observed: int  # attempts an observing guard let through with a tripped rule named

    @property
    def block_rate(self) -> float:
        return self.blocked / self.attempts


def _mobile(region: str, rng: random.Random) -> str:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    national = str(example.national_number)
    while True:  # the example's first three digits (a mobile range), the rest at random: users, not a block
        tail = "".join(rng.choice("0123456789") for _ in range(len(national) - 3))
        candidate = phonenumbers.parse(f"+{example.country_code}{national[:3]}{tail}")
        if phonenumbers.is_valid_number(candidate):
            return phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.E164)


def attack(length: int, seed: int = 7) -> list[Attempt]:
    """Sequential mobiles of one block (+44 7400 12xxxx), a new client key each, 50 a second."""
    rng = random.Random(seed)
    start = rng.randrange(0, 5_000)
    return [
        Attempt(f"+4474001{start + i:05d}", f"ip:198.51.{rng.randrange(256)}.{rng.randrange(256)}", i / RATE_PER_SECOND)
        for i in range(length)
    ]


def legitimate(length: int, seed: int = 11) -> list[Attempt]:
    """Random mobiles across :data:`COUNTRIES`, one client key per user, 50 a second."""
    rng = random.Random(seed)
    out = []
    for i in range(length):
        number = _mobile(rng.choice(COUNTRIES), rng)
        out.append(Attempt(number, f"user:{number[-6:]}", i / RATE_PER_SECOND))
    return out


def run(gate: Gatekeeper, trace: list[Attempt], set_time: Callable[[float], None]) -> Result:
    """Start a verification for each attempt at its time (none is completed: the shipped rules count attempts,
    not approvals)."""
    blocked, first, observed = 0, None, 0
    for i, attempt in enumerate(trace, start=1):
        set_time(attempt.at_offset)
        outcome = gate.start_verification(attempt.number, verify_service_sid=VA, client_key=attempt.client_key)
        decision = outcome.decision
        if decision.refused and decision.enforced and any(r.startswith("velocity:") for r in decision.reasons):
            blocked += 1
            first = first or i
        elif any(r.startswith("velocity:") and r.endswith(":observe") for r in decision.reasons):
            observed += 1
    return Result(len(trace), blocked, first, observed)
