"""Conversion-aware limits for MFA (``[guard.conversion]``): the guard's prefix and country rules tighten where
codes are sent but not entered.

SMS pumping buys OTPs it never completes, so the signature of an attack is a prefix (or a country) whose
verifications climb while their approval rate collapses. Each Verify code the gate sends counts as *started* for
its number's prefix and country, and each approval (a ``VerificationCheck`` answered ``approved``: through the
drop-in, ``gate.verify_check(...)``, or Verify's events webhook) as *approved*, under the verification's SID,
so one verification counts once whichever way it is heard of. When a subject has at least ``min_started``
verifications started over ``window`` (those younger than ``settle`` left out: their codes may still be on
their way to being entered) and approves fewer than ``floor`` of them, its rules' limits shrink to
``rate / floor`` of themselves, never below ``min_factor`` of them nor below 1. The refusal then names why
(``conversion:prefix:+4479111:0/24``), and the tightening is logged once per subject per ``settle``.

Counting is advisory: a store that cannot record a start or an approval is logged, never raised (the code went
out, or was approved, either way). Reading the tallies is one store step more for an MFA attempt that a prefix or
country rule counts (one Redis round trip).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from gatekeeper import velocity
from gatekeeper.errors import StoreUnavailable
from gatekeeper.models import API_OF, Action, Phone
from gatekeeper.stores.base import Call, Steps
from gatekeeper.velocity import Terms, factor

log = logging.getLogger("gatekeeper.guard")

Kind = Literal["started", "approved"]
SCOPES = ("prefix", "country")
#: The actions that send a Verify code to a number: Verify's, less email (an address has no prefix to pump).
SENT_CODES = frozenset(a for a, api in API_OF.items() if api == "verify") - {Action.EMAIL}
_UNLIMITED = 2**31  # a conversion window counts; it never refuses


@dataclass(frozen=True)
class Tightened:
    """A subject whose rules are tightened: its scope, the share of their limits left, and why."""

    scope: str
    subject: str
    factor: float
    reason: str


class Conversion:
    """Counts verifications started and approved per prefix and country, and says whose limits to tighten (see the
    module docstring). Off (``enabled = False``), it counts and tightens nothing."""

    def __init__(
        self,
        terms: Terms | None,
        *,
        dropped: Mapping[str, int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.terms = terms
        self.enabled = terms is not None
        self._dropped = dict(dropped)
        self._clock = clock
        self._logged: dict[str, float] = {}  # subject -> when its tightening was last logged (bounded below)

    def subjects(self, phone: Phone) -> list[tuple[str, str]]:
        """The ``(scope, subject)`` pairs a number's verifications count under: its prefix and its country."""
        found = (("prefix", velocity.prefix(phone, self._dropped)), ("country", phone.region))
        return [(scope, subject) for scope, subject in found if subject]

    @staticmethod
    def key(kind: Kind, scope: str, subject: str) -> str:
        return f"conversion:{kind}:{scope}:{subject}"

    def record_steps(self, phone: Phone, verification_sid: str, kind: Kind) -> Steps[None]:
        """Count one verification (by its SID: heard of twice, it counts once) as ``kind`` for its subjects."""
        if self.terms is None:
            return
        at, window = self._clock(), self.terms.window_seconds
        for scope, subject in self.subjects(phone):
            limits = {"at": at, "window_seconds": window, "limit": _UNLIMITED}
            yield Call("windows", "hit", (self.key(kind, scope, subject), verification_sid), limits)

    def tighten_steps(self, phone: Phone) -> Steps[dict[str, Tightened]]:
        """The subjects of ``phone`` whose rules are tightened now, by scope; one store step (``WindowTally``)."""
        terms = self.terms
        subjects = self.subjects(phone)
        if terms is None or not subjects:
            return {}
        at = self._clock()
        since = at - terms.window_seconds
        ranges = []
        for scope, subject in subjects:
            ranges.append((self.key("started", scope, subject), since, at - terms.settle_seconds))
            ranges.append((self.key("approved", scope, subject), since, at))
        counts: list[int] = yield Call("windows", "tally", (ranges,))
        found = {}
        for (scope, subject), started, approved in zip(subjects, counts[::2], counts[1::2], strict=True):
            share = factor(started, approved, terms)
            if share is not None:
                reason = f"conversion:{scope}:{subject}:{approved}/{started}"
                found[scope] = Tightened(scope, subject, share, reason)
                self._log(found[scope], at)
        return found

    def _log(self, tight: Tightened, at: float) -> None:
        assert self.terms is not None
        last = self._logged.get(tight.subject)
        if last is not None and at - last < self.terms.settle_seconds:
            return
        if len(self._logged) > 10_000:  # an attack walking many prefixes: forget the old entries, not the memory
            self._logged.clear()
        self._logged[tight.subject] = at
        log.warning(
            "guard: %s %s approved %s verifications started in the last %s (floor %.0f%%): its rules keep %.0f%% "
            "of their limits",
            tight.scope,
            tight.subject,
            tight.reason.rsplit(":", 1)[1],
            velocity.duration(self.terms.window_seconds),
            self.terms.floor * 100,
            tight.factor * 100,
        )

    @staticmethod
    @contextmanager
    def quietly(what: str) -> Iterator[None]:
        """Counting is advisory: a store that cannot count is logged, never raised to the caller."""
        try:
            yield
        except StoreUnavailable as exc:
            log.warning("guard: could not count a verification %s: %s", what, exc.reason)
