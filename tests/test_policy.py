"""Steps 4a and 4b: pure rules and routing, each firing rule adding a reason."""

from __future__ import annotations

import dataclasses

import pytest

from gatekeeper.models import Action, Decision, PhoneFacts
from gatekeeper.phone import normalize
from gatekeeper.policy import Policy, evaluate, expand_line_types, screen_number, screen_suppression
from gatekeeper.router import route
from gatekeeper.settings import Settings

POLICIES = Settings().policies()
NOTIFY, MFA = POLICIES["notify"], POLICIES["mfa"]


def facts(line_type: str | None, **kw: object) -> PhoneFacts:
    return PhoneFacts(e164="+14155552671", country_code="US", line_type=line_type, source="lookup", valid=True, **kw)


def decide(line_type: str | None, purpose: str = "notify", policy: Policy | None = None, **kw: object) -> Decision:
    pol = policy or POLICIES[purpose]
    f = facts(line_type)
    return route(evaluate(f, pol), f, purpose, pol, **kw)


@pytest.mark.parametrize(
    ("line_type", "purpose", "action", "reasons"),
    [
        ("mobile", "notify", Action.SMS, ()),
        ("nonFixedVoip", "notify", Action.SMS, ()),
        ("landline", "notify", Action.VOICE, ("line_type:landline", "fallback:voice")),
        (None, "notify", Action.SMS, ()),
        ("mobile", "mfa", Action.VERIFY_SMS, ()),
        ("nonFixedVoip", "mfa", Action.TOTP, ("line_type:nonFixedVoip", "mfa:voip:totp", "fallback:totp")),
        ("fixedVoip", "mfa", Action.TOTP, ("line_type:fixedVoip", "mfa:voip:totp", "fallback:totp")),
        ("landline", "mfa", Action.VERIFY_CALL, ("line_type:landline", "fallback:call")),
    ],
)
def test_documented_defaults(line_type: str | None, purpose: str, action: Action, reasons: tuple[str, ...]) -> None:
    """The defaults in config/gatekeeper.toml: SMS for mobiles, voice for landlines, TOTP for VoIP on MFA."""
    d = decide(line_type, purpose)
    assert (d.action, d.reasons) == (action, reasons)


def test_strict_routing_refuses_instead_of_switching_channel() -> None:
    """The drop-in's contract: the requested channel or a refusal with Twilio's code."""
    assert (decide("landline", strict=True).action, decide("landline", strict=True).twilio_code) == (
        Action.REFUSE,
        21614,
    )
    rerouted = decide("landline", strict=True, reroute_landline=True)
    assert rerouted.action is Action.VOICE
    assert decide("landline", channel="voice", strict=True).action is Action.VOICE
    voip = decide("nonFixedVoip", "mfa", strict=True)
    assert (voip.action, voip.twilio_code) == (Action.REFUSE, 60205)
    land = decide("landline", "mfa", strict=True)
    assert (land.action, land.twilio_code) == (Action.REFUSE, 60205)
    assert decide("landline", "mfa", channel="voice", strict=True).action is Action.VERIFY_CALL


def test_policy_knobs() -> None:
    """landline=refuse, voip=email/refuse/allow, deny and flag lists each change the action and say why."""
    refuse_landline = dataclasses.replace(NOTIFY, landline="refuse")
    d = decide("landline", policy=refuse_landline)
    assert (d.action, d.twilio_code, d.reasons) == (Action.REFUSE, 21614, ("line_type:landline", "landline:refuse"))
    email = dataclasses.replace(MFA, voip="email")
    assert decide("nonFixedVoip", "mfa", email, have_email=True).action is Action.EMAIL
    assert decide("nonFixedVoip", "mfa", email).reasons[-1] == "email:missing"
    assert decide("nonFixedVoip", "mfa", dataclasses.replace(MFA, voip="refuse")).twilio_code == 60205
    assert decide("nonFixedVoip", "mfa", dataclasses.replace(MFA, voip="allow")).action is Action.VERIFY_SMS
    deny = dataclasses.replace(NOTIFY, deny_line_types=frozenset({"premium"}))
    d = decide("premium", policy=deny)
    assert (d.action, d.twilio_code, d.reasons) == (Action.REFUSE, 21614, ("line_type:denied:premium",))
    flag = dataclasses.replace(NOTIFY, flag_line_types=frozenset({"tollFree"}))
    d = decide("tollFree", policy=flag)
    assert (d.action, d.reasons) == (Action.SMS, ("line_type:flagged:tollFree",))


