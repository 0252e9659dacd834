"""The sans-I/O pipeline (gatekeeper.pipeline.decide) driven by hand: no stores, no network."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from gatekeeper.errors import InvalidArgument
from gatekeeper.models import Action, PhoneFacts, SendRequest
from gatekeeper.pipeline import Ask, Decided, Need, NeedFacts, NeedScreen, decide, strict_ask
from gatekeeper.policy import Policy, refuse

MOBILE = "+14155552671"
SENDER = "+15005550006"
POLICY = Policy()
Steps = Generator[Need, object, Decided]


def finish(steps: Steps, answer: object) -> Decided:
    """Send ``answer`` and expect the pipeline to end there."""
    with pytest.raises(StopIteration) as end:
        steps.send(answer)
    assert isinstance(end.value.value, Decided)
    return end.value.value


def first_answer(steps: Steps) -> Decided:
    """Start the pipeline and expect it to end without a need."""
    with pytest.raises(StopIteration) as end:
        next(steps)
    assert isinstance(end.value.value, Decided)
    return end.value.value


def facts(line_type: str | None, source: str = "cache") -> PhoneFacts:
    return PhoneFacts(MOBILE, country_code="US", line_type=line_type, source=source)  # type: ignore[arg-type]


def test_an_invalid_number_is_refused_without_any_need() -> None:
    """A string that is not a number ends the pipeline at the first next() with a 21211 refusal."""
    decided = first_answer(decide("not a number", "notify", POLICY, Ask(), default_country="US"))
    assert decided.decision.action is Action.REFUSE
    assert decided.decision.twilio_code == 21211
    assert decided.decision.reasons == ("number:not_a_number",)
    assert decided.phone is not None and decided.phone.problem == "not_a_number"


def test_an_invalid_number_for_mfa_is_refused_with_verifys_code() -> None:
    """The same refusal for mfa carries Verify's code 60200."""
    decided = first_answer(decide("12", "mfa", POLICY, Ask(), default_country="US"))
    assert (decided.decision.action, decided.decision.twilio_code) == (Action.REFUSE, 60200)


def test_a_denied_country_is_refused_before_screening() -> None:
    """A country the policy denies is refused locally (21408) without asking for the stores."""
    policy = Policy(deny_countries=frozenset({"US"}))
    decided = first_answer(decide(MOBILE, "notify", policy, Ask(), default_country=None))
    assert decided.decision.twilio_code == 21408
    assert decided.decision.reasons == ("country:denied:US",)


def test_a_valid_number_asks_to_be_screened_first() -> None:
    """The first need of a valid number is NeedScreen with the parsed number, policy, sender and country."""
    steps = decide("(415) 555-2671", "notify", POLICY, Ask(country="US", sender=SENDER), default_country=None)
    need = next(steps)
    assert type(need) is NeedScreen
    assert need.phone.e164 == MOBILE
    assert (need.policy, need.sender, need.country) == (POLICY, SENDER, "US")


def test_a_screening_refusal_ends_without_asking_for_facts() -> None:
    """Answering NeedScreen with an opt-out verdict ends the pipeline with a 21610 refusal and no facts."""
    steps = decide(MOBILE, "notify", POLICY, Ask(), default_country=None)
    assert type(next(steps)) is NeedScreen
    decided = finish(steps, refuse("opted_out", "opted_out:account"))
    d = decided.decision
    assert (d.action, d.twilio_code, d.reasons, d.facts) == (Action.REFUSE, 21610, ("opted_out:account",), None)
    assert decided.number == MOBILE


def test_clear_screening_asks_for_facts_and_routes_a_landline_to_voice() -> None:
    """Answering None yields NeedFacts; cached landline facts route notify to a voice call."""
    steps = decide(MOBILE, "notify", POLICY, Ask(), default_country=None)
    next(steps)
    need = steps.send(None)
    assert type(need) is NeedFacts
    assert need.phone.e164 == MOBILE and need.policy is POLICY
    landline = facts("landline")
    decided = finish(steps, (landline, None))
    d = decided.decision
    assert d.action is Action.VOICE
    assert d.reasons == ("line_type:landline", "fallback:voice")
    assert d.facts is landline and d.cache_hit is True


def test_a_mobile_routes_to_sms() -> None:
    """Mobile facts route notify to SMS, with no reasons to add."""
    steps = decide(MOBILE, "notify", POLICY, Ask(), default_country=None)
    next(steps)
    steps.send(None)
    decided = finish(steps, (facts("mobile", "lookup"), None))
    assert (decided.decision.action, decided.decision.reasons, decided.decision.cache_hit) == (Action.SMS, (), False)


def test_a_lookup_error_routes_on_local_facts() -> None:
    """A Lookup error answer is routed on the local facts, with lookup:unavailable:<reason> in the reasons."""
    steps = decide(MOBILE, "notify", POLICY, Ask(), default_country=None)
    next(steps)
    steps.send(None)
    decided = finish(steps, (facts(None, "local"), "timeout"))
    d = decided.decision
    assert d.action is Action.SMS
    assert d.reasons == ("lookup:unavailable:timeout", "on_lookup_error:allow_local")


