"""Frozen values every pipeline step shares.

This module is a leaf: it imports none of the steps, no network, Redis or Flask.
Dataclasses keep the hot path cheap; pydantic's ``TypeAdapter`` serialises them
for the Redis stores and the idempotency records.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

from pydantic import Field

from gatekeeper.masking import mask, mask_text

Purpose = Literal["notify", "mfa"]
PURPOSES: tuple[Purpose, ...] = ("notify", "mfa")

#: Line types exactly as Lookup v2 ``line_type_intelligence.type`` spells them.
LINE_TYPES: frozenset[str] = frozenset(
    {
        "mobile",
        "landline",
        "fixedVoip",
        "nonFixedVoip",
        "personal",
        "tollFree",
        "premium",
        "sharedCost",
        "uan",
        "voicemail",
        "pager",
        "unknown",
    }
)
VOIP_LINE_TYPES: frozenset[str] = frozenset({"fixedVoip", "nonFixedVoip"})

#: Lookup v2 data packages, in the order of the response: ``null`` in an answer unless requested.
LOOKUP_PACKAGES: tuple[str, ...] = (
    "caller_name",
    "sim_swap",
    "call_forwarding",
    "line_status",
    "line_type_intelligence",
    "identity_match",
    "reassigned_number",
    "sms_pumping_risk",
    "phone_number_quality_score",
    "pre_fill",
)
#: Lookup v2 ``Fields`` values (an allowlist: a typo fails at load, not on the first paid request).
LOOKUP_FIELDS: frozenset[str] = frozenset({"validation", *LOOKUP_PACKAGES})


#: A field asked for a date, as ``reassigned_number@20260115`` (Lookup's ``LastVerifiedDate``): its answer depends on
#: the date, so it is cached apart for each date.
DATED = "@"


def dated(field: str, day: str) -> str:
    """``field`` asked for ``day`` (YYYYMMDD): its own cache key, and ``LastVerifiedDate`` on the request."""
    return f"{field}{DATED}{day}"


def package(field: str) -> str:
    """The Lookup package a field asks for (``reassigned_number`` of ``reassigned_number@20260115``)."""
    return field.split(DATED, 1)[0]


FactsSource = Literal["local", "cache", "lookup"]
PhoneKind = Literal["e164", "short_code", "alphanumeric", "address", "invalid"]

#: Messaging channels whose ``To`` is ``<channel>:<number>``: the number behind is normalized and looked up.
NUMBER_CHANNELS: frozenset[str] = frozenset({"whatsapp", "rcs"})
#: Messaging channels whose ``To`` is ``<channel>:<id>``: an identity of that channel, not a number.
ID_CHANNELS: frozenset[str] = frozenset({"messenger"})
#: Voice destinations that are no number: ``sip:user@host`` and ``client:<identity>``.
CALL_ADDRESS_CHANNELS: frozenset[str] = frozenset({"sip", "client"})
#: Opt-out scopes of a whole messaging channel start with this: a WhatsApp STOP is ``channel:whatsapp``.
CHANNEL_SCOPE_PREFIX = "channel:"
#: Every channel name a policy can allow or deny: plain SMS and voice, Verify's, and the addresses above.
CHANNELS: frozenset[str] = frozenset(
    {"sms", "voice", "email", "sna", "auto"} | NUMBER_CHANNELS | ID_CHANNELS | CALL_ADDRESS_CHANNELS
)


class Action(str, enum.Enum):
    """What the gate does with one attempt."""

    SMS = "sms"
    WHATSAPP = "whatsapp"  # a message to whatsapp:+…
    MESSAGE = "message"  # a message to another channel address (messenger:…, rcs:…)
    VOICE = "voice"  # a call: to a number, or to sip:/client:
    VERIFY_SMS = "verify_sms"
    VERIFY_CALL = "verify_call"
    VERIFY_WHATSAPP = "verify_whatsapp"
    VERIFY_SNA = "verify_sna"  # Silent Network Authentication: mobile numbers only
    VERIFY_AUTO = "verify_auto"  # Verify picks the channel; gated as SMS
    STUDIO = "studio"  # a Studio Flow execution
    TOTP = "totp"
    EMAIL = "email"
    REFUSE = "refuse"
    DEFER = "defer"  # an Outcome only: quiet hours, and no way to schedule the send (``detail["earliest"]``)

    def __str__(self) -> str:
        return self.value


T = TypeVar("T")


def masked_repr(cls: type[T]) -> type[T]:
    """Give a dataclass a repr with every phone number masked (``+1415555****``), nested records included;
    a caller's raw input (``raw``) is masked whole, whatever its format. A repr ends up in logs and tracebacks."""
    names = [f.name for f in fields(cls) if f.repr]  # type: ignore[arg-type]

    def __repr__(self: object) -> str:
        parts = []
        for name in names:
            value = getattr(self, name)
            shown = repr(mask(value)) if name == "raw" and isinstance(value, str) else mask_text(repr(value))
            parts.append(f"{name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"

    cls.__repr__ = __repr__  # type: ignore[method-assign]
    return cls


@masked_repr
@dataclass(frozen=True, slots=True)
class Phone:
    """The local verdict on one destination (step 1, no network).

    ``e164`` is set for every parseable number, valid or not, so a refusal can
    still be masked and audited; ``problem`` names why it cannot be reached.
    A channel address keeps its channel: ``whatsapp:+1…`` has ``channel="whatsapp"`` and the
    number behind it in ``e164``; ``sip:…``, ``client:…`` and ``messenger:…`` are of kind
    ``address`` and have no number at all.
    """

    raw: str
    kind: PhoneKind
    e164: str | None = None
    region: str | None = None  # ISO 3166 alpha-2 from the parse, e.g. "US", "GG"
    calling_code: int | None = None
    local_line_type: str | None = None  # what phonenumbers alone can tell, in Lookup's words
    problem: str | None = None  # "not_a_number", "impossible", "invalid", "short_code", "alphanumeric", "address"
    channel: str | None = None  # "whatsapp", "rcs", "messenger", "sip", "client"; None for a plain number
    address: str | None = None  # what goes on ``To`` when it is not the bare E.164 number

    @property
    def ok(self) -> bool:
        return self.problem is None and (self.e164 is not None or self.address is not None)

    @property
    def to(self) -> str | None:
        """What goes on ``To``: the address as Twilio wants it, or the E.164 number."""
        return self.address or self.e164

    @property
    def key(self) -> str | None:
        """Whose consent and failures the stores keep: the number (whatever channel it is reached on),
        else the address itself."""
        return self.e164 or self.address


@masked_repr
@dataclass(frozen=True, slots=True)
class PhoneFacts:
    """What is known about a number: from the local parse, the cache or Lookup v2."""

    e164: str
    country_code: str | None = None
    line_type: str | None = None
    carrier_name: str | None = None
    mcc: str | None = None
    mnc: str | None = None
    caller_name: str | None = None
    source: FactsSource = "local"
    fetched_at: float | None = None  # epoch seconds of the oldest field used; None for local facts
    valid: bool | None = None
    carrier_error_code: int | None = None
    sms_pumping_risk_score: int | None = None
    sms_pumping_blocked: bool | None = None  # Lookup's sms_pumping_risk.number_blocked (Twilio blocks it)
    sim_swapped: bool | None = None  # sim_swap: the SIM changed within Lookup's period (24 h)
    reassigned: str | None = None  # reassigned_number since the caller's last-verified date: yes, no, no_data_available
    line_status: str | None = None  # line_status: "active", "inactive", "unreachable" …
    fields: tuple[str, ...] = ()


@masked_repr
@dataclass(frozen=True, slots=True)
class Decision:
    """The gate's answer for one attempt: an action, the reasons, and the facts used."""

    action: Action
    to: str
    purpose: Purpose
    reasons: tuple[str, ...] = ()
    facts: PhoneFacts | None = None
    twilio_code: int | None = None
    enforced: bool = True  # False in observe mode: recorded, never applied
    cache_hit: bool = False

    @property
    def refused(self) -> bool:
        return self.action is Action.REFUSE


_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})

