"""The guard: velocity rules counted in the stores' sliding windows, checked after screening and before a Lookup
is paid for (``[guard]``; the rules as data are ``velocity.py``'s).

Every attempt counts in every window its rules name (refused attempts too: an attack keeps its own limit
reached). Over a limit, in ``enforce`` mode the attempt is refused with the first rule's reason
(``velocity:prefix:+4479111:10m``) and the time a retry would fit; in ``observe`` mode it goes, and its decision
carries the reason with ``:observe`` appended, for the audit and for tuning. A store without windows
(``stores.base.Windows``) counts nothing: the guard says so once and lets attempts through.

Each check is one store call per rule (``Windows.hit``; one step for them all with ``WindowBatch``), and for an
MFA attempt that a prefix or country rule counts, one more before them: the conversion tallies its limits may be
tightened by (``conversion.py``). The shipped rules are on MFA only, so a notification costs no call here.
"""

from __future__ import annotations

import copy
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from gatekeeper import policy as policies
from gatekeeper import velocity
from gatekeeper.conversion import SCOPES as TIGHTENED_SCOPES
from gatekeeper.conversion import Conversion, Tightened
from gatekeeper.models import PURPOSES, Phone, Purpose
from gatekeeper.policy import Verdict
from gatekeeper.settings_guard import GuardSettings
from gatekeeper.stores.base import Call, Steps, Stores, Windows
from gatekeeper.stores.guard_verbs import WindowBatch, WindowTally

log = logging.getLogger("gatekeeper.guard")


@dataclass(frozen=True)
class Tripped:
    """What the guard found: a refusal (enforce) or the reasons an observed attempt would have been refused."""

    verdict: Verdict | None
    observed: tuple[str, ...] = ()


CLEAR = Tripped(None)


