"""Synthetic traffic for the guard, on fixed seeds (shared by ``tests/test_guard.py``, which holds the figures, and
``bench/guard.py``, which prints them): an SMS-pumping attack and a legitimate trace of the same length, each run
through a gate whose Lookups go to the sandbox, on a fake clock.

- attack: sequential numbers in one prefix (a block of mobiles walked through), 50 OTP requests a second, each
  from a new client key (rotating IPs), none completed;
- legitimate: random mobiles across 10 countries, at the same rate, one client key per user, 80 % of the codes
  entered (checked through ``gate.verify_check`` when the runner is given the sandbox's codes);
- paced attack: the attack slowed to stay within the prefix rule (one a minute for hours), none completed: what the
  velocity rules alone let through, and what conversion-aware limits cut it to.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

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
    approved: bool = False  # the person enters the code


@dataclass(frozen=True)
class Result:
    attempts: int
    blocked: int
    first_blocked: int | None  # the 1-based index of the first refused attempt
    observed: int  # attempts an observing guard let through with a tripped rule named
    sent: int = 0  # codes that went out (what the attack was paid)

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


def legitimate(length: int, seed: int = 11, *, every_seconds: float = 1 / RATE_PER_SECOND) -> list[Attempt]:
    """Random mobiles across :data:`COUNTRIES`, one client key per user, 50 a second (or one per ``every_seconds``),
    80 % of them entering their code."""
    rng = random.Random(seed)
    out = []
    for i in range(length):
        number = _mobile(rng.choice(COUNTRIES), rng)
        out.append(Attempt(number, f"user:{number[-6:]}", i * every_seconds, approved=rng.random() < 0.8))
    return out


def paced_attack(hours: float, per_minute: float = 1.0, seed: int = 7) -> list[Attempt]:
    """:func:`attack`'s block, walked at ``per_minute`` (one a minute stays within the shipped prefix rule's 10 per
    10 minutes) for ``hours``."""
    length = int(hours * 60 * per_minute)
    return [replace(a, at_offset=i * 60 / per_minute) for i, a in enumerate(attack(length, seed))]


def run(
    gate: Gatekeeper,
    trace: list[Attempt],
    set_time: Callable[[float], None],
    code_for: Callable[[str], str] | None = None,
) -> Result:
    """Start a verification for each attempt at its time; with ``code_for`` (the sandbox's code for a number), enter
    the code of each attempt marked approved that went out."""
    blocked, first, observed, sent = 0, None, 0, 0
    for i, attempt in enumerate(trace, start=1):
        set_time(attempt.at_offset)
        outcome = gate.start_verification(attempt.number, verify_service_sid=VA, client_key=attempt.client_key)
        decision = outcome.decision
        if outcome.sid:
            sent += 1
            if attempt.approved and code_for is not None:
                gate.verify_check(attempt.number, code_for(attempt.number), verify_service_sid=VA)
        if decision.refused and decision.enforced and any(r.startswith("velocity:") for r in decision.reasons):
            blocked += 1
            first = first or i
        elif any(r.startswith("velocity:") and r.endswith(":observe") for r in decision.reasons):
            observed += 1
    return Result(len(trace), blocked, first, observed, sent)
