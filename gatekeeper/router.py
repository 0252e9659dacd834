"""Step 4b, route: verdict + purpose + requested channel → one Decision. Pure.

Two callers, two contracts. The routing API (``gate.notify``,
``gate.start_verification``) asks with ``strict=False`` and gets the best
channel: voice for a landline, TOTP or email for VoIP on MFA. The drop-in
client asks with ``strict=True`` for the channel its caller chose and gets
either that channel or a refusal, never a different channel.
"""

from __future__ import annotations

from typing import Literal

from gatekeeper.models import VOIP_LINE_TYPES, Action, Decision, PhoneFacts, Purpose
from gatekeeper.policy import Policy, RefusalKind, Verdict

#: The channel a caller asks for; ``None`` and ``"sms"`` both mean "a text, or what the policy routes it to".
Channel = Literal["sms", "voice", "email"]

#: Verify's channel names (as ``start_verification`` takes them): the channel in the router's words, and the
#: action that sends it.
VERIFY_CHANNELS: dict[str, tuple[Channel, Action]] = {
    "sms": ("sms", Action.VERIFY_SMS),
    "call": ("voice", Action.VERIFY_CALL),
    "voice": ("voice", Action.VERIFY_CALL),
    "email": ("email", Action.EMAIL),
}
#: The channel each action is when a caller asks for it: what the drop-in's strict decision keeps to.
ASKED_CHANNEL: dict[Action, Channel] = {
    Action.SMS: "sms",
    Action.VOICE: "voice",
    Action.VERIFY_SMS: "sms",
    Action.VERIFY_CALL: "voice",
    Action.EMAIL: "email",
}

# The code Twilio itself would answer for each kind of refusal, per purpose.
_NOTIFY_CODES: dict[RefusalKind, int] = {
    "invalid": 21211,
    "country": 21408,
    "opted_out": 21610,
    "suppressed": 21610,
    "line_type": 21614,
    "lookup_unavailable": 20503,
    "risk": 60410,
    "store_unavailable": 20503,
}
_MFA_CODES: dict[RefusalKind, int] = {
    **_NOTIFY_CODES,
    "invalid": 60200,
    "country": 60605,
    "line_type": 60205,
}


def twilio_code(kind: RefusalKind, purpose: Purpose) -> int:
    return (_MFA_CODES if purpose == "mfa" else _NOTIFY_CODES)[kind]


def _mode(policy: Policy, reasons: tuple[str, ...]) -> tuple[bool, tuple[str, ...]]:
    """Observe mode decides as usual but marks the decision as not enforced, and says so."""
    if policy.mode == "observe":
        return False, (*reasons, "mode:observe")
    return True, reasons


def refusal(to: str, purpose: Purpose, verdict: Verdict, facts: PhoneFacts | None, policy: Policy) -> Decision:
    kind = verdict.refusal or "invalid"
    enforced, reasons = _mode(policy, verdict.reasons)
    return Decision(
        action=Action.REFUSE,
        to=to,
        purpose=purpose,
        reasons=reasons,
        facts=facts,
        twilio_code=twilio_code(kind, purpose),
        enforced=enforced,
        cache_hit=facts is not None and facts.source == "cache",
    )


def route(
    verdict: Verdict,
    facts: PhoneFacts,
    purpose: Purpose,
    policy: Policy,
    *,
    channel: Channel | None = None,
    strict: bool = False,
    reroute_landline: bool = False,
    have_email: bool = False,
) -> Decision:
    """Choose the action for an evaluated number."""
    if not verdict.allowed:
        return refusal(facts.e164, purpose, verdict, facts, policy)
    if purpose == "mfa":
        action, extra, code = _route_mfa(facts.line_type, policy, channel, strict, have_email)
    else:
        action, extra, code = _route_notify(facts.line_type, policy, channel, strict, reroute_landline)
    enforced, reasons = _mode(policy, verdict.reasons + extra)
    return Decision(
        action=action,
        to=facts.e164,
        purpose=purpose,
        reasons=reasons,
        facts=facts,
        twilio_code=code,
        enforced=enforced,
        cache_hit=facts.source == "cache",
    )


def email(address: str, purpose: Purpose, policy: Policy) -> Decision:
    """A code to an email address the caller named (Verify's email channel): nothing about it to refuse."""
    enforced, reasons = _mode(policy, ("channel:email",))
    return Decision(action=Action.EMAIL, to=address, purpose=purpose, reasons=reasons, enforced=enforced)


_Routed = tuple[Action, tuple[str, ...], "int | None"]


def _route_notify(
    line_type: str | None, policy: Policy, channel: Channel | None, strict: bool, reroute: bool
) -> _Routed:
    if channel == "voice":
        return Action.VOICE, (), None
    if line_type != "landline":
        return Action.SMS, (), None
    why = ("line_type:landline",)
    if strict and not reroute:
        return Action.REFUSE, (*why, "channel:sms_unreachable"), 21614
    if policy.landline == "voice":
        return Action.VOICE, (*why, "fallback:voice"), None
    return Action.REFUSE, (*why, "landline:refuse"), 21614


def _route_mfa(
    line_type: str | None, policy: Policy, channel: Channel | None, strict: bool, have_email: bool
) -> _Routed:
    if channel == "email":
        return Action.EMAIL, (), None
    if channel == "voice":
        return Action.VERIFY_CALL, (), None
    if line_type == "landline":
        why: tuple[str, ...] = ("line_type:landline",)
        if not strict and policy.landline == "voice":
            return Action.VERIFY_CALL, (*why, "fallback:call"), None
        return Action.REFUSE, (*why, "channel:sms_unreachable"), 60205
    if line_type in VOIP_LINE_TYPES and policy.voip != "allow":
        why = (f"line_type:{line_type}", f"mfa:voip:{policy.voip}")
        if strict or policy.voip == "refuse":
            return Action.REFUSE, why, 60205
        if policy.voip == "email":
            if have_email:
                return Action.EMAIL, (*why, "fallback:email"), None
            return Action.REFUSE, (*why, "email:missing"), 60205
        return Action.TOTP, (*why, "fallback:totp"), None
    return Action.VERIFY_SMS, (), None
