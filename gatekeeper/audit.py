"""The audit: one record per decision, the number only as a pseudonym, and the decision metrics.

A record holds the masked number (``+1415555****``) and a keyed hash of it: HMAC-SHA256 under
``[audit] hash_key`` (derived here, once, for the audit and the webhooks' status records alike), so
records of one number can be joined without storing it. A store that cannot be written drops the
record with a warning: the audit never blocks a send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gatekeeper import metrics
from gatekeeper import phone as phones
from gatekeeper.errors import StoreUnavailable
from gatekeeper.models import AuditEntry, Decision
from gatekeeper.settings import AuditSettings
from gatekeeper.stores.base import Stores

log = logging.getLogger("gatekeeper.audit")

#: perf_counter marks: at the start, after normalize, after suppress, after enrich, at the end.
Marks = tuple[float, float, float, float, float]


class Auditor:
    """Writes the audit record and counts the decision; the only holder of the pseudonym key."""

    def __init__(self, stores: Stores, settings: AuditSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._stores = stores
        self._key = settings.hash_key.get_secret_value().encode() if settings.hash_key is not None else b""
        self._enabled = settings.enabled
        self._clock = clock

    def digest(self, e164: str) -> str:
        """The keyed pseudonym of a number, as audit and status records hold it."""
        return phones.digest(e164, self._key)

    def record(self, decision: Decision, number: str, channel: str | None, marks: Marks) -> None:
        """Count ``decision`` and, when the audit is on, keep its record (``number``: E.164, else the raw input)."""
        entry = self.entry(decision, number, channel, marks)
        if entry is None:
            return
        try:
            self._stores.audit.record(entry)
        except StoreUnavailable as exc:
            log.warning("audit record dropped: %s", exc)

    def entry(self, decision: Decision, number: str, channel: str | None, marks: Marks) -> AuditEntry | None:
        """Count ``decision``; the record to keep of it, or None when the audit is off (the async gate keeps it)."""
        metrics.decided(decision.purpose, decision.action, decision.twilio_code)
        if not self._enabled:
            return None
        masked, hashed = phones.pseudonyms(number, self._key)
        return AuditEntry(
            self._clock(),
            decision.purpose,
            masked,
            hashed,
            decision.action._value_,  # the plain attribute: ``.value`` runs two Python functions
            channel,
            decision.reasons,
            decision.twilio_code,
            decision.enforced,
            decision.cache_hit,
            decision.facts,
            marks,
        )

