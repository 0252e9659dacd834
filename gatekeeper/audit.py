"""The audit: one record per decision, the number only as a pseudonym, and the decision metrics.

A record holds the masked number (``+1415555****``) and a keyed hash of it: HMAC-SHA256 under
``[audit] hash_key`` when one is configured, else under a random key the store keeps for every
process sharing it (made on first use: ``stores.base.SecretKeeper``), so records of one number can
be joined without storing it, and the number cannot be recovered from a record without the key
(an unkeyed hash of a phone number falls to a search of every number). The same key makes the
webhooks' status records' ``to_hash``. A store that cannot be written drops the record with a
warning: the audit never blocks a send.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

from gatekeeper import metrics
from gatekeeper import phone as phones
from gatekeeper.errors import StoreUnavailable
from gatekeeper.models import AuditEntry, Decision
from gatekeeper.settings import AuditSettings
from gatekeeper.stores.base import Call, SecretKeeper, Steps, Stores, run

log = logging.getLogger("gatekeeper.audit")

#: perf_counter marks: at the start, after normalize, after suppress, after enrich, at the end.
Marks = tuple[float, float, float, float, float]


class Auditor:
    """Writes the audit record and counts the decision; the only holder of the pseudonym key."""

    def __init__(self, stores: Stores, settings: AuditSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._stores = stores
        self._key: bytes | None = settings.hash_key.get_secret_value().encode() if settings.hash_key else None
        self._enabled = settings.enabled
        self._clock = clock

    @property
    def needs_key(self) -> bool:
        """Whether the pseudonym key is still to be read from the store (once per process)."""
        return self._key is None

    def key_steps(self) -> Steps[None]:
        """Read the store's pseudonym key (as a store call: the async gate awaits it); a store that keeps no
        secrets gets a random key for this process, with a warning (its pseudonyms do not join across processes)."""
        if self._key is not None:
            return
        if isinstance(self._stores.audit, SecretKeeper):
            key = yield Call("audit", "secret", ("audit",))
        else:
            log.warning("the audit store keeps no secrets: pseudonyms are keyed per process; set [audit] hash_key")
            key = secrets.token_bytes(32)
        self._key = bytes(key)

    def _ready_key(self) -> bytes:
        if self._key is None:
            run(self._stores, self.key_steps())
        assert self._key is not None
        return self._key

    def digest(self, e164: str) -> str:
        """The keyed pseudonym of a number, as audit and status records hold it."""
        return phones.digest(e164, self._ready_key())

    def record(self, decision: Decision, number: str, channel: str | None, marks: Marks) -> None:
        """Count ``decision`` and, when the audit is on, keep its record (``number``: E.164, else the raw input)."""
        try:
            entry = self.entry(decision, number, channel, marks)
            if entry is not None:
                self._stores.audit.record(entry)
        except StoreUnavailable as exc:
            log.warning("audit record dropped: %s", exc)

    def entry(self, decision: Decision, number: str, channel: str | None, marks: Marks) -> AuditEntry | None:
        """Count ``decision``; the record to keep of it, or None when the audit is off (the async gate keeps it)."""
        metrics.decided(decision.purpose, decision.action, decision.twilio_code)
        if not self._enabled:
            return None
        masked, hashed = phones.pseudonyms(number, self._ready_key())
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

