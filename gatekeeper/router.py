"""Step 4b, route: verdict + purpose + requested channel → one Decision. Pure.

Two callers, two contracts. The routing API (``gate.notify``,
``gate.start_verification``) asks with ``strict=False`` and gets the best
channel: voice for a landline, TOTP or email for VoIP on MFA. The drop-in
client asks with ``strict=True`` for the channel its caller chose and gets
either that channel or a refusal, never a different channel.

A channel address decides its own channel: ``whatsapp:``/``rcs:``/``messenger:`` are messages on
that channel (line types mean nothing there: WhatsApp reaches a landline too), ``sip:`` and
``client:`` are calls and nothing else. Verify's ``whatsapp`` ignores line types, ``sna`` needs a
mobile number, ``auto`` is gated as SMS. A Studio execution is gated like a send, whatever the
Flow then does.
"""

from __future__ import annotations

from typing import Literal

from gatekeeper.models import CALL_ADDRESS_CHANNELS, VOIP_LINE_TYPES, Action, Decision, PhoneFacts, Purpose
from gatekeeper.policy import Policy, RefusalKind, Verdict, refuse

#: The channel a caller asks for; ``None`` and ``"sms"`` both mean "a text, or what the policy routes it to".
Channel = Literal["sms", "voice", "email", "whatsapp", "sna", "auto", "studio"]

#: Verify's channel names (as ``start_verification`` takes them): the channel in the router's words, and the
#: action that sends it.
VERIFY_CHANNELS: dict[str, tuple[Channel, Action]] = {
    "sms": ("sms", Action.VERIFY_SMS),
    "call": ("voice", Action.VERIFY_CALL),
    "voice": ("voice", Action.VERIFY_CALL),
    "email": ("email", Action.EMAIL),
    "whatsapp": ("whatsapp", Action.VERIFY_WHATSAPP),
    "sna": ("sna", Action.VERIFY_SNA),
    "auto": ("auto", Action.VERIFY_AUTO),
}
#: The channel each action is when a caller asks for it: what the drop-in's strict decision keeps to.
ASKED_CHANNEL: dict[Action, Channel] = {
    Action.SMS: "sms",
    Action.VOICE: "voice",
    Action.VERIFY_SMS: "sms",
    Action.VERIFY_CALL: "voice",
    Action.EMAIL: "email",
    Action.VERIFY_WHATSAPP: "whatsapp",
    Action.VERIFY_SNA: "sna",
    Action.VERIFY_AUTO: "auto",
    Action.STUDIO: "studio",
}
#: The channel each action reaches a person on, as ``[policy] deny_channels`` names it (voice and messages
#: to an address are named by the address: ``sip``, ``client``, ``messenger``, ``rcs``).
ACTION_CHANNEL: dict[Action, str] = {
    Action.SMS: "sms",
    Action.WHATSAPP: "whatsapp",
    Action.VOICE: "voice",
    Action.VERIFY_SMS: "sms",
    Action.VERIFY_CALL: "voice",
    Action.VERIFY_WHATSAPP: "whatsapp",
    Action.VERIFY_SNA: "sna",
    Action.VERIFY_AUTO: "auto",
    Action.EMAIL: "email",
    Action.STUDIO: "studio",
}
_VERIFY_ACTIONS = frozenset({Action.VERIFY_SMS, Action.VERIFY_CALL, Action.VERIFY_WHATSAPP, Action.VERIFY_SNA,
                             Action.VERIFY_AUTO})

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
    "channel": 21612,
    "velocity": 20429,  # too many requests: Twilio's own answer to a rate it will not take
    "spend": 20429,  # a cap of this account's own: no Twilio code says "budget", this one says "not now"
    "quiet_hours": 20429,  # not now: the recipient's night
}
_MFA_CODES: dict[RefusalKind, int] = {
    **_NOTIFY_CODES,
    "invalid": 60200,
    "country": 60605,
    "line_type": 60205,
    "channel": 60200,
    "velocity": 60203,  # max send attempts reached
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
    facts: PhoneFacts | None,
    purpose: Purpose,
    policy: Policy,
    *,
    to: str | None = None,
    address: str | None = None,
    channel: Channel | None = None,
    strict: bool = False,
    reroute_landline: bool = False,
    have_email: bool = False,
) -> Decision:
    """Choose the action for an evaluated destination.

    ``to`` is what goes on ``To`` (default: the facts' number); ``address`` the destination's own
    channel (``whatsapp``, ``sip``…), None for a plain number; ``facts`` is None for an address
    with no number behind it.
    """
    target = to or (facts.e164 if facts is not None else "")
    if not verdict.allowed:
        return refusal(target, purpose, verdict, facts, policy)
    line_type = facts.line_type if facts is not None else None
    if address is not None and channel != "studio":
        action, extra, code = _route_address(address, purpose, channel, strict)
    elif purpose == "mfa":
        action, extra, code = _route_mfa(line_type, policy, channel, strict, have_email)
    else:
        action, extra, code = _route_notify(line_type, policy, channel, strict, reroute_landline)
    if action in _VERIFY_ACTIONS and facts is not None:
        target = facts.e164  # Verify takes the bare number, the channel apart
    named = ACTION_CHANNEL.get(action) if address is None or action is Action.STUDIO else address
    if named is not None and named in policy.deny_channels and action is not Action.REFUSE:
        return refusal(target, purpose, refuse("channel", *verdict.reasons, f"channel:denied:{named}"), facts, policy)
    enforced, reasons = _mode(policy, verdict.reasons + extra)
    return Decision(
        action=action,
        to=target,
        purpose=purpose,
        reasons=reasons,
        facts=facts,
        twilio_code=code,
        enforced=enforced,
        cache_hit=facts is not None and facts.source == "cache",
    )


