"""Step 4a, evaluate: facts + policy → a verdict with reason codes. Pure.

Each check returns ``None`` when it has nothing to say, so the gate can stop
at the first refusal without paying for later steps (a number refused by its
country never costs a Lookup). Every rule that fires adds a reason code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from gatekeeper.errors import ConfigError, InvalidArgument
from gatekeeper.models import CHANNEL_SCOPE_PREFIX, LINE_TYPES, PURPOSES, VOIP_LINE_TYPES, Phone, PhoneFacts

RefusalKind = Literal[
    "invalid",
    "country",
    "opted_out",
    "suppressed",
    "line_type",
    "lookup_unavailable",
    "risk",
    "store_unavailable",
    "channel",
    "velocity",
    "spend",
    "quiet_hours",
]
LandlineRule = Literal["voice", "refuse"]
VoipRule = Literal["totp", "email", "refuse", "allow"]
LookupErrorRule = Literal["refuse", "allow_local"]
Mode = Literal["enforce", "observe"]

#: Line-type names accepted in configuration: Lookup's own, plus the classic alias ``voip``.
LINE_TYPE_ALIASES: dict[str, frozenset[str]] = {"voip": VOIP_LINE_TYPES}


def expand_line_types(names: Iterable[str]) -> frozenset[str]:
    """Lookup line-type names with aliases expanded; an unknown name is an ``InvalidArgument`` naming it."""
    out: set[str] = set()
    for name in names:
        if name in LINE_TYPE_ALIASES:
            out |= LINE_TYPE_ALIASES[name]
        elif name in LINE_TYPES:
            out.add(name)
        else:
            allowed = ", ".join(sorted(LINE_TYPES | LINE_TYPE_ALIASES.keys()))
            raise InvalidArgument(f"unknown line type {name!r} (allowed: {allowed})")
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules for one purpose (``notify`` or ``mfa``). Empty ``allow_countries`` allows every country."""

    allow_countries: frozenset[str] = frozenset()
    deny_countries: frozenset[str] = frozenset()
    deny_line_types: frozenset[str] = frozenset()
    flag_line_types: frozenset[str] = frozenset()
    landline: LandlineRule = "voice"
    voip: VoipRule = "allow"
    on_lookup_error: LookupErrorRule = "allow_local"
    carrier_error: Literal["allow", "refuse"] = "allow"
    max_sms_pumping_risk: int | None = None
    sim_swap: Literal["ignore", "flag", "refuse"] = "ignore"  # a SIM changed in the last 24 h
    # the number changed hands since the caller last verified it (asked only with a last-verified date, US only)
    reassigned: Literal["ignore", "flag", "refuse"] = "refuse"
    refuse_line_statuses: frozenset[str] = frozenset()  # e.g. {"inactive", "unreachable"}
    max_age_seconds: float | None = None
    mode: Mode = "enforce"
    opt_outs_block: bool = True
    fields: tuple[str, ...] = ("line_type_intelligence",)
    deny_channels: frozenset[str] = frozenset()  # e.g. {"sip", "client", "whatsapp"}; see models.CHANNELS


@dataclass(frozen=True, slots=True)
class Verdict:
    """Allowed or not, why, and what kind of refusal (the router maps it to a Twilio code)."""

    allowed: bool
    reasons: tuple[str, ...] = ()
    refusal: RefusalKind | None = None
    flagged: bool = False


def overrides(policies: Mapping[str, Policy] | None) -> dict[str, Policy]:
    """Per-purpose policies given in code, checked: a purpose other than ``notify`` or ``mfa`` is a ConfigError."""
    given = dict(policies or {})
    unknown = sorted(set(given) - set(PURPOSES))
    if unknown:
        raise ConfigError(f"policy for unknown purpose(s) {unknown}; use 'notify' or 'mfa'", key="policy")
    return given


def refuse(kind: RefusalKind, *reasons: str) -> Verdict:
    return Verdict(allowed=False, reasons=reasons, refusal=kind)


def screen_number(phone: Phone, policy: Policy) -> Verdict | None:
    """Refusals the local parse alone can make: not a number, short code, a denied channel, country.

    An address with no number behind it (``sip:``, ``client:``, ``messenger:``) has no country.
    """
    if not phone.ok:
        return refuse("invalid", f"number:{phone.problem}")
    if phone.channel is not None and phone.channel in policy.deny_channels:
        return refuse("channel", f"channel:denied:{phone.channel}")
    if phone.e164 is None:
        return None
    return screen_country(phone.region, policy)


