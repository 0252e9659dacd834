"""Processing verified webhook events: once each, fully stored before the 2xx. No Flask here.

Every event runs under the gate's one run-once routine (:mod:`gatekeeper.idempotency`), keyed by
the event, with a short lease, and is kept for ``event_ttl_seconds``:

* a duplicate of a completed event does nothing (the view answers 200, and an
  inbound message gets the same reply again);
* a duplicate that arrives while the first is still pending raises
  :class:`~gatekeeper.errors.IdempotencyConflict` (``in_progress``; 503: Twilio may retry);
* a store failure frees the key and raises :class:`~gatekeeper.errors.StoreUnavailable` (503).
  Every write is idempotent (an opt-out is written at most once per event, its consent ``source``
  naming the event; a failure counts once per (SID, status); a status never moves back), so a
  retry completes a half-done event without doubling anything.

What an event changes is written by the gate's consent and delivery writer
(:class:`~gatekeeper.suppress.Suppression`), the same one ``gate.opt_out`` uses.

Hooks run after the event is stored and completed, once per unique event; an
exception in a hook is logged and swallowed (the event is already stored).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatekeeper import phone as phones
from gatekeeper.errors import InvalidNumber, MalformedEvent
from gatekeeper.idempotency import Ran
from gatekeeper.models import Phone
from gatekeeper.stores.base import ACCOUNT_SCOPE
from gatekeeper.suppress import Delivery, Recorded
from gatekeeper.webhooks import status as statuses
from gatekeeper.webhooks.keywords import Classification, Classifier, Intent
from gatekeeper.webhooks.request import Incoming

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper

log = logging.getLogger("gatekeeper.webhooks")

#: How long a claimed event stays "pending" if its process dies mid-way; a retry after that reprocesses it.
LEASE_SECONDS = 30.0

# Prefixes Event Streams put on plain numbers; channel addresses (whatsapp:, messenger:, rcs:) keep theirs.
_CHANNEL_PREFIX = re.compile(r"^(?:sms|mms):", re.IGNORECASE)
_REPLIES = ("", "stop", "start", "help")


@dataclass(frozen=True)
class InboundEvent:
    """One unique inbound message, after its consent change (if any) is stored."""

    message_sid: str
    from_number: str  # E.164 (whatever channel it wrote on), or the address of a channel without numbers
    to: str | None
    messaging_service_sid: str | None
    body: str
    intent: Intent
    keyword: str | None
    via: str | None
    received_at: float
    params: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True)
class ConsentEvent:
    """One recorded consent change: an opt-out or opt-in of ``e164`` for ``scope`` (``"*"`` = account)."""

    e164: str
    scope: str
    opted_out: bool
    source: str
    at: float
    changed: bool  # False when the number was already in that state (the change is still recorded)
    event_sid: str


@dataclass(frozen=True)
class StatusEvent:
    """One unique status callback (``kind`` message or call) or Verify event, after it is stored."""

    kind: statuses.Kind
    sid: str
    status: str
    error_code: int | None
    applied: bool  # False when an equal or later status was already stored
    to: str | None  # the recipient in E.164, when it is a phone number
    at: float
    failures: int | None = None  # hard failures counted for ``to`` in the window, when this was one
    suppressed: bool = False  # this event put ``to`` over the failure threshold
    params: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class InboundResult:
    """What the view answers: ``reply`` is ``"stop"``, ``"start"``, ``"help"`` or ``""`` (no reply)."""

    reply: str
    duplicate: bool


def _call_hook(name: str, hook: Callable[[Any], object] | None, event: object) -> None:
    if hook is None:
        return
    try:
        hook(event)
    except Exception as exc:
        # The event is stored and completed; a failing hook must not turn into a retry that re-runs it.
        log.error(
            "%s hook raised %s; the event is stored and will not be redelivered",
            name,
            type(exc).__name__,
            exc_info=True,
        )


def _strip_channel(value: str) -> str:
    return _CHANNEL_PREFIX.sub("", value.strip(), count=1)


class EventProcessor:
    """Applies webhook events to a :class:`~gatekeeper.gate.Gatekeeper`'s stores, once each."""

    def __init__(
        self,
        gate: Gatekeeper,
        *,
        on_inbound: Callable[[InboundEvent], object] | None = None,
        on_consent: Callable[[ConsentEvent], object] | None = None,
        on_status: Callable[[StatusEvent], object] | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.gate = gate
        wh = gate.settings.webhooks
        self.settings = wh
        self.classifier = Classifier(
            extra_stop=tuple(wh.keywords.stop),
            extra_start=tuple(wh.keywords.start),
            extra_help=tuple(wh.keywords.help),
            phrases=wh.consent_phrases,
        )
        self.on_inbound = on_inbound
        self.on_consent = on_consent
        self.on_status = on_status
        self.lease_seconds = lease_seconds

    def _once(self, key: str, work: Callable[[], bytes]) -> Ran:
        """Run ``work`` unless the event ``key`` was already processed (every write in it is safe to redo)."""
        return self.gate.once.run(
            key, work, lease_seconds=self.lease_seconds, keep_seconds=self.settings.event_ttl_seconds
        )

    def _sender(self, raw: str | None, field_name: str) -> Phone:
        """Who wrote: a number (on SMS or behind ``whatsapp:``…) or a channel address (``messenger:…``)."""
        if not raw:
            raise MalformedEvent(f"{field_name} is required")
        phone = phones.normalize(_strip_channel(raw), self.gate.default_country)
        if not phone.ok or phone.key is None:
            raise MalformedEvent(f"{field_name} is not a phone number or channel address ({phone.problem})")
        return phone

    def _maybe_number(self, raw: str | None) -> str | None:
        """The recipient of a status callback as the stores key it (the number, whatever channel reached it)."""
        if not raw:
            return None
        phone = phones.normalize(_strip_channel(raw), self.gate.default_country)
        return phone.key if phone.ok else None

    def subject_of(self, kind: str, incoming: Incoming) -> str | None:
        """Whose number an event is about, as the gate screens it: the writer of an inbound message (raises
        MalformedEvent for a writer that is no number or address), the recipient of a status; None for Verify."""
        if kind == "inbound":
            return self._sender(incoming.get("From"), "From").key
        if kind in ("message", "call"):
            return self._maybe_number(incoming.get("To"))
        return None

    def reply_without_store(self, incoming: Incoming) -> str:
        """Which configured reply answers an inbound message, decided from its words alone (for an event
        journalled while the store is down: the reply does not wait for the store)."""
        return self.reply_for(self.classifier.classify(incoming.params.get("Body", ""), incoming.get("OptOutType")))

    # -- consent -------------------------------------------------------------------
    def _consent_event(self, recorded: Recorded, event_sid: str) -> ConsentEvent:
        c = recorded.change
        return ConsentEvent(c.e164, c.scope, c.opted_out, c.source, c.at, changed=recorded.changed, event_sid=event_sid)

    def _scope(self, cls: Classification, sender: str | None, channel: str | None) -> str:
        if cls.account_wide:
            return ACCOUNT_SCOPE
        try:
            # The gate's own rule: the account, the channel's own (a WhatsApp STOP), or the sender's.
            return self.gate.suppression.scope_of(sender, channel=channel)
        except InvalidNumber:
            raise MalformedEvent("To is not a phone number, short code or Messaging Service SID") from None

    # -- inbound messages ----------------------------------------------------------
    def reply_for(self, cls: Classification) -> str:
        """Which configured reply answers ``cls`` (``""`` for none)."""
        if cls.intent is Intent.NONE:
            return ""
        if cls.via == "opt_out_type" or (self.settings.advanced_opt_out and cls.via == "keyword"):
            return ""  # Twilio's Advanced Opt-Out answers its own keywords; a second reply would be noise
        return {Intent.OPT_OUT: "stop", Intent.OPT_IN: "start", Intent.HELP: "help"}[cls.intent]

    def inbound(self, incoming: Incoming) -> InboundResult:
        """Process one inbound message: lift suppression, record consent, then run the hooks."""
        sid = incoming.get("MessageSid", "SmsMessageSid", "SmsSid")
        if not sid or not statuses.valid_sid(sid):
            raise MalformedEvent("MessageSid is required and must look like a Twilio SID")
        writer = self._sender(incoming.get("From"), "From")
        e164 = writer.key
        assert e164 is not None
        body = incoming.params.get("Body", "")
        service = incoming.get("MessagingServiceSid")
        to = incoming.get("To")
        cls = self.classifier.classify(body, incoming.get("OptOutType"))
        consent: tuple[bool, str] | None = None
        if cls.intent in (Intent.OPT_OUT, Intent.OPT_IN):
            sender = service or (_strip_channel(to) if to else None)
            consent = (cls.intent is Intent.OPT_OUT, self._scope(cls, sender, writer.channel))
        reply = self.reply_for(cls)
        changes: list[ConsentEvent] = []

        def work() -> bytes:
            suppression = self.gate.suppression
            suppression.reachable(e164)  # any message from the number shows it is reachable again
            if consent is not None:
                opted_out, scope = consent
                source = f"webhook:{cls.label}:{sid}"
                recorded = suppression.record_consent(
                    e164, scope, opted_out=opted_out, source=source, once_per_source=True
                )
                changes.append(self._consent_event(recorded, sid))
            return reply.encode()

        ran, stored = self._once(statuses.opaque_key("inbound", sid), work)
        if not ran:
            previous = (stored or b"").decode("utf-8", "replace")
            return InboundResult(reply=previous if previous in _REPLIES else reply, duplicate=True)
        log.info("inbound %s from %s: %s", sid, phones.mask(e164), cls.intent.value)
        event = InboundEvent(
            message_sid=sid,
            from_number=e164,
            to=to,
            messaging_service_sid=service,
            body=body,
            intent=cls.intent,
            keyword=cls.keyword,
            via=cls.via,
            received_at=self.gate.clock(),
            params=incoming.params.to_dict(),
        )
        _call_hook("on_inbound", self.on_inbound, event)
        for change in changes:
            _call_hook("on_consent", self.on_consent, change)
        return InboundResult(reply=reply, duplicate=False)

    # -- status callbacks ----------------------------------------------------------
    def status(self, kind: statuses.Kind, incoming: Incoming) -> StatusEvent | None:
        """Process one message or call status callback; None for a duplicate."""
        if kind == "call":
            sid, status = incoming.get("CallSid"), incoming.get("CallStatus")
            sid_name, status_name = "CallSid", "CallStatus"
        else:
            sid, status = incoming.get("MessageSid", "SmsSid"), incoming.get("MessageStatus", "SmsStatus")
            sid_name, status_name = "MessageSid", "MessageStatus"
        if not sid or not statuses.valid_sid(sid):
            raise MalformedEvent(f"{sid_name} is required and must look like a Twilio SID")
        status = (status or "").strip().lower()
        if not statuses.valid_status(status):
            raise MalformedEvent(f"{status_name} is required and must be a status name like 'delivered'")
        error_code = statuses.parse_error_code(incoming.params.get("ErrorCode"))
        to = self._maybe_number(incoming.get("To"))
        key = statuses.event_key(
            kind,
            sid,
            status,
            idempotency_token=incoming.idempotency_token,
            error_code=error_code,
            sequence_number=incoming.get("SequenceNumber"),
        )
        suppression, rank = self.gate.suppression, statuses.rank(kind, status)
        to_hash = self.gate.auditor.digest(to) if to else None

        def event_of(done: Delivery) -> StatusEvent:
            return StatusEvent(
                kind=kind,
                sid=sid,
                status=status,
                error_code=error_code,
                applied=done.applied,
                to=to,
                at=done.at,
                failures=done.failures,
                suppressed=done.suppressed,
                params=incoming.params.to_dict(),
            )

        if suppression.takes_status_event(error_code, to):  # the status alone: one store step, no claim
            taken = suppression.record_status_event(
                key.claim, sid, status, rank, error_code=error_code, to_hash=to_hash
            )
            if taken is None:
                return None
            event = event_of(taken)
            _call_hook("on_status", self.on_status, event)
            return event

        holder: list[StatusEvent] = []
        consent: list[ConsentEvent] = []

        def work() -> bytes:
            holder.clear()
            done = suppression.record_delivery(
                sid, status, rank, error_code=error_code, to=to, to_hash=to_hash, failure_id=key.failure_id
            )
            holder.append(event_of(done))
            consent[:] = [] if done.consent is None else [self._consent_event(done.consent, sid)]
            return b""

        ran, _ = self._once(key.claim, work)
        if not ran:
            return None
        event = holder[0]
        _call_hook("on_status", self.on_status, event)
        for change in consent:
            _call_hook("on_consent", self.on_consent, change)
        return event

    # -- Verify events -------------------------------------------------------------
    def verify_event(self, incoming: Incoming) -> StatusEvent | None:
        """Deduplicate one Verify events request, count the verifications it reports for the guard's
        conversion-aware limits (``gate.record_verification``), and hand it to ``on_status``; None for a duplicate."""
        params = incoming.params
        ident = incoming.idempotency_token or params.get("uuid") or params.get("EventId") or params.get("event_id")
        if ident:
            key = statuses.opaque_key("verify", "id", ident)
        else:
            # Without an id the whole signed body identifies the event.
            key = statuses.opaque_key("verify", "body", hashlib.sha256(incoming.body).hexdigest())
        at = self.gate.clock()
        found = verifications(incoming.body)

        def work() -> bytes:  # counting never raises: an event is not refused for the guard's arithmetic
            for to, sid, status in found:
                self.gate.record_verification(to, sid, status)
            return b""

        ran, _ = self._once(key, work)
        if not ran:
            return None
        first = found[0] if found else ("", "", "")
        event = StatusEvent(
            kind="verify",
            sid=incoming.get("verification_sid", "VerificationSid", "sid", "Sid") or first[1],
            status=incoming.get("status", "Status", "type", "Type") or first[2],
            error_code=None,
            applied=False,
            to=None,
            at=at,
            params=params.to_dict(),
        )
        _call_hook("on_status", self.on_status, event)
        return event


#: Event Streams' type for a Verify verification's status (``…verification.approved``, ``…verification.pending``).
VERIFICATION_EVENT = "com.twilio.accountsecurity.verify.verification."


def verifications(body: bytes) -> list[tuple[str, str, str]]:
    """The verifications a Verify events request reports, as ``(to, verification SID, status)``: Event Streams
    posts CloudEvents (one, or a JSON array of them), each with ``data.to``, ``data.verification_sid`` and
    ``data.verification_status``; an event of another type, or without those, reports none."""
    try:
        data = json.loads(body) if body[:1] in (b"[", b"{") else None
    except (ValueError, RecursionError):
        return []
    found = []
    for event in data if isinstance(data, list) else [data]:
        if not isinstance(event, dict) or not str(event.get("type", "")).startswith(VERIFICATION_EVENT):
            continue
        inner = event.get("data")
        if not isinstance(inner, dict):
            continue
        to, sid, status = inner.get("to"), inner.get("verification_sid"), inner.get("verification_status")
        if isinstance(to, str) and isinstance(sid, str) and isinstance(status, str):
            found.append((to, sid, status.lower()))
    return found