#: The Twilio API each sending action uses; a request's own parameters travel only to its own API.
API_OF: Mapping[Action, str] = MappingProxyType(
    {
        Action.SMS: "messages",
        Action.WHATSAPP: "messages",
        Action.MESSAGE: "messages",
        Action.VOICE: "calls",
        Action.VERIFY_SMS: "verify",
        Action.VERIFY_CALL: "verify",
        Action.VERIFY_WHATSAPP: "verify",
        Action.VERIFY_SNA: "verify",
        Action.VERIFY_AUTO: "verify",
        Action.EMAIL: "verify",
        Action.STUDIO: "studio",
        Action.TOTP: "totp",
        Action.REFUSE: "none",
        Action.DEFER: "none",
    }
)


class SendRequest(NamedTuple):
    """What a caller asked to send, apart from where: the gate decides the destination and the channel.

    ``asked`` is the action the caller asked for (``SMS`` for ``notify`` and ``messages.create``,
    ``VOICE`` for ``calls.create``, ``VERIFY_SMS``/``VERIFY_CALL``/``EMAIL`` for Verify); in observe
    mode it is what is sent. ``params`` are further keywords of the twilio SDK's create call (``media_url``,
    ``url``, ``locale`` …); they go only to the API they were written for, so a text rerouted to a
    voice call does not carry its ``media_url`` along. A named tuple: one is built on every send.
    """

    asked: Action
    body: str | None = None
    from_: str | None = None
    messaging_service_sid: str | None = None
    status_callback: str | None = None
    verify_service_sid: str | None = None
    email: str | None = None
    params: Mapping[str, Any] = _NO_PARAMS
    account_sid: str | None = None  # a subaccount whose resource the caller used; None: the client's own
    flow_sid: str | None = None  # the Studio Flow, for Action.STUDIO
    studio_version: str = "v2"  # the Studio API the caller used ("v1" or "v2"): the execution is created there
    call_status_callback: str | None = None  # for a call the routing API falls back to (status_callback: a message)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={mask_text(repr(value))}" for name, value in zip(self._fields, self, strict=True))
        return f"SendRequest({shown})"

    @property
    def sender(self) -> str | None:
        """Who sends: the ``from_`` number, else the Messaging Service (the opt-out scope of a sender)."""
        return self.from_ or self.messaging_service_sid

    def params_for(self, action: Action) -> Mapping[str, Any]:
        """The caller's SDK keywords when ``action`` uses the API they were written for, else none."""
        return self.params if API_OF[action] == API_OF[self.asked] else {}


