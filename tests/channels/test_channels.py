"""Step 5 (gatekeeper.channels): the registry, each channel's request, safe retries and error translation."""

from __future__ import annotations

import pickle
import random
import xml.etree.ElementTree as ET

import pytest
import requests
from support import FakeClock, FakeTwilio
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.rest import Client

from gatekeeper.channels import Channel, registry
from gatekeeper.channels.base import SendPolicy, SendUnavailable, nothing_sent, sdk_params, translated
from gatekeeper.channels.sms import MessagingChannel
from gatekeeper.channels.totp import TotpChannel
from gatekeeper.channels.verify import VerifyChannel
from gatekeeper.channels.voice import VoiceChannel
from gatekeeper.errors import GateRefused, InvalidArgument, SendFailed, SendRejected
from gatekeeper.models import Action, Decision, SendRequest
from gatekeeper.retries import Backoff

MOBILE, LANDLINE = "+14155552671", "+14155552672"
FROM = "+15005550006"
VERIFY_SID = "VA" + "0" * 32
URI = "/2010-04-01/Accounts/AC/Messages.json"
CALLBACK = "https://example.com/status"
SMS_PARAMS = {"media_url": ["https://example.com/cat.png"], "validity_period": 600}
BUSY = (429, {}, {"code": 20429, "message": "Too Many Requests", "status": 429})


def decision(action: Action, to: str = MOBILE) -> Decision:
    return Decision(action=action, to=to, purpose="mfa" if action.value.startswith("verify") else "notify")


def policy(clock: FakeClock, max_retries: int = 2) -> SendPolicy:
    """Backoff without jitter, so the recorded sleeps are exact."""
    backoff = Backoff(base_ms=250, jitter_ms=0, max_retry_after_ms=5_000, rng=random.Random(0))
    return SendPolicy(max_retries=max_retries, backoff=backoff, sleep=clock.sleep)


def sms_request(**kwargs: object) -> SendRequest:
    fields: dict[str, object] = {"body": "Your table is ready", "from_": FROM, "params": SMS_PARAMS}
    fields.update(kwargs)
    return SendRequest(Action.SMS, **fields)  # type: ignore[arg-type]


# -- the registry --------------------------------------------------------------------------
def test_registry_has_a_channel_for_every_action_but_refuse() -> None:
    """Every Action except REFUSE and DEFER (outcomes that send nothing) has a channel, and each satisfies the
    Channel protocol."""
    channels = registry(SendPolicy())
    assert set(channels) == set(Action) - {Action.REFUSE, Action.DEFER}
    for action, channel in channels.items():
        assert isinstance(channel, Channel), action


def test_registry_passes_voice_and_language_to_the_voice_channel() -> None:
    """The voice channel says its text in the voice and language the registry was given."""
    voice = registry(SendPolicy(), voice="Polly.Amy", language="en-GB")[Action.VOICE]
    assert isinstance(voice, VoiceChannel)
    assert (voice.voice, voice.language) == ("Polly.Amy", "en-GB")


