"""``gatekeeper replay``: the audit trail decided again under another policy, to tune before enforcing.

Each audit record keeps what a decision needs to be decided again without the number: its purpose, its time, the
country and line type it was decided on, the masked number (whose visible digits are the number's prefix: the
last four are masked, as a prefix rule drops them) and the number's keyed pseudonym. Replayed oldest first on a
clock set to each record's time, under the new settings:

- the policy's countries and line types (``[policy]``, per purpose);
- the guard's velocity rules and lists (``[guard]``), counted in windows of their own, in memory;
- quiet hours (``[quiet]``), from the prefix's zones.

What cannot be decided again is kept as it was: refusals for consent, suppression, an invalid number or a store
that failed, and the client rules (a record holds no client key). Sends are never made; the stores are only
read.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gatekeeper import phone as phones
from gatekeeper import policy as policies
from gatekeeper.guard import Guard
from gatekeeper.models import PURPOSES, Phone
from gatekeeper.settings import Settings
from gatekeeper.stores.base import Stores, run
from gatekeeper.stores.memory import MemoryStore

Fate = Literal["allowed", "blocked", "deferred"]
#: Old refusals replay cannot decide again: they come from state the audit does not hold.
_KEPT = ("opted_out", "suppressed", "failures:", "consent:", "store:", "number:", "lookup:invalid", "erased")


@dataclass
class Report:
    """What replaying changed: decisions by (before, after), and the changed ones by rule and by country."""

    replayed: int = 0
    kept: int = 0  # decided again as before: the state behind them is not in the audit
    moves: Counter[tuple[Fate, Fate]] = field(default_factory=Counter)
    by_rule: Counter[tuple[str, str]] = field(default_factory=Counter)  # (change, rule) for changed decisions
    by_country: Counter[tuple[str, str]] = field(default_factory=Counter)

    def lines(self) -> list[str]:
        changed = {k: v for k, v in self.moves.items() if k[0] != k[1]}
        out = [
            f"replayed {self.replayed} decisions ({self.kept} kept as they were: consent, suppression or invalid)",
            *(f"  {before} -> {after}: {n}" for (before, after), n in sorted(changed.items())),
            f"  unchanged: {sum(v for k, v in self.moves.items() if k[0] == k[1])}",
        ]
        if self.by_rule:
            out.append("changed, by rule:")
            out += [f"  {change:22s} {rule}: {n}" for (change, rule), n in self.by_rule.most_common()]
        if self.by_country:
            out.append("changed, by country:")
            out += [f"  {change:22s} {country}: {n}" for (change, country), n in self.by_country.most_common()]
        return out


def replay(records: Iterable[Mapping[str, Any]], settings: Settings, *, since: float | None = None) -> Report:
    """Decide ``records`` (audit records, any order) again under ``settings``; see the module docstring."""
    now = [0.0]
    hashed = [""]
    clock = lambda: now[0]  # noqa: E731 - the replay's clock: each record's time
    windows = Stores.using(MemoryStore(clock=clock, max_entries=1_000_000))  # the replay's own, never the store's
    guard = Guard(windows, settings.guard, pseudonym=lambda _: hashed[0], clock=clock)
    hours, quiet = settings.quiet.hours(), settings.quiet.mode
    rules = settings.policies()
    report = Report()
    for record in sorted(records, key=lambda r: float(r.get("at", 0.0))):
        at = float(record.get("at", 0.0))
        purpose = record.get("purpose")
        if (since is not None and at < since) or purpose not in PURPOSES:
            continue
        now[0], hashed[0] = at, str(record.get("to_hash") or "")
        before: Fate = "blocked" if record.get("action") == "refuse" and record.get("enforced", True) else "allowed"
        reasons = [str(r) for r in record.get("reasons") or []]
        report.replayed += 1
        facts = record.get("facts") or {}
        phone = _phone(str(record.get("to") or ""), facts.get("country"))
        if phone is None or (before == "blocked" and any(r.startswith(_KEPT) for r in reasons)):
            report.kept += 1
            report.moves[(before, before)] += 1
            continue
        policy = rules[purpose]
        verdict = policies.screen_country(facts.get("country"), policy) if facts.get("source") != "local" else None
        line_type = facts.get("line_type")
        if verdict is None and line_type is not None and line_type in policy.deny_line_types:
            verdict = policies.refuse("line_type", f"line_type:denied:{line_type}")
        tripped = run(windows, guard.check_steps(phone, purpose, None)) if guard.applies(purpose) else None
        if verdict is None and tripped is not None:
            verdict = tripped.verdict
        after: Fate = "blocked" if verdict is not None and policy.mode == "enforce" else "allowed"
        rule = verdict.reasons[0] if verdict is not None else ""
        if after == "allowed" and quiet not in ("off", "observe") and phone.e164 is not None:
            hour = hours.check(phone.e164, at, purpose)
            if not hour.allowed:
                after, rule = ("deferred" if quiet == "defer" else "blocked"), hour.reason or "quiet_hours"
        report.moves[(before, after)] += 1
        if before != after:
            change = f"{before} -> {after}"
            report.by_rule[(change, rule or (reasons[0] if reasons else "-"))] += 1
            report.by_country[(change, str(facts.get("country") or "?"))] += 1
    return report


def _phone(masked: str, country: str | None) -> Phone | None:
    """The number as far as its record shows it: the masked digits zero-filled (the prefix is exact), or None
    for an input that was no number."""
    if not masked.startswith("+") or not masked.rstrip("*")[1:].isdigit():
        return None
    phone = phones.normalize(masked.replace("*", "0"))
    if phone.e164 is None:
        return None
    return dataclasses.replace(phone, region=country or phone.region)
