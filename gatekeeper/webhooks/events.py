"""Processing verified webhook events: once each, fully stored before the 2xx. No Flask here.

Every event is claimed in the idempotency store under its event key with a
short lease, processed, then completed (kept for ``event_ttl_seconds``):

* a duplicate of a completed event does nothing (the view answers 200, and an
  inbound message gets the same reply again);
* a duplicate that arrives while the first is still pending raises
  :class:`EventPending` (503: Twilio retries after the first has finished);
* a store failure abandons the claim and raises
  :class:`~gatekeeper.errors.StoreUnavailable` (503: Twilio retries). Every
  write is idempotent — an opt-out is written at most once per event (its
  consent ``source`` names the event), a failure counts once per (SID, status),
  ``apply_status`` never moves back — so a retry completes a half-done event
  without doubling anything.

Hooks run after the event is stored and completed, once per unique event; an
exception in a hook is logged and swallowed (the event is already stored).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatekeeper import phone as phones
from gatekeeper.errors import InvalidNumber, StoreUnavailable
from gatekeeper.stores.base import ACCOUNT_SCOPE
from gatekeeper.webhooks import status as statuses
from gatekeeper.webhooks.inbound import Classification, Classifier, Intent
from gatekeeper.webhooks.incoming import Incoming, MalformedEvent

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper

log = logging.getLogger("gatekeeper.webhooks")

#: How long a claimed event stays "pending" if its process dies mid-way; a retry after that reprocesses it.
LEASE_SECONDS = 30.0
#: Twilio's code for "the recipient has opted out"; from a status callback it opts the number out account-wide.
OPTED_OUT_CODE = 21610
TWILIO_OPT_OUT_SOURCE = "twilio:21610"

_CHANNEL_PREFIX = re.compile(r"^(?:whatsapp|rcs|sms|mms|messenger):", re.IGNORECASE)
_REPLIES = ("", "stop", "start", "help")


class EventPending(Exception):
    """The same event is being processed right now; answer 503 so Twilio retries."""


@dataclass(frozen=True)
class InboundEvent:
    """One unique inbound message, after its consent change (if any) is stored."""

    message_sid: str
    from_number: str  # E.164
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
        self._failure_codes = frozenset(wh.failure_codes)
        hash_key = gate.settings.audit.hash_key
        self._hash_key = hash_key.get_secret_value().encode() if hash_key is not None else b""

    # -- the once-only frame -------------------------------------------------------
    def _once(self, key: str, work: Callable[[], bytes]) -> tuple[bool, bytes | None]:
        """Run ``work`` unless the event ``key`` was already processed; returns (ran, stored result)."""
        idem = self.gate.stores.idempotency
        claim = idem.claim(key, key, ttl_seconds=self.lease_seconds)
        if not claim.won:
            if claim.state == "pending":
                raise EventPending(key)
            return False, claim.result
        assert claim.token is not None
        try:
            result = work()
            idem.complete(key, claim.token, result, ttl_seconds=self.settings.event_ttl_seconds)
        except BaseException:
            # Release the claim so Twilio's retry can redo it; if the store is down the lease frees it.
            with suppress(StoreUnavailable):
                idem.abandon(key, claim.token)
            raise
        return True, result

    def _number(self, raw: str | None, field_name: str) -> str:
        if not raw:
            raise MalformedEvent(f"{field_name} is required")
        phone = phones.normalize(_strip_channel(raw), self.gate.default_country)
        if not phone.ok or phone.e164 is None:
            raise MalformedEvent(f"{field_name} is not a phone number ({phone.problem})")
        return phone.e164

    def _maybe_number(self, raw: str | None) -> str | None:
        if not raw:
            return None
        phone = phones.normalize(_strip_channel(raw), self.gate.default_country)
        return phone.e164 if phone.ok else None

    # -- consent -------------------------------------------------------------------
    def _record_consent(
        self, e164: str, scope: str, *, opted_out: bool, source: str, event_sid: str, once_per_source: bool = True
    ) -> ConsentEvent:
        store = self.gate.stores.opt_outs
        if once_per_source:
            # ``source`` names this very event; an earlier attempt of it may have written before the store
            # failed (then Twilio retried), so write at most once per event.
            for past in store.consent_history(e164, limit=20):
                if past.source == source and past.scope == scope and past.opted_out == opted_out:
                    return ConsentEvent(e164, scope, opted_out, source, past.at, changed=False, event_sid=event_sid)
        at = self.gate.clock()
        verb = store.opt_out if opted_out else store.opt_in
        changed = verb(e164, scope, source=source, at=at)
        return ConsentEvent(e164, scope, opted_out, source, at, changed=bool(changed), event_sid=event_sid)

    def _scope(self, cls: Classification, sender: str | None) -> str:
        if cls.account_wide or not sender:
            return ACCOUNT_SCOPE
        try:
            # The gate's own rule (account, or the sender with opt_out_scope = "sender").
            return str(self.gate._scopes(sender, None)[-1])
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
        e164 = self._number(incoming.get("From"), "From")
        body = incoming.params.get("Body", "")
        service = incoming.get("MessagingServiceSid")
        to = incoming.get("To")
        cls = self.classifier.classify(body, incoming.get("OptOutType"))
        consent: tuple[bool, str] | None = None
        if cls.intent in (Intent.OPT_OUT, Intent.OPT_IN):
            sender = service or (_strip_channel(to) if to else None)
            consent = (cls.intent is Intent.OPT_OUT, self._scope(cls, sender))
        reply = self.reply_for(cls)
        changes: list[ConsentEvent] = []

        def work() -> bytes:
            stores = self.gate.stores
            # Any message from the number shows it is reachable again.
            stores.failures.lift_suppression(e164)
            if consent is not None:
                opted_out, scope = consent
                source = f"webhook:{cls.label}:{sid}"
                changes.append(self._record_consent(e164, scope, opted_out=opted_out, source=source, event_sid=sid))
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
        try:
            error_code = statuses.parse_error_code(incoming.params.get("ErrorCode"))
        except ValueError as exc:
            raise MalformedEvent(str(exc)) from None
        to = self._maybe_number(incoming.get("To"))
        key = statuses.event_key(
            kind,
            sid,
            status,
            idempotency_token=incoming.idempotency_token,
            error_code=error_code,
            sequence_number=incoming.get("SequenceNumber"),
        )
        holder: list[StatusEvent] = []
        consent: list[ConsentEvent] = []

        def work() -> bytes:
            holder.clear()
            consent.clear()
            at = self.gate.clock()
            wh = self.settings
            stores = self.gate.stores
            applied = stores.statuses.apply_status(
                sid,
                status,
                statuses.rank(kind, status),
                error_code=error_code,
                at=at,
                to_hash=phones.digest(to, self._hash_key) if to else None,
                ttl_seconds=wh.status_ttl_seconds,
            )
            failures: int | None = None
            suppressed = False
            if to is not None and error_code is not None and error_code in self._failure_codes:
                failures = stores.failures.record_failure(
                    to, key.failure_id, at=at, window_seconds=wh.failure_window_seconds
                )
                if failures >= wh.failure_threshold:
                    stores.failures.suppress(
                        to, ttl_seconds=wh.suppression_ttl_seconds, reason=f"delivery_failures:{error_code}", at=at
                    )
                    suppressed = True
            # Twilio says the number opted out (of this sender at least); honour it account-wide at once.
            # The source is the same for every 21610, so "already opted out" is what makes a retry a no-op.
            if (
                to is not None
                and error_code == OPTED_OUT_CODE
                and stores.opt_outs.opted_out_scope(to, [ACCOUNT_SCOPE]) is None
            ):
                change = self._record_consent(
                    to,
                    ACCOUNT_SCOPE,
                    opted_out=True,
                    source=TWILIO_OPT_OUT_SOURCE,
                    event_sid=sid,
                    once_per_source=False,
                )
                consent.append(change)
            holder.append(
                StatusEvent(
                    kind=kind,
                    sid=sid,
                    status=status,
                    error_code=error_code,
                    applied=bool(applied),
                    to=to,
                    at=at,
                    failures=failures,
                    suppressed=suppressed,
                    params=incoming.params.to_dict(),
                )
            )
            return b""

        ran, _ = self._once(key.claim, work)
        if not ran:
            return None
        event = holder[0]
        if event.suppressed:
            log.warning("suppressed %s after %s hard delivery failures", phones.mask(to), event.failures)
        _call_hook("on_status", self.on_status, event)
        for change in consent:
            _call_hook("on_consent", self.on_consent, change)
        return event

    # -- Verify events -------------------------------------------------------------
    def verify_event(self, incoming: Incoming) -> StatusEvent | None:
        """Deduplicate one Verify event and hand it to ``on_status``; None for a duplicate."""
        params = incoming.params
        ident = incoming.idempotency_token or params.get("uuid") or params.get("EventId") or params.get("event_id")
        if ident:
            key = statuses.opaque_key("verify", "id", ident)
        else:
            # Without an id the whole signed body identifies the event.
            key = statuses.opaque_key("verify", "body", hashlib.sha256(incoming.body).hexdigest())
        at = self.gate.clock()
        ran, _ = self._once(key, lambda: b"")
        if not ran:
            return None
        event = StatusEvent(
            kind="verify",
            sid=incoming.get("verification_sid", "VerificationSid", "sid", "Sid") or "",
            status=incoming.get("status", "Status", "type", "Type") or "",
            error_code=None,
            applied=False,
            to=None,
            at=at,
            params=params.to_dict(),
        )
        _call_hook("on_status", self.on_status, event)
        return event

    # -- health --------------------------------------------------------------------
    def store_health(self) -> dict[str, bool]:
        """Whether each store the webhooks write can be reached (one probe per distinct backend)."""
        stores = self.gate.stores
        probes: dict[str, Callable[[], object]] = {
            "opt_outs": lambda: stores.opt_outs.opted_out_scope("+10000000000", [ACCOUNT_SCOPE]),
            "failures": lambda: stores.failures.suppression("+10000000000", now=0.0, window_seconds=1, threshold=1),
            "statuses": lambda: stores.statuses.status_of("healthz"),
            "idempotency": lambda: stores.idempotency.claim("webhook:healthz", "healthz", ttl_seconds=1.0),
        }
        roles = {
            "opt_outs": stores.opt_outs,
            "failures": stores.failures,
            "statuses": stores.statuses,
            "idempotency": stores.idempotency,
        }
        seen: dict[int, bool] = {}
        out: dict[str, bool] = {}
        for role, probe in probes.items():
            backend = id(roles[role])
            if backend not in seen:
                try:
                    probe()
                    seen[backend] = True
                except StoreUnavailable as exc:
                    log.error("healthz: %s store unavailable: %s", role, exc)
                    seen[backend] = False
            out[role] = seen[backend]
        return out
