"""The route memo: decisions kept per number and way of asking, while the facts they came from are held.

A repeated number asked the same way (purpose, channel, sender, drop-in or routing API) need not be
parsed, looked up in the memo, evaluated and routed again: the decision stands as long as the very
facts it was routed from are what the Lookup service holds for it, and fresh. Consent is not kept
here: the gate screens it on every send.
"""

from __future__ import annotations

from collections.abc import Hashable
from contextlib import suppress
from typing import NamedTuple

from gatekeeper.lookup import LookupService, Memo
from gatekeeper.models import Decision, Phone, PhoneFacts
from gatekeeper.policy import Policy


class Route(NamedTuple):
    """A decision routed from facts this process holds, as it stands while the number is clear to reach."""

    decision: Decision
    phone: Phone
    policy: Policy
    scopes: tuple[str, ...]
    facts: PhoneFacts  # the very facts it was routed from, held by the Lookup service under lookup_key
    lookup_key: str
    fresh_until: float
    clear_at: Hashable | None = None  # the stores' mark when the number was last found clear


class Routes:
    """Decisions kept per way of asking, for as long as the very facts they were routed from are held.

    What it holds: one :class:`Route` per (number, purpose, how it was asked), at most ``max_entries``
    (oldest out first). What ends one: the facts it came from replaced (a fetch) or no longer held,
    their freshness for the purpose, or the purpose's policy object replaced. It keeps no consent:
    the gate screens every send. What it buys: normalize, Lookup's memo, evaluate and route on a
    repeated number.
    """

    def __init__(self, lookup: LookupService, max_entries: int) -> None:
        self._lookup = lookup
        self._kept: Memo[Hashable, Route] = Memo(max_entries)

    def find(self, key: Hashable, policy: Policy) -> Route | None:
        """The route kept under ``key`` if it still stands for ``policy``."""
        try:
            route = self._kept.get(key)
        except TypeError:  # an argument that cannot key a route (a list for a sender…): decided in full
            return None
        if (
            route is None
            or route.policy is not policy
            or route.fresh_until <= self._lookup.clock()
            or not self._lookup.holds(route.lookup_key, route.facts)
        ):
            return None
        return route

    def keep(self, key: Hashable, decision: Decision, phone: Phone, policy: Policy, scopes: tuple[str, ...]) -> None:
        """Keep a decision made from facts this process holds (a refusal by consent has none: never kept)."""
        held = self._lookup.held(phone, policy.fields, max_age_seconds=policy.max_age_seconds)
        if held is None or held[1] is not decision.facts:
            return  # routed from facts this process does not hold (overtaken by a fill meanwhile)
        lookup_key, facts, fresh_until = held
        with suppress(TypeError):
            self._kept.remember(key, Route(decision, phone, policy, scopes, facts, lookup_key, fresh_until))

    def cleared(self, key: Hashable, route: Route, mark: Hashable | None) -> None:
        """The number was found clear again (``mark``: the stores' state then, None if they cannot tell)."""
        if mark is not route.clear_at:
            self._kept[key] = route._replace(clear_at=mark)