@masked_repr
@dataclass(frozen=True, slots=True)
class Outcome:
    """What the gate did: the action taken, Twilio's SID when it sent, the decision behind it.

    ``detail`` carries action-specific data, e.g. the TOTP provisioning URI or
    the Verify status. ``replayed`` is True when an idempotency key returned a
    stored outcome and nothing was sent. ``resource`` is what the twilio SDK returned for the send
    (a ``MessageInstance``, ``CallInstance`` or ``VerificationInstance``); it is kept in this process
    only, never stored, so a replayed outcome has none.
    """

    action: Action
    decision: Decision
    sid: str | None = None
    status: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False
    resource: Annotated[Any, Field(exclude=True)] = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """The latest delivery status stored for one message or call SID."""

    sid: str
    status: str
    error_code: int | None = None
    updated_at: float = 0.0
    to_hash: str | None = None


class AuditEntry(NamedTuple):
    """One decision as the audit keeps it: the number only masked and hashed.

    Built on every decision, so it shares what the decision already holds (the reasons, the facts)
    instead of copying them, and it is a named tuple, the cheapest immutable record to build;
    :meth:`as_dict` is the stored and reported form.
    """

    at: float
    purpose: str
    to: str  # masked: +1415555****
    to_hash: str
    action: str
    channel: str | None
    reasons: tuple[str, ...]
    twilio_code: int | None
    enforced: bool
    cache_hit: bool
    facts: PhoneFacts | None
    clock_marks: tuple[float, float, float, float, float]  # perf_counter at start, after each step, at the end

    def as_dict(self) -> dict[str, Any]:
        f = self.facts
        start, normalized, suppressed, enriched, end = self.clock_marks

        def us(seconds: float) -> float:
            return round(seconds * 1e6, 1)

        return {
            "at": self.at,
            "purpose": self.purpose,
            "to": self.to,
            "to_hash": self.to_hash,
            "action": self.action,
            "channel": self.channel,
            "reasons": list(self.reasons),
            "twilio_code": self.twilio_code,
            "enforced": self.enforced,
            "cache_hit": self.cache_hit,
            "facts": None
            if f is None
            else {
                "country": f.country_code,
                "line_type": f.line_type,
                "carrier": f.carrier_name,
                "source": f.source,
                "fetched_at": f.fetched_at,
            },
            "timings_us": {
                "normalize": us(normalized - start),
                "suppress": us(suppressed - normalized),
                "enrich": us(enriched - suppressed),
                "total": us(end - start),
            },
        }