def screen_country(region: str | None, policy: Policy) -> Verdict | None:
    country = region or "ZZ"
    if country in policy.deny_countries:
        return refuse("country", f"country:denied:{country}")
    if policy.allow_countries and country not in policy.allow_countries:
        return refuse("country", f"country:not_allowed:{country}")
    return None


def screen_suppression(opted_out_scope: str | None, suppression: str | None, policy: Policy) -> Verdict | None:
    """Opt-outs (when this purpose honours them) and delivery-failure suppression."""
    if opted_out_scope is not None and policy.opt_outs_block:
        if opted_out_scope == "*":
            return refuse("opted_out", "opted_out:account")
        channel = opted_out_scope.startswith(CHANNEL_SCOPE_PREFIX)
        return refuse("opted_out", "opted_out:channel" if channel else "opted_out:sender")
    if suppression is not None:
        return refuse("suppressed", suppression)
    return None


def evaluate(
    facts: PhoneFacts, policy: Policy, *, lookup_error: str | None = None, line_types: bool = True
) -> Verdict:
    """The verdict on enriched (or local-only) facts; ``line_types=False`` where line types mean nothing
    (WhatsApp reaches a landline as well as a mobile)."""
    reasons: list[str] = []
    if lookup_error is not None:
        # The gate's own holds on Lookup name themselves; Lookup failing says why it failed.
        held = lookup_error in ("rate_limited", "breaker_open")
        reasons.append(f"lookup:{lookup_error}" if held else f"lookup:unavailable:{lookup_error}")
        if policy.on_lookup_error == "refuse":
            return refuse("lookup_unavailable", *reasons, "on_lookup_error:refuse")
        reasons.append("on_lookup_error:allow_local")
    if facts.valid is False:
        return refuse("invalid", *reasons, "lookup:invalid")
    if facts.source != "local":
        country_refusal = screen_country(facts.country_code, policy)
        if country_refusal is not None:
            return refuse("country", *reasons, *country_refusal.reasons)
    if facts.carrier_error_code is not None:
        reasons.append(f"carrier:error:{facts.carrier_error_code}")
        if policy.carrier_error == "refuse":
            return refuse("lookup_unavailable", *reasons)
    line_type = facts.line_type if line_types else None
    if line_type is not None and line_type in policy.deny_line_types:
        return refuse("line_type", *reasons, f"line_type:denied:{line_type}")
    risky = _risk(facts, policy, reasons)
    if risky is not None:
        return risky
    flagged = line_type is not None and line_type in policy.flag_line_types
    if flagged:
        reasons.append(f"line_type:flagged:{line_type}")
    return Verdict(allowed=True, reasons=tuple(reasons), flagged=flagged)


def _risk(facts: PhoneFacts, policy: Policy, reasons: list[str]) -> Verdict | None:
    """Lookup's risk packages, where fetched: the pumping score and Twilio's own block, the line's status, a SIM
    swap, a reassignment (``flag`` adds its reason to ``reasons``)."""
    risk = facts.sms_pumping_risk_score
    if risk is not None and policy.max_sms_pumping_risk is not None and risk > policy.max_sms_pumping_risk:
        return refuse("risk", *reasons, f"sms_pumping_risk:{risk}")
    if facts.sms_pumping_blocked:  # Twilio's own block: a send would fail (30450) and cost the Lookup for nothing
        return refuse("risk", *reasons, "sms_pumping_risk:number_blocked")
    if facts.line_status is not None and facts.line_status in policy.refuse_line_statuses:
        return refuse("risk", *reasons, f"line_status:{facts.line_status}")
    if facts.sim_swapped and policy.sim_swap != "ignore":
        if policy.sim_swap == "refuse":
            return refuse("risk", *reasons, "sim_swap:recent")
        reasons.append("sim_swap:recent")
    if facts.reassigned == "yes" and policy.reassigned != "ignore":
        if policy.reassigned == "refuse":
            return refuse("risk", *reasons, "reassigned_number:yes")
        reasons.append("reassigned_number:yes")
    return None