# -- SMS and the voice fallback ------------------------------------------------------------
def test_sms_sends_the_params_written_for_messages(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """An SMS send carries the body, sender, status callback and the caller's Messages keywords."""
    outcome = MessagingChannel(policy(clock)).send(
        twilio_client, Action.SMS, decision(Action.SMS), sms_request(status_callback=CALLBACK)
    )
    assert len(twilio_http.sent) == 1
    sent = twilio_http.sent[0]
    assert sent["To"] == MOBILE and sent["From"] == FROM and sent["Body"] == "Your table is ready"
    assert sent["MediaUrl"] == "https://example.com/cat.png" and sent["ValidityPeriod"] == "600"
    assert sent["StatusCallback"] == CALLBACK
    assert (outcome.action, outcome.status) == (Action.SMS, "queued")
    assert outcome.sid is not None and outcome.sid.startswith("SM")
    assert twilio_http.calls == []


def test_sms_through_a_messaging_service(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A request with only a Messaging Service SID sends with MessagingServiceSid and no From."""
    sid = "MG" + "0" * 32
    request = SendRequest(Action.SMS, body="hi", messaging_service_sid=sid)
    MessagingChannel(policy(clock)).send(twilio_client, Action.SMS, decision(Action.SMS), request)
    assert twilio_http.sent[0]["MessagingServiceSid"] == sid
    assert "From" not in twilio_http.sent[0]


def test_a_voice_send_of_an_sms_request_says_the_body_and_carries_no_sms_params(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """The landline fallback calls with the body as escaped TwiML <Say>, none of the Messages keywords, and the
    calls' status callback, not the one the caller wrote for the message."""
    body = "Code <Play>http://evil</Play> & more"
    request = sms_request(body=body, status_callback=CALLBACK)
    calls_route = "https://example.com/twilio/calls/status"
    channel = registry(policy(clock), call_status_callback=calls_route)[Action.VOICE]
    outcome = channel.send(twilio_client, Action.VOICE, decision(Action.VOICE, LANDLINE), request)
    assert twilio_http.sent == []
    assert len(twilio_http.calls) == 1
    call = twilio_http.calls[0]
    assert call["To"] == LANDLINE and call["From"] == FROM and call["StatusCallback"] == calls_route
    assert not {"MediaUrl", "ValidityPeriod", "Body"} & set(call)
    root = ET.fromstring(call["Twiml"])
    assert root.tag == "Response"
    assert [(child.tag, child.text) for child in root] == [("Say", body)]
    assert (outcome.action, outcome.status) == (Action.VOICE, "queued")
    assert outcome.sid is not None and outcome.sid.startswith("CA")


def test_sdk_params_go_only_to_the_api_they_were_written_for() -> None:
    """sdk_params keeps a request's keywords for its own API, drops them for another, and drops None values."""
    request = SendRequest(Action.SMS, params={"media_url": ["https://example.com/a.png"], "smart_encoded": None})
    assert sdk_params(request, Action.SMS) == {"media_url": ["https://example.com/a.png"]}
    assert sdk_params(request, Action.VOICE) == {}
    assert sdk_params(request, Action.VERIFY_SMS) == {}


def test_a_call_request_carries_its_own_call_params(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """A request asked as a call keeps its calls.create keywords (a TwiML url) and has no TwiML of ours."""
    request = SendRequest(Action.VOICE, from_=FROM, params={"url": "https://example.com/twiml"})
    VoiceChannel(policy(clock)).send(twilio_client, Action.VOICE, decision(Action.VOICE), request)
    call = twilio_http.calls[0]
    assert call["Url"] == "https://example.com/twiml"
    assert "Twiml" not in call


def test_voice_without_from_is_invalid(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A call needs from_ (a Messaging Service cannot call): InvalidArgument, and nothing is sent."""
    request = SendRequest(Action.SMS, body="hi", messaging_service_sid="MG" + "0" * 32)
    with pytest.raises(InvalidArgument, match="from_"):
        VoiceChannel(policy(clock)).send(twilio_client, Action.VOICE, decision(Action.VOICE), request)
    assert twilio_http.calls == []


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("Code 1234\x00\x07 ready\ufffe", "Code 1234 ready"),
        ("Tab\tand\nnewline stay", "Tab\tand\nnewline stay"),
        ("Lone \ud800surrogate\uffff", "Lone surrogate"),
    ],
)
def test_characters_xml_cannot_carry_are_removed_before_say(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock, body: str, said: str
) -> None:
    """A body with control characters, U+FFFE/U+FFFF or a lone surrogate is said without them (the TwiML parses),
    and the Outcome's reasons say body:cleaned; a body XML can carry is said as it is, with no such reason."""
    outcome = VoiceChannel(policy(clock)).send(
        twilio_client, Action.VOICE, decision(Action.VOICE, LANDLINE), SendRequest(Action.SMS, body=body, from_=FROM)
    )
    root = ET.fromstring(twilio_http.calls[0]["Twiml"])
    assert [(child.tag, child.text) for child in root] == [("Say", said)]
    assert ("body:cleaned" in outcome.decision.reasons) is (said != body)


def test_a_body_of_nothing_sayable_is_invalid(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    with pytest.raises(InvalidArgument, match="nothing to say"):
        VoiceChannel(policy(clock)).send(
            twilio_client, Action.VOICE, decision(Action.VOICE), SendRequest(Action.SMS, body="\x00\x01 ", from_=FROM)
        )
    assert twilio_http.calls == []


def test_a_text_too_long_to_say_is_invalid(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A body whose TwiML passes 4000 characters is refused before any call."""
    request = SendRequest(Action.SMS, body="x" * 4000, from_=FROM)
    with pytest.raises(InvalidArgument, match="too long"):
        VoiceChannel(policy(clock)).send(twilio_client, Action.VOICE, decision(Action.VOICE), request)
    assert twilio_http.calls == []


# -- Verify and TOTP -----------------------------------------------------------------------
@pytest.mark.parametrize(("action", "channel"), [(Action.VERIFY_SMS, "sms"), (Action.VERIFY_CALL, "call")])
def test_verify_sends_to_the_decided_number(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock, action: Action, channel: str
) -> None:
    """Verify SMS and call start a verification to the decided number on Verify's own channel name."""
    request = SendRequest(action, verify_service_sid=VERIFY_SID, params={"locale": "fr"})
    outcome = VerifyChannel(policy(clock)).send(twilio_client, action, decision(action), request)
    sent = twilio_http.verifications[0]
    assert (sent["To"], sent["Channel"], sent["Locale"]) == (MOBILE, channel, "fr")
    assert (outcome.action, outcome.status) == (action, "pending")


def test_verify_without_a_service_sid_is_invalid(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """Verify needs verify_service_sid: InvalidArgument, and nothing is sent."""
    with pytest.raises(InvalidArgument, match="verify_service_sid"):
        VerifyChannel(policy(clock)).send(
            twilio_client, Action.VERIFY_SMS, decision(Action.VERIFY_SMS), SendRequest(Action.VERIFY_SMS)
        )
    assert twilio_http.verifications == []


@pytest.mark.parametrize("email", [None, "not-an-address", "alex@localhost"])
def test_verify_email_needs_a_valid_address(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock, email: str | None
) -> None:
    """The email channel needs request.email shaped like name@example.com."""
    request = SendRequest(Action.EMAIL, verify_service_sid=VERIFY_SID, email=email)
    with pytest.raises(InvalidArgument, match="email"):
        VerifyChannel(policy(clock)).send(twilio_client, Action.EMAIL, decision(Action.EMAIL), request)
    assert twilio_http.verifications == []


def test_verify_email_sends_to_the_address(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """An email verification goes to the stripped request.email, not to the decided number."""
    request = SendRequest(Action.EMAIL, verify_service_sid=VERIFY_SID, email=" alex@example.com ")
    VerifyChannel(policy(clock)).send(twilio_client, Action.EMAIL, decision(Action.EMAIL), request)
    sent = twilio_http.verifications[0]
    assert (sent["To"], sent["Channel"]) == ("alex@example.com", "email")


def test_totp_sends_nothing(twilio_http: FakeTwilio, twilio_client: Client) -> None:
    """The TOTP channel answers use_totp with the code's shape and makes no request."""
    outcome = TotpChannel().send(twilio_client, Action.TOTP, decision(Action.TOTP), SendRequest(Action.VERIFY_SMS))
    assert (outcome.action, outcome.status, outcome.sid) == (Action.TOTP, "use_totp", None)
    assert outcome.detail == {"digits": 6, "interval_seconds": 30}
    assert twilio_http.sent == twilio_http.calls == twilio_http.verifications == []


# -- retries -------------------------------------------------------------------------------
def send_sms(client: Client, clock: FakeClock, max_retries: int = 2) -> object:
    return MessagingChannel(policy(clock, max_retries)).send(
        client, Action.SMS, decision(Action.SMS), SendRequest(Action.SMS, body="hi", from_=FROM)
    )


def refused_connection() -> requests.exceptions.ConnectionError:
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    return requests.exceptions.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "refused")))


def test_a_429_is_retried_then_succeeds(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Twilio's 429 (not processed) is retried after a backoff sleep on the fake clock; one message goes out."""
    twilio_http.send_faults = [BUSY, BUSY]
    send_sms(twilio_client, clock)
    assert len(twilio_http.sent) == 1
    assert clock.sleeps == [0.25, 0.5]


def test_a_never_connected_error_is_retried(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A refused connection (the request never left) is retried."""
    twilio_http.send_faults = [refused_connection()]
    send_sms(twilio_client, clock)
    assert len(twilio_http.sent) == 1
    assert clock.sleeps == [0.25]


def test_a_read_timeout_is_not_retried(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A read timeout may have reached Twilio: no retry, SendUnavailable(may_have_sent=True) from the timeout."""
    twilio_http.send_faults = [requests.exceptions.ReadTimeout("read timed out")]
    with pytest.raises(SendUnavailable) as failed:
        send_sms(twilio_client, clock)
    assert failed.value.may_have_sent is True
    assert isinstance(failed.value.__cause__, requests.exceptions.ReadTimeout)
    assert clock.sleeps == []
    assert twilio_http.sent == []
    assert twilio_http.send_faults == []  # the one fault was met once: no second attempt


def test_retries_stop_after_max_retries(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Past max_retries the last 429 is raised as SendRejected with Twilio's status and code."""
    twilio_http.send_faults = [BUSY, BUSY, BUSY, BUSY]
    with pytest.raises(SendRejected) as rejected:
        send_sms(twilio_client, clock, max_retries=2)
    assert (rejected.value.status, rejected.value.code) == (429, 20429)
    assert len(clock.sleeps) == 2
    assert len(twilio_http.send_faults) == 1


def test_a_rejection_is_not_retried(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Twilio's 400 (e.g. 21610) is raised at once as SendRejected, chained from twilio's exception."""
    twilio_http.send_faults = [(400, {}, {"code": 21610, "message": "unsubscribed", "status": 400})]
    with pytest.raises(SendRejected) as rejected:
        send_sms(twilio_client, clock)
    assert (rejected.value.status, rejected.value.code) == (400, 21610)
    assert type(rejected.value.__cause__) is TwilioRestException
    assert clock.sleeps == []


def test_send_policy_passes_other_errors_through(clock: FakeClock) -> None:
    """An error that is neither twilio's nor requests' is raised as it is, without retries."""
    bug = RuntimeError("bug")

    def create(**kwargs: object) -> object:
        raise bug

    with pytest.raises(RuntimeError) as raised:
        policy(clock).send(create, to=MOBILE)
    assert raised.value is bug
    assert clock.sleeps == []


def test_an_rfc9457_429_is_retried(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A 429 problem-details answer (type, title, status, code) is as safe to resend as a legacy 429."""
    problem = {"type": "https://www.twilio.com/docs/errors/20429", "title": "Too Many Requests", "status": 429}
    twilio_http.send_faults = [(429, {}, {**problem, "code": 20429})]
    send_sms(twilio_client, clock)
    assert len(twilio_http.sent) == 1
    assert clock.sleeps == [0.25]


# -- translated() and nothing_sent() -------------------------------------------------------
def test_translated_maps_a_twilio_rejection_to_send_rejected() -> None:
    """TwilioRestException becomes SendRejected keeping status, code, msg and uri; still a TwilioRestException."""
    original = TwilioRestException(400, URI, msg="unsubscribed", code=21610, method="POST")
    ours = translated(original)
    assert isinstance(ours, SendRejected)
    assert isinstance(ours, TwilioRestException) and isinstance(ours, SendFailed)
    assert (ours.status, ours.code, ours.msg, ours.uri, ours.method) == (400, 21610, "unsubscribed", URI, "POST")
    assert str(ours) == "HTTP 400 error 21610: unsubscribed"


def test_translated_maps_a_connect_timeout_to_unavailable_not_sent() -> None:
    """A ConnectTimeout never reached Twilio: SendUnavailable(may_have_sent=False), still a RequestException."""
    ours = translated(requests.exceptions.ConnectTimeout("connect timed out"))
    assert isinstance(ours, SendUnavailable) and isinstance(ours, requests.RequestException)
    assert ours.may_have_sent is False


def test_translated_maps_a_read_timeout_to_unavailable_may_have_sent() -> None:
    """A ReadTimeout may have reached Twilio: SendUnavailable(may_have_sent=True), still a RequestException."""
    ours = translated(requests.exceptions.ReadTimeout("read timed out"))
    assert isinstance(ours, SendUnavailable) and isinstance(ours, requests.RequestException)
    assert ours.may_have_sent is True
    assert "ReadTimeout" in str(ours)


def test_translated_maps_a_twilio_exception_with_a_status_to_send_rejected() -> None:
    """An RFC 9457 TwilioServiceException (an int status) becomes SendRejected with its status, code and detail."""
    problem = TwilioServiceException(
        "https://www.twilio.com/docs/errors/21211", "Invalid To", 400, 21211, detail="bad number", uri=URI
    )
    ours = translated(problem)
    assert isinstance(ours, SendRejected)
    assert (ours.status, ours.code, ours.msg, ours.uri) == (400, 21211, "bad number", URI)


def test_translated_reads_any_twilio_exception_with_an_int_status() -> None:
    """A TwilioException subclass with an int status attribute and only a title still reads as SendRejected."""

    class Shaped(TwilioException):
        status = 503
        title = "Service Unavailable"

    ours = translated(Shaped())
    assert isinstance(ours, SendRejected)
    assert (ours.status, ours.msg, ours.code) == (503, "Service Unavailable", None)


@pytest.mark.parametrize("error", [RuntimeError("bug"), ValueError("bad"), TwilioException("no status")])
def test_translated_leaves_other_exceptions_alone(error: Exception) -> None:
    """Anything else (including a TwilioException without a status) comes back as the very same object."""
    assert translated(error) is error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (SendRejected(400, URI, msg="no", code=21610), True),
        (InvalidArgument("bad argument"), True),
        (ValueError("sdk argument"), True),
        (TypeError("sdk argument type"), True),
        (SendUnavailable("refused", may_have_sent=False), True),
        (SendUnavailable("timed out", may_have_sent=True), False),
        (RuntimeError("bug"), False),
        (KeyboardInterrupt(), False),
    ],
)
def test_nothing_sent(error: BaseException, expected: bool) -> None:
    """nothing_sent is True only for failures that surely sent nothing."""
    assert nothing_sent(error) is expected


def test_a_gate_refusal_sent_nothing() -> None:
    """GateRefused, a Gatekeeper error without may_have_sent, counts as nothing sent."""
    refused = GateRefused(Decision(action=Action.REFUSE, to=MOBILE, purpose="notify"), code=21610)
    assert nothing_sent(refused) is True


def test_send_rejected_pickles_with_its_data() -> None:
    """SendRejected survives pickling with status, uri, msg, code and method."""
    original = SendRejected(400, URI, msg="unsubscribed", code=21610, method="POST")
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is SendRejected
    assert (copy.status, copy.uri, copy.msg, copy.code, copy.method) == (400, URI, "unsubscribed", 21610, "POST")
    assert str(copy) == str(original)


@pytest.mark.parametrize("may_have_sent", [True, False])
def test_send_unavailable_pickles_with_its_data(may_have_sent: bool) -> None:
    """SendUnavailable survives pickling with its message and may_have_sent."""
    original = SendUnavailable("Twilio unreachable: ReadTimeout", may_have_sent=may_have_sent)
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is SendUnavailable
    assert (str(copy), copy.may_have_sent) == ("Twilio unreachable: ReadTimeout", may_have_sent)
    assert isinstance(copy, requests.RequestException)