def email(address: str, purpose: Purpose, policy: Policy) -> Decision:
    """A code to an email address the caller named (Verify's email channel): nothing about it to refuse."""
    enforced, reasons = _mode(policy, ("channel:email",))
    return Decision(action=Action.EMAIL, to=address, purpose=purpose, reasons=reasons, enforced=enforced)


_Routed = tuple[Action, tuple[str, ...], "int | None"]


def _route_address(address: str, purpose: Purpose, channel: Channel | None, strict: bool) -> _Routed:
    """A destination that names its channel: only that channel reaches it."""
    why = (f"address:{address}",)
    unreachable = 60200 if purpose == "mfa" else 21211
    if address in CALL_ADDRESS_CHANNELS:  # sip:, client: can only be called
        if channel == "voice":
            return Action.VOICE, (), None
        if channel in (None, "sms") and not strict:  # the routing API says the message on a call
            return Action.VOICE, (*why, "fallback:voice"), None
        return Action.REFUSE, (*why, "channel:calls_only"), unreachable
    if channel in (None, "sms"):  # a message on the address's own channel
        return (Action.WHATSAPP if address == "whatsapp" else Action.MESSAGE), (), None
    return Action.REFUSE, (*why, "channel:messages_only"), unreachable


def _route_notify(
    line_type: str | None, policy: Policy, channel: Channel | None, strict: bool, reroute: bool
) -> _Routed:
    if channel == "voice":
        return Action.VOICE, (), None
    if channel == "studio":  # the Flow decides how to reach them; the gate tells it the facts
        return Action.STUDIO, (), None
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
    if channel == "studio":
        return Action.STUDIO, (), None
    if channel == "whatsapp":  # WhatsApp reaches whatever number has it: line types mean nothing
        return Action.VERIFY_WHATSAPP, (), None
    if channel == "sna":  # Silent Network Auth asks the mobile carrier: nothing else can answer it
        if line_type == "mobile":
            return Action.VERIFY_SNA, (), None
        return Action.REFUSE, (f"line_type:{line_type or 'unknown'}", "channel:sna_needs_mobile"), 60205
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
    return (Action.VERIFY_AUTO if channel == "auto" else Action.VERIFY_SMS), (), None