def test_a_lookup_error_is_refused_when_the_policy_says_so() -> None:
    """With on_lookup_error="refuse" a Lookup error answer is a 20503 refusal."""
    policy = Policy(on_lookup_error="refuse")
    steps = decide(MOBILE, "notify", policy, Ask(), default_country=None)
    next(steps)
    steps.send(None)
    decided = finish(steps, (facts(None, "local"), "http:503"))
    assert (decided.decision.action, decided.decision.twilio_code) == (Action.REFUSE, 20503)
    assert decided.decision.reasons[0] == "lookup:unavailable:http:503"


def test_the_marks_are_four_non_decreasing_floats() -> None:
    """Decided.marks holds a perf_counter mark per step, in order."""
    steps = decide(MOBILE, "notify", POLICY, Ask(), default_country=None)
    next(steps)
    steps.send(None)
    marks = finish(steps, (facts("mobile"), None)).marks
    assert len(marks) == 4
    assert all(isinstance(m, float) for m in marks)
    assert list(marks) == sorted(marks)


def test_an_email_address_is_decided_without_any_need() -> None:
    """With channel="email" an address ends at once as Action.EMAIL to the stripped address."""
    decided = first_answer(decide(" alex@example.com ", "mfa", POLICY, Ask(channel="email"), default_country=None))
    assert decided.decision.action is Action.EMAIL
    assert decided.decision.to == "alex@example.com" and decided.number == "alex@example.com"
    assert decided.decision.reasons == ("channel:email",)
    assert decided.phone is None
    assert len(decided.marks) == 4


def test_an_invalid_email_address_is_refused() -> None:
    """An address that is not name@domain.tld is refused (email:invalid) without any need."""
    decided = first_answer(decide("alex@localhost", "mfa", POLICY, Ask(channel="email"), default_country=None))
    assert decided.decision.action is Action.REFUSE
    assert decided.decision.reasons == ("email:invalid",)
    assert decided.decision.twilio_code == 60200


def test_an_address_without_the_email_channel_is_no_number() -> None:
    """Without channel="email" an address is parsed as a number and refused as one."""
    decided = first_answer(decide("alex@example.com", "notify", POLICY, Ask(), default_country="US"))
    assert (decided.decision.action, decided.decision.twilio_code) == (Action.REFUSE, 21211)


def test_strict_ask_for_sms_keeps_to_sms() -> None:
    """An SMS request asks strictly for "sms" with its sender; reroute_landline only with dropin_reroute."""
    request = SendRequest(Action.SMS, body="hi", from_=SENDER)
    ask = strict_ask(request, "US", dropin_reroute=False)
    assert ask == Ask("US", "sms", SENDER, strict=True, reroute_landline=False, have_email=False)
    assert strict_ask(request, "US", dropin_reroute=True).reroute_landline is True


def test_strict_ask_uses_the_messaging_service_as_sender() -> None:
    """Without from_ the Messaging Service SID is the sender whose opt-outs apply."""
    sid = "MG" + "0" * 32
    ask = strict_ask(SendRequest(Action.SMS, body="hi", messaging_service_sid=sid), None, dropin_reroute=False)
    assert ask.sender == sid


def test_strict_ask_reroutes_only_sms() -> None:
    """dropin_reroute does not set reroute_landline for a call or a Verify request."""
    voice = strict_ask(SendRequest(Action.VOICE, from_=SENDER), None, dropin_reroute=True)
    verify = strict_ask(SendRequest(Action.VERIFY_SMS), None, dropin_reroute=True)
    assert (voice.channel, voice.reroute_landline) == ("voice", False)
    assert (verify.channel, verify.reroute_landline) == ("sms", False)


def test_strict_ask_for_email_says_whether_an_address_is_given() -> None:
    """An EMAIL request asks for "email" and have_email follows request.email."""
    ask = strict_ask(SendRequest(Action.EMAIL, email="alex@example.com"), None, dropin_reroute=False)
    assert (ask.channel, ask.have_email) == ("email", True)


@pytest.mark.parametrize("action", [Action.TOTP, Action.REFUSE])
def test_strict_ask_refuses_actions_a_caller_cannot_ask_for(action: Action) -> None:
    """TOTP and REFUSE are not channels a request can ask for: InvalidArgument."""
    with pytest.raises(InvalidArgument, match=action.value):
        strict_ask(SendRequest(action), None, dropin_reroute=False)


@pytest.mark.parametrize(("reroute", "action", "code"), [(False, Action.REFUSE, 21614), (True, Action.VOICE, None)])
def test_a_strict_sms_to_a_landline(reroute: bool, action: Action, code: int | None) -> None:
    """A strict text to a landline is refused (21614) unless the drop-in reroutes it to a call."""
    ask = strict_ask(SendRequest(Action.SMS, body="hi", from_=SENDER), None, dropin_reroute=reroute)
    steps = decide(MOBILE, "notify", POLICY, ask, default_country=None)
    next(steps)
    steps.send(None)
    decided = finish(steps, (facts("landline"), None))
    assert (decided.decision.action, decided.decision.twilio_code) == (action, code)
