"""Prometheus metrics: what the gate decided, what Lookup cost, what the webhooks received.

The counters live in prometheus-client's default registry, as an application's own metrics do;
``gatekeeper serve`` exposes them at ``/metrics``, and any app can with ``prometheus_client``.
No label ever holds a phone number.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from prometheus_client import Counter

DECISIONS = Counter(
    "gatekeeper_decisions",
    "Decisions made by the gate, by purpose and action (refusals by Twilio code).",
    ["purpose", "action", "code"],
)
LOOKUPS = Counter(
    "gatekeeper_lookup_requests",
    "Lookup v2 requests sent to Twilio, by outcome (answered, invalid: 404, error: network or HTTP error).",
    ["outcome"],
)
CACHE = Counter(
    "gatekeeper_lookup_cache",
    "Lookup cache reads on the decision path, by result (hit, miss).",
    ["result"],
)

# Label children resolved once: on the hot path an increment is then a lock and an add.
CACHE_HIT = CACHE.labels("hit")
_CACHE_MISS = CACHE.labels("miss")


_decision_children: dict[tuple[str, str, int | None], Any] = {}


def decision_counter(purpose: str, action: str, code: int | None) -> Any:
    """The decisions counter for these labels (a handful of combinations: each resolved once).

    ``action`` may be an ``Action`` member, a ``str`` enum equal to its value, as the hot path passes it.
    """
    key = (purpose, action, code)
    child = _decision_children.get(key)
    if child is None:
        label = action.value if isinstance(action, Enum) else action
        child = _decision_children[key] = DECISIONS.labels(purpose, label, "" if code is None else str(code))
    return child


def decided(purpose: str, action: str, code: int | None) -> None:
    decision_counter(purpose, action, code).inc()


def cache_read(hit: bool) -> None:
    (CACHE_HIT if hit else _CACHE_MISS).inc()


def lookup_request(outcome: str) -> None:
    LOOKUPS.labels(outcome).inc()
