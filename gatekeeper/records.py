"""The blocking gate's record-keeping API: consent, delivery statuses, health, the audit, erasure, and the
verifications the guard's conversion-aware limits count. :class:`~gatekeeper.gate.Gatekeeper` is one of these;
apart from ``gate.py`` only to keep the gate's own module to its pipeline and its sends."""

from __future__ import annotations

from typing import Any

from gatekeeper import phone as phones
from gatekeeper.core import GateCore, health_report
from gatekeeper.models import Purpose, StatusRecord
from gatekeeper.stores.base import run


class GateRecords(GateCore):
    """What a blocking gate keeps and tells (see the module docstring)."""

    # -- consent and status --------------------------------------------------------
    def opt_out(
        self, number: str, *, sender: str | None = None, country: str | None = None, source: str = "api"
    ) -> bool:
        """Record an opt-out (account-wide, or for ``sender`` with ``opt_out_scope = "sender"``); True if it changed."""
        return self.suppression.set_consent(number, opted_out=True, sender=sender, country=country, source=source)

    def opt_in(
        self, number: str, *, sender: str | None = None, country: str | None = None, source: str = "api"
    ) -> bool:
        """Lift an opt-out; without ``sender`` it lifts every scope for the number."""
        return self.suppression.set_consent(number, opted_out=False, sender=sender, country=country, source=source)

    def is_opted_out(self, number: str, *, sender: str | None = None, country: str | None = None) -> bool:
        """Whether ``number`` (``whatsapp:+1…`` for that channel's own opt-outs) opted out of ``sender``'s sends."""
        return self.suppression.is_opted_out(number, sender=sender, country=country)

    def status_of(self, sid: str) -> StatusRecord | None:
        """The stored delivery status for a message or call SID (None if never seen)."""
        return self.stores.statuses.status_of(sid)

    def health(self) -> dict[str, Any]:
        """Whether the stores answer, and how they may lose an opt-out (see ``core.health_report``)."""
        return health_report(self.stores.health(), self.stores.durability())

    def audit(self, number: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest audit records (masked number, keyed hash, facts, reasons), newest first: all, or ``number``'s
        among the newest ``[audit] max_entries``."""
        wanted, scan = self._audit_query(number, limit)
        return self._audit_filtered(self.stores.audit.recent(scan), wanted, limit)

    def erase(self, number: str, *, country: str | None = None) -> None:
        """Forget ``number`` (an erasure request): its Lookup answers, consent history, failures, statuses and audit
        records, here and in the stores; what stays is a do-not-contact tombstone (an account-wide opt-out, kept
        under a keyed hash), so it is never messaged again. Raises InvalidArgumentType when a store cannot erase."""
        for call in self._erasure(number, country):
            getattr(getattr(self.stores, call.role), call.verb)(*call.args, **call.kwargs)

    def guard_report(
        self, number: str, purpose: Purpose = "notify", *, country: str | None = None, client_key: str | None = None
    ) -> list[str]:
        """What the guard would do with an attempt to ``number`` now, in words, counting nothing: each rule it
        counts in, the attempts already in that rule's window and whether the next one trips it (``gatekeeper
        check``). Empty for a number that cannot be parsed (the pipeline refuses it before the guard)."""
        phone = phones.normalize(number, country or self.default_country)
        return run(self.stores, self.guard.describe_steps(phone, purpose, client_key)) if phone.ok else []

    # -- verifications ---------------------------------------------------------------
    def record_verification(self, to: str, verification_sid: str, status: str) -> None:
        """Count one verification for the guard's conversion-aware limits (``[guard.conversion]``): ``pending`` (a
        code sent) as started, ``approved`` as approved, for the number's prefix and country; once per SID however
        often it is heard of. Any other status, an address with no number, or a store that cannot count changes
        nothing (counting never raises). The gate's own sends, ``verify_check``, the drop-in's checks and the Verify
        events webhook call this; call it for codes checked another way."""
        steps = self.verification_steps(to, verification_sid, status)
        if steps is not None:
            with self.guard.conversion.quietly(status):
                run(self.stores, steps)

    def verify_check(self, to: str, code: str, *, verify_service_sid: str, **params: Any) -> Any:
        """Check a Verify code (``verification_checks.create``) with the gate's client, and count an approval for the
        guard (:meth:`record_verification`). Returns the SDK's ``VerificationCheckInstance``; Twilio's errors (20404:
        no pending verification) are raised as the SDK raises them."""
        checks = self.client.verify.v2.services(verify_service_sid).verification_checks
        checked = checks.create(to=to, code=code, **params)
        self.record_verification(checked.to or to, checked.sid or "", checked.status or "")
        return checked
