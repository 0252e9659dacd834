"""Frozen values every pipeline step shares.

This module is a leaf: it imports none of the steps, no network, Redis or Flask.
Dataclasses keep the hot path cheap; pydantic's ``TypeAdapter`` serialises them
for the Redis stores and the idempotency records.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

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

FactsSource = Literal["local", "cache", "lookup"]
PhoneKind = Literal["e164", "short_code", "alphanumeric", "invalid"]


class Action(str, enum.Enum):
    """What the gate does with one attempt."""

    SMS = "sms"
    VOICE = "voice"
    VERIFY_SMS = "verify_sms"
    VERIFY_CALL = "verify_call"
    TOTP = "totp"
    EMAIL = "email"
    REFUSE = "refuse"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Phone:
    """The local verdict on one input string (step 1, no network).

    ``e164`` is set for every parseable number, valid or not, so a refusal can
    still be masked and audited; ``problem`` names why it cannot be reached.
    """

    raw: str
    kind: PhoneKind
    e164: str | None = None
    region: str | None = None  # ISO 3166 alpha-2 from the parse, e.g. "US", "GG"
    calling_code: int | None = None
    local_line_type: str | None = None  # what phonenumbers alone can tell, in Lookup's words
    problem: str | None = None  # "not_a_number", "impossible", "invalid", "short_code", "alphanumeric"

    @property
    def ok(self) -> bool:
        return self.problem is None and self.e164 is not None


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
    fields: tuple[str, ...] = ()


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


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the gate did: the action taken, Twilio's SID when it sent, the decision behind it.

    ``detail`` carries action-specific data, e.g. the TOTP provisioning URI or
    the Verify status. ``replayed`` is True when an idempotency key returned a
    stored outcome and nothing was sent.
    """

    action: Action
    decision: Decision
    sid: str | None = None
    status: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """The latest delivery status stored for one message or call SID."""

    sid: str
    status: str
    error_code: int | None = None
    updated_at: float = 0.0
    to_hash: str | None = None
