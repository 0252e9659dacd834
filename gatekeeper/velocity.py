"""The guard's velocity rules, as data: which windows an attempt counts in, under which keys, and how a refusal
names them. Pure: the counting is the stores' (``stores.base.Windows``), the checking ``guard.py``'s.

A rule counts attempts of one purpose (or every purpose) per *subject* over a sliding window: the destination
``number``, its ``prefix`` (the number without its last digits: a block of numbers an SMS-pumping attack walks
through), its ``country``, or a caller-supplied ``client`` key (``"ip:203.0.113.9"``, ``"user:42"``). A rule with
``limit = 1`` is a cooldown: at most one attempt per window. A refusal names the rule and its window, as
``velocity:<scope>:<subject>:<window>`` (``velocity:prefix:+4479111:10m``); a number is never named (its rule says
``velocity:number:10m``), a client key is, as the caller gave it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from gatekeeper.errors import InvalidArgument
from gatekeeper.models import PURPOSES, Phone, Purpose

Scope = Literal["number", "prefix", "country", "client"]
SCOPES: tuple[Scope, ...] = ("number", "prefix", "country", "client")
#: Digits a prefix leaves off the end of the national number, unless ``prefix_digits_dropped`` says otherwise for
#: the number's country: 4 leaves +1 415 555 of +1 415 555 0100 (a block of 10,000 numbers).
DEFAULT_DROPPED = 4
_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


@dataclass(frozen=True)
class Rule:
    """At most ``limit`` attempts of ``purpose`` (``"*"``: any) per ``scope`` subject in ``window_seconds``."""

    scope: Scope
    window_seconds: int
    limit: int
    purpose: Purpose | Literal["*"] = "*"

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise InvalidArgument(f"a velocity rule's scope is one of {', '.join(SCOPES)}, not {self.scope!r}")
        if self.purpose != "*" and self.purpose not in PURPOSES:
            raise InvalidArgument(f"a velocity rule's purpose is one of {', '.join(PURPOSES)} or '*'")
        if self.window_seconds <= 0 or self.limit < 1:
            raise InvalidArgument("a velocity rule needs window_seconds > 0 and limit >= 1")

    @property
    def window(self) -> str:
        """The window as a reason code shows it: ``10m``, ``1h``, ``1d``, ``90s``."""
        return duration(self.window_seconds)


@dataclass(frozen=True)
class Count:
    """One window an attempt counts in: the store key, and the reason code if the rule refuses it."""

    rule: Rule
    key: str
    reason: str


def parse_duration(value: int | str) -> int:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"1h"`` or ``"1d"``; an InvalidArgument for anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    text = str(value).strip().lower()
    units = dict(_UNITS)
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    if not number.isdigit() or int(number) <= 0:
        raise InvalidArgument(f"a window is a number of seconds or like '30s', '10m', '1h', '1d': not {value!r}")
    return int(number) * units[unit]


def check_entry(entry: str) -> str:
    """A safe- or deny-list entry as kept: a number or number prefix in E.164 (``+4479111``), or a country (``NG``)."""
    text = entry.strip()
    if (text.startswith("+") and text[1:].isdigit() and 2 <= len(text) <= 16) or (len(text) == 2 and text.isalpha()):
        return text.upper()
    raise InvalidArgument(f"a list entry is a number or prefix in E.164 ('+4479111') or a country ('NG'): {entry!r}")


def listed(phone: Phone, entries: Iterable[str]) -> str | None:
    """The first entry that covers ``phone``: its number, a prefix of it, or its country."""
    for entry in entries:
        if entry.startswith("+"):
            if phone.e164 is not None and phone.e164.startswith(entry):
                return entry
        elif phone.region == entry:
            return entry
    return None


def duration(seconds: int) -> str:
    for unit, size in _UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"  # pragma: no cover - the loop ends at seconds


def prefix(phone: Phone, dropped: Mapping[str, int]) -> str | None:
    """The number without its last digits (``dropped`` per country, else :data:`DEFAULT_DROPPED`), as E.164
    (``+4479111`` of ``+447911123456`` with 5 dropped); None for an address with no number behind it."""
    if phone.e164 is None or phone.region is None or not phone.e164.startswith("+"):
        return None
    cut = dropped.get(phone.region, DEFAULT_DROPPED)
    return phone.e164[:-cut] if 0 < cut < len(phone.e164) - 2 else phone.e164


def counts(
    phone: Phone,
    purpose: Purpose,
    client_key: str | None,
    rules: Iterable[Rule],
    *,
    pseudonym: str | None,
    dropped: Mapping[str, int],
) -> list[Count]:
    """The windows an attempt of ``purpose`` to ``phone`` counts in. ``pseudonym`` keys the number's own windows
    (a keyed hash: the store never holds the number); a rule whose subject is missing (no client key given, an
    address with no country) does not apply."""
    out = []
    for rule in rules:
        if rule.purpose not in ("*", purpose):
            continue
        subject = _subject(rule.scope, phone, client_key, pseudonym, dropped)
        if subject is None:
            continue
        named = "" if rule.scope == "number" else f"{subject}:"
        key = f"velocity:{rule.scope}:{purpose if rule.purpose != '*' else '*'}:{rule.window_seconds}:{subject}"
        out.append(Count(rule, key, f"velocity:{rule.scope}:{named}{rule.window}"))
    return out


def _subject(
    scope: Scope, phone: Phone, client_key: str | None, pseudonym: str | None, dropped: Mapping[str, int]
) -> str | None:
    if scope == "number":
        return pseudonym
    if scope == "prefix":
        return prefix(phone, dropped)
    if scope == "country":
        return phone.region
    return client_key or None


# -- conversion-aware limits (gatekeeper/conversion.py counts; these are its terms and its arithmetic) --------
@dataclass(frozen=True)
class Terms:
    """``[guard.conversion]`` as the guard uses it (seconds, shares)."""

    window_seconds: int = 3600
    settle_seconds: int = 120
    min_started: int = 10
    floor: float = 0.3
    min_factor: float = 0.1


def factor(started: int, approved: int, terms: Terms) -> float | None:
    """The share of its limits a subject keeps: None (all of them) below ``min_started`` settled verifications or
    at an approval rate of ``floor`` or more; else the rate over the floor, at least ``min_factor``."""
    if started < terms.min_started:
        return None
    rate = min(1.0, approved / started)
    return None if rate >= terms.floor else max(terms.min_factor, rate / terms.floor)


def tightened(limit: int, share: float) -> int:
    """A rule's limit at ``share`` of itself: never below 1 (a tightened rule still lets one attempt through)."""
    return max(1, math.floor(limit * share))