class Guard:
    """Counts attempts against ``[guard]``'s rules (see the module docstring)."""

    def __init__(
        self,
        stores: Stores,
        settings: GuardSettings,
        *,
        pseudonym: Callable[[str], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stores = stores
        self._mode = settings.mode
        self._rules = tuple(r.rule() for r in settings.rules) if settings.mode != "off" else ()
        self._dropped = dict(settings.prefix_digits_dropped)
        self._deny, self._safe = tuple(settings.deny), tuple(settings.safe)
        self._applies = {p: bool(self._deny) or any(r.purpose in ("*", p) for r in self._rules) for p in PURPOSES}
        self._pseudonym = pseudonym
        self._clock = clock
        self._warned = False
        terms = settings.conversion.terms() if self._rules else None
        self.conversion = Conversion(terms, dropped=self._dropped, clock=clock)

    def off(self) -> Guard:
        """This guard counting nothing (a gate that decides without attempting: batch enrichment); its deny list,
        which counts nothing, still refuses."""
        twin = copy.copy(self)
        twin._rules = ()
        twin._applies = {p: bool(self._deny) for p in PURPOSES}
        return twin

    def applies(self, purpose: Purpose) -> bool:
        """Whether a list or a rule of ``purpose`` applies (none: the guard is not asked, no store call)."""
        return self._applies[purpose]  # on every decision: a lookup

    def describe_steps(self, phone: Phone, purpose: Purpose, client_key: str | None) -> Steps[list[str]]:
        """What the guard would do with an attempt now, in words, counting nothing (``gatekeeper check``): each rule
        it counts in, with the attempts already in its window where the store can say (``WindowTally``), and
        whether the next one would trip it."""
        denied, safe = velocity.listed(phone, self._deny), velocity.listed(phone, self._safe)
        if denied is not None:
            return [f"guard:deny:{denied}: refused in every mode"]
        if safe is not None:
            return [f"safe list ({safe}): no rule counts it"]
        pseudonym = self._pseudonym(phone.e164) if phone.e164 else "-"
        counts = velocity.counts(phone, purpose, client_key, self._rules, pseudonym=pseudonym, dropped=self._dropped)
        tallies = isinstance(self._stores.windows, WindowTally)
        tight: dict[str, Tightened] = {}
        if tallies and self._tightens(purpose, counts):
            tight = yield from self.conversion.tighten_steps(phone)
        now = self._clock()
        held: list[int] = []
        if tallies and counts:
            held = yield Call("windows", "tally", ([(c.key, now - c.rule.window_seconds, now) for c in counts],))
        mode = "refuses" if self._mode == "enforce" else "is named (observe)"
        said = []
        for i, (c, limit) in enumerate(zip(counts, _limits(counts, tight), strict=True)):
            why = tight.get(c.rule.scope)
            line = f"{c.reason}: past {limit} per {c.rule.window} it {mode}"
            if why is not None:
                line += f" (tightened from {c.rule.limit}: {why.reason})"
            if held:
                trips = held[i] + 1 > limit
                line += f"; {held[i]} in the window now, the next attempt {'trips it' if trips else 'goes'}"
            said.append(line)
        terms = self.conversion.terms
        if terms is not None and purpose == "mfa" and any(c.rule.scope in TIGHTENED_SCOPES for c in counts):
            said.append(
                f"conversion: its prefix and country rules tighten while under {terms.floor:.0%} of "
                f"{terms.min_started}+ verifications started in {velocity.duration(terms.window_seconds)} are approved"
            )
        return said

    def check_steps(self, phone: Phone, purpose: Purpose, client_key: str | None) -> Steps[Tripped]:
        denied = velocity.listed(phone, self._deny)
        if denied is not None:  # the deny list is not a rule: observe mode does not let it through
            return Tripped(policies.refuse("risk", f"guard:deny:{denied}"))
        if not any(rule.purpose in ("*", purpose) for rule in self._rules) or velocity.listed(phone, self._safe):
            return CLEAR
        if not isinstance(self._stores.windows, Windows):
            if not self._warned:
                self._warned = True
                log.warning("[guard] has rules but the stores keep no windows: no attempt is counted")
            return CLEAR
        pseudonym = self._pseudonym(phone.e164) if phone.e164 else None
        counts = velocity.counts(phone, purpose, client_key, self._rules, pseudonym=pseudonym, dropped=self._dropped)
        tight: dict[str, Tightened] = {}
        if self._tightens(purpose, counts):
            tight = yield from self.conversion.tighten_steps(phone)
        limits = _limits(counts, tight)
        at, event = self._clock(), secrets.token_hex(8)
        if isinstance(self._stores.windows, WindowBatch):  # every rule in one step (one Redis round trip)
            checks = [(c.key, c.rule.window_seconds, limit) for c, limit in zip(counts, limits, strict=True)]
            answers = yield Call("windows", "hits", (checks, event), {"at": at})
        else:
            answers = []
            for count, limit in zip(counts, limits, strict=True):
                window = {"at": at, "window_seconds": count.rule.window_seconds, "limit": limit}
                answers.append((yield Call("windows", "hit", (count.key, event), window)))
        over = [(count, free_at) for count, (_, free_at) in zip(counts, answers, strict=True) if free_at]
        if not over:
            return CLEAR
        why = [tight[s].reason for s in dict.fromkeys(c.rule.scope for c, _ in over) if s in tight]
        reasons = (*(count.reason for count, _ in over), *why)  # a tightened rule says why it is tight
        if self._mode == "observe":
            return Tripped(None, tuple(f"{reason}:observe" for reason in reasons))
        retry_at = max(free_at for _, free_at in over)
        return Tripped(policies.refuse("velocity", *reasons, f"retry_after:{max(0.0, retry_at - at):.0f}s"))

    def _tightens(self, purpose: Purpose, counts: list[velocity.Count]) -> bool:
        """Whether an attempt reads the conversion tallies: MFA, a prefix or country rule, a store that tallies."""
        return (
            purpose == "mfa"
            and self.conversion.enabled
            and any(c.rule.scope in TIGHTENED_SCOPES for c in counts)
            and isinstance(self._stores.windows, WindowTally)
        )


def _limits(counts: list[velocity.Count], tight: dict[str, Tightened]) -> list[int]:
    """Each rule's limit for this attempt: its own, or tightened where its scope's conversion has collapsed."""
    return [
        velocity.tightened(c.rule.limit, tight[c.rule.scope].factor) if c.rule.scope in tight else c.rule.limit
        for c in counts
    ]