def test_country_rules_from_the_local_parse() -> None:
    """Allow and deny lists refuse as 21408 from the parse alone, naming the country."""
    us_only = dataclasses.replace(NOTIFY, allow_countries=frozenset({"US"}))
    verdict = screen_number(normalize("+447400123456"), us_only)
    assert verdict is not None and verdict.reasons == ("country:not_allowed:GB",) and verdict.refusal == "country"
    no_gb = dataclasses.replace(NOTIFY, deny_countries=frozenset({"GB"}))
    assert screen_number(normalize("+447400123456"), no_gb).reasons == ("country:denied:GB",)
    assert screen_number(normalize("+14155552671"), us_only) is None
    assert screen_number(normalize("+1415"), NOTIFY).reasons == ("number:impossible",)


def test_suppression_rules() -> None:
    """Opt-outs refuse notify (21610) but not MFA by default; failure suppression refuses both."""
    assert screen_suppression("*", None, NOTIFY).reasons == ("opted_out:account",)
    assert screen_suppression("+15005550006", None, NOTIFY).reasons == ("opted_out:sender",)
    assert screen_suppression("*", None, MFA) is None
    assert screen_suppression(None, "failures:3", MFA).refusal == "suppressed"
    assert screen_suppression(None, None, NOTIFY) is None


def test_lookup_errors_and_carrier_errors() -> None:
    """on_lookup_error refuses (20503) or allows local facts, and says so; carrier errors are recorded."""
    local = PhoneFacts(e164="+14155552671", country_code="US", source="local")
    v = evaluate(local, MFA, lookup_error="http_503")
    assert (v.allowed, v.refusal, v.reasons) == (
        False,
        "lookup_unavailable",
        ("lookup:unavailable:http_503", "on_lookup_error:refuse"),
    )
    v = evaluate(local, NOTIFY, lookup_error="network:ConnectionError")
    assert v.allowed and v.reasons == ("lookup:unavailable:network:ConnectionError", "on_lookup_error:allow_local")
    v = evaluate(facts("mobile", carrier_error_code=60600), NOTIFY)
    assert v.allowed and v.reasons == ("carrier:error:60600",)
    v = evaluate(facts("mobile", carrier_error_code=60600), dataclasses.replace(NOTIFY, carrier_error="refuse"))
    assert not v.allowed


def test_lookup_says_invalid_and_risk() -> None:
    """valid=false from Lookup refuses as invalid; a pumping-risk score above the maximum refuses."""
    bad = PhoneFacts(e164="+14155552671", source="lookup", valid=False)
    assert evaluate(bad, NOTIFY).reasons == ("lookup:invalid",)
    risky = facts("mobile", sms_pumping_risk_score=90)
    assert evaluate(risky, dataclasses.replace(MFA, max_sms_pumping_risk=80)).reasons == ("sms_pumping_risk:90",)
    assert evaluate(risky, MFA).allowed


def test_line_type_aliases() -> None:
    """'voip' in config means both VoIP kinds; an unknown name is an error naming it."""
    assert expand_line_types(["voip", "premium"]) == {"fixedVoip", "nonFixedVoip", "premium"}
    with pytest.raises(ValueError, match="landlin"):
        expand_line_types(["landlin"])
