"""The Gatekeeper end to end over intercepted HTTP: acting, observe mode, idempotency, audit."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any
from urllib.parse import parse_qs
from xml.etree import ElementTree

import pytest
import requests
from support import ACCOUNT_SID, AUTH_TOKEN, FakeClock, FakeTwilio, run_threads
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gatekeeper import (
    Action,
    Gatekeeper,
    IdempotencyConflict,
    InvalidNumber,
    SendRejected,
    SendUnavailable,
    Settings,
    Stores,
)
from gatekeeper.errors import StoreUnavailable
from gatekeeper.stores.memory import MemoryStore
from gatekeeper.stores.redis import RedisStore

MOBILE, LANDLINE, VOIP, FIXED_VOIP = "+14155552671", "+14155552672", "+14155552673", "+14155552674"
FROM = "+15005550006"
VA = "VA" + "0" * 32


def gate(client: Client, clock: FakeClock, **settings: Any) -> Gatekeeper:
    return Gatekeeper(
        client,
        settings=Settings(**settings),
        clock=clock,
        sleep=clock.sleep,
        stores=Stores.using(MemoryStore(clock=clock)),
    )


def test_notify_mobile_sends_sms(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A mobile gets an SMS to its E.164 form, with the status callback passed through."""
    out = gate(twilio_client, clock).notify(
        "(415) 555-2671", "Your package arrives today", from_=FROM, status_callback="https://example.com/status"
    )
    assert (out.action, out.sid, out.status) == (Action.SMS, "SM" + "0" * 31 + "1", "queued")
    assert twilio_http.sent == [
        {
            "To": MOBILE,
            "From": FROM,
            "Body": "Your package arrives today",
            "StatusCallback": "https://example.com/status",
        }
    ]


def test_notify_with_messaging_service(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A Messaging Service SID may stand in for from_."""
    mg = "MG" + "1" * 32
    gate(twilio_client, clock).notify(MOBILE, "hi", messaging_service_sid=mg)
    assert twilio_http.sent[0]["MessagingServiceSid"] == mg


def test_notify_landline_places_a_voice_call(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A landline gets a call whose TwiML says the message."""
    out = gate(twilio_client, clock).notify(LANDLINE, "Your package arrives today", from_=FROM)
    assert out.action is Action.VOICE
    assert out.decision.reasons == ("line_type:landline", "fallback:voice")
    assert twilio_http.sent == []
    root = ElementTree.fromstring(twilio_http.calls[0]["Twiml"])
    say = root.find("Say")
    assert say is not None and say.text == "Your package arrives today"
    assert say.attrib == {"voice": "Polly.Joanna", "language": "en-US"}


def test_message_text_cannot_inject_twiml(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A body that closes <Say> and opens <Dial> stays text: the TwiML has one Say and no Dial."""
    evil = "Hi </Say><Dial>+19005550100</Dial><Say>"
    gate(twilio_client, clock).notify(LANDLINE, evil, from_=FROM)
    twiml = twilio_http.calls[0]["Twiml"]
    root = ElementTree.fromstring(twiml)
    assert [child.tag for child in root] == ["Say"]
    assert root.find("Say").text == evil  # type: ignore[union-attr]
    assert "<Dial>" not in twiml


def test_refusals_are_outcomes_not_errors(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """notify returns Outcome(REFUSE) with the reason; nothing is sent."""
    g = gate(twilio_client, clock, policy={"landline": "refuse"})
    out = g.notify(LANDLINE, "hi", from_=FROM)
    assert (out.action, out.sid, out.decision.twilio_code) == (Action.REFUSE, None, 21614)
    assert g.notify("not a number", "hi", from_=FROM).decision.twilio_code == 21211
    assert twilio_http.sent == twilio_http.calls == []


def test_opt_out_blocks_every_notify_channel(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """An opted-out number is refused 21610 before any Lookup, for SMS and the voice fallback alike."""
    g = gate(twilio_client, clock)
    assert g.opt_out("(415) 555-2671") is True
    assert g.opt_out(LANDLINE) is True
    for number in (MOBILE, LANDLINE):
        out = g.notify(number, "hi", from_=FROM)
        assert (out.action, out.decision.twilio_code, out.decision.reasons) == (
            Action.REFUSE,
            21610,
            ("opted_out:account",),
        )
    assert sum(twilio_http.lookups.values()) == 0
    assert g.decide(MOBILE, purpose="mfa").action is Action.VERIFY_SMS  # MFA is user-initiated
    g.opt_in(MOBILE)
    assert g.notify(MOBILE, "hi", from_=FROM).action is Action.SMS
    with pytest.raises(InvalidNumber):
        g.opt_out("not a number")


def test_sender_scoped_opt_outs(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """With opt_out_scope = sender, an opt-out from one sender leaves the others free."""
    g = gate(twilio_client, clock, webhooks={"opt_out_scope": "sender"})
    g.opt_out(MOBILE, sender=FROM)
    assert g.decide(MOBILE, sender=FROM).twilio_code == 21610
    assert g.decide(MOBILE, sender="+15005550007").action is Action.SMS
    assert g.notify(MOBILE, "hi", from_="+15005550007").action is Action.SMS


def test_repeated_failures_suppress(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Past the failure threshold inside the window, the number is refused until the window passes."""
    g = gate(twilio_client, clock)
    for i in range(3):
        g.stores.failures.record_failure(MOBILE, f"SM{i}:undelivered", at=clock(), window_seconds=7 * 86_400)
    d = g.decide(MOBILE)
    assert (d.action, d.twilio_code, d.reasons) == (Action.REFUSE, 21610, ("failures:3",))
    clock.advance(8 * 86_400)
    assert g.decide(MOBILE).action is Action.SMS


def test_unreadable_opt_out_store_fails_closed(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """If opt-outs cannot be read, notify refuses rather than risk messaging someone who said STOP."""

    class Broken(MemoryStore):
        def opted_out_scope(self, e164: str, scopes: Any) -> str | None:
            raise StoreUnavailable("down")

    g = Gatekeeper(twilio_client, stores=Stores.using(Broken()))
    out = g.notify(MOBILE, "hi", from_=FROM)
    assert (out.action, out.decision.reasons) == (Action.REFUSE, ("store:unavailable",))
    assert twilio_http.sent == []


def test_verification_routes(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """MFA: mobile → Verify SMS, landline → Verify call, VoIP → TOTP (nothing sent), email when asked."""
    g = gate(twilio_client, clock)
    assert g.start_verification(MOBILE, verify_service_sid=VA).action is Action.VERIFY_SMS
    assert g.start_verification(LANDLINE, verify_service_sid=VA).action is Action.VERIFY_CALL
    voip = g.start_verification(VOIP, verify_service_sid=VA)
    assert (voip.action, voip.sid, voip.status) == (Action.TOTP, None, "use_totp")
    mail = g.start_verification(MOBILE, verify_service_sid=VA, channel="email", email="a@example.com")
    assert mail.action is Action.EMAIL
    assert [(v["To"], v["Channel"]) for v in twilio_http.verifications] == [
        (MOBILE, "sms"),
        (LANDLINE, "call"),
        ("a@example.com", "email"),
    ]


def test_voip_gets_email_when_policy_says(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """[policy.mfa] voip = email sends the code by email to the given address."""
    g = gate(twilio_client, clock, policy={"mfa": {"voip": "email"}})
    out = g.start_verification(FIXED_VOIP, verify_service_sid=VA, email="a@example.com")
    assert out.action is Action.EMAIL
    assert twilio_http.verifications[-1] == {"To": "a@example.com", "Channel": "email"}
    assert g.start_verification(FIXED_VOIP, verify_service_sid=VA).decision.twilio_code == 60205


def test_bad_arguments_are_typed_errors(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Missing sender, empty body, unknown channel or purpose: ValueError saying what to fix."""
    g = gate(twilio_client, clock)
    with pytest.raises(ValueError, match="from_"):
        g.notify(MOBILE, "hi")
    with pytest.raises(ValueError, match="body"):
        g.notify(MOBILE, "", from_=FROM)
    with pytest.raises(ValueError, match="channel"):
        g.start_verification(MOBILE, verify_service_sid=VA, channel="pigeon")
    with pytest.raises(ValueError, match="purpose"):
        g.decide(MOBILE, purpose="marketing")  # type: ignore[arg-type]


def test_observe_mode_records_but_never_blocks(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """In observe mode an opted-out landline still gets the SMS; the decision says what enforce would do."""
    g = gate(twilio_client, clock, policy={"mode": "observe"})
    g.opt_out(LANDLINE)
    out = g.notify(LANDLINE, "hi", from_=FROM)
    assert out.action is Action.SMS
    assert (out.decision.action, out.decision.enforced) == (Action.REFUSE, False)
    assert out.decision.reasons == ("opted_out:account", "mode:observe")
    assert twilio_http.sent[0]["To"] == LANDLINE
    assert g.stores.audit.recent(1)[0]["enforced"] is False


def test_observe_mode_per_purpose(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """observe on mfa only: notify still enforces."""
    g = gate(twilio_client, clock, policy={"mfa": {"mode": "observe"}})
    assert g.start_verification(VOIP, verify_service_sid=VA).action is Action.VERIFY_SMS
    assert g.notify(LANDLINE, "hi", from_=FROM).action is Action.VOICE


def test_audit_records_every_decision_without_the_number(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """One record per decision: masked number, hash, facts, reasons, action, cache hit, timings."""
    g = gate(twilio_client, clock)
    g.decide(LANDLINE)
    g.decide(LANDLINE)
    g.decide("+1415")
    newest, cached, first = g.stores.audit.recent(10)
    assert first["to"] == "+1415555****"
    assert LANDLINE not in str(g.stores.audit.recent(10))
    assert first["to_hash"] == cached["to_hash"] and len(first["to_hash"]) == 32
    assert (first["action"], first["reasons"], first["cache_hit"], cached["cache_hit"]) == (
        "voice",
        ["line_type:landline", "fallback:voice"],
        False,
        True,
    )
    assert first["facts"]["line_type"] == "landline" and first["facts"]["source"] == "lookup"
    assert set(first["timings_us"]) == {"normalize", "suppress", "enrich", "total"}
    assert first["timings_us"]["total"] >= first["timings_us"]["enrich"] >= 0
    assert (newest["action"], newest["twilio_code"], newest["facts"]) == ("refuse", 21211, None)


# -- idempotency ----------------------------------------------------------------------------
def test_same_key_returns_first_outcome_and_sends_nothing(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """A retry with the same key and payload replays the first Outcome; a new payload is a conflict."""
    g = gate(twilio_client, clock)
    first = g.notify(MOBILE, "Your code", from_=FROM, idempotency_key="order-1")
    again = g.notify(MOBILE, "Your code", from_=FROM, idempotency_key="order-1")
    assert (again.sid, again.action, again.replayed, first.replayed) == (first.sid, Action.SMS, True, False)
    assert again.decision == first.decision
    assert len(twilio_http.sent) == 1
    with pytest.raises(IdempotencyConflict) as info:
        g.notify(MOBILE, "Another text", from_=FROM, idempotency_key="order-1")
    assert info.value.reason == "payload_mismatch"
    clock.advance(86_401)
    assert not g.notify(MOBILE, "Another text", from_=FROM, idempotency_key="order-1").replayed


def test_failed_send_frees_the_key(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """When Twilio answers with an error, nothing was sent: the same key may be retried."""
    twilio_http.send_faults = [(400, {}, {"code": 21612, "message": "unreachable", "status": 400})]
    g = gate(twilio_client, clock)
    with pytest.raises(SendRejected) as failed:
        g.notify(MOBILE, "hi", from_=FROM, idempotency_key="k")
    assert isinstance(failed.value, TwilioRestException)  # old `except TwilioRestException` clauses still match
    assert (failed.value.status, failed.value.code, failed.value.may_have_sent) == (400, 21612, False)
    assert g.notify(MOBILE, "hi", from_=FROM, idempotency_key="k").action is Action.SMS


def test_ambiguous_failure_is_not_resent(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A read timeout may have sent: the key then reports outcome_unknown instead of sending twice."""
    twilio_http.send_faults = [requests.exceptions.ReadTimeout("read timed out")]
    g = gate(twilio_client, clock)
    with pytest.raises(SendUnavailable) as failed:
        g.notify(MOBILE, "hi", from_=FROM, idempotency_key="k")
    assert failed.value.may_have_sent is True
    assert isinstance(failed.value.__cause__, requests.exceptions.ReadTimeout)
    with pytest.raises(IdempotencyConflict) as info:
        g.notify(MOBILE, "hi", from_=FROM, idempotency_key="k")
    assert info.value.reason == "outcome_unknown"
    assert twilio_http.sent == []


def test_send_retried_only_when_twilio_cannot_have_acted(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """429 and a refused connection are retried; a read timeout is not."""
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    refused = requests.exceptions.ConnectionError(
        MaxRetryError(None, "/", NewConnectionError(None, "Connection refused"))
    )  # type: ignore[arg-type]
    twilio_http.send_faults = [(429, {}, {"code": 20429, "message": "busy", "status": 429}), refused]
    g = gate(twilio_client, clock)
    assert g.notify(MOBILE, "hi", from_=FROM).action is Action.SMS
    assert len(twilio_http.sent) == 1 and len(clock.sleeps) == 2
    twilio_http.send_faults = [requests.exceptions.ReadTimeout("maybe sent")]
    with pytest.raises(SendUnavailable):
        g.notify(MOBILE, "hi", from_=FROM)
    assert len(twilio_http.sent) == 1


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_concurrent_repeats_send_once(
    twilio_http: FakeTwilio, twilio_client: Client, backend: str, request: pytest.FixtureRequest
) -> None:
    """Ten threads notifying with one key: one message, and every caller gets its Outcome."""
    store = MemoryStore() if backend == "memory" else request.getfixturevalue("redis_store")
    g = Gatekeeper(twilio_client, stores=Stores.using(store), settings=Settings(idempotency={"wait_ms": 10_000}))
    results = run_threads(10, lambda _: g.notify(MOBILE, "hi", from_=FROM, idempotency_key="same"))
    assert len(twilio_http.sent) == 1
    assert {r.sid for r in results} == {results[0].sid}
    assert sum(1 for r in results if not r.replayed) == 1


def _notify_in_process(api_url: str, redis_url: str, prefix: str, start: Any, out: Any) -> None:
    client = Client(ACCOUNT_SID, AUTH_TOKEN, environment={})
    client.api.base_url = api_url
    client.lookups.base_url = api_url
    g = Gatekeeper(
        client,
        stores=Stores.using(RedisStore.from_url(redis_url, prefix=prefix)),
        settings=Settings(lookup={"enabled": False}, idempotency={"wait_ms": 20_000}),
    )
    start.wait()
    out.put(g.notify("+447400123456", "hi", from_=FROM, idempotency_key="cross-process").sid)


def test_idempotency_across_processes(redis_url: str, redis_store: RedisStore, redis_prefix: str) -> None:
    """Three processes racing on one key through Redis: one POST reaches Twilio, all see its SID."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    posts: list[str] = []

    class Api(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            time.sleep(0.2)
            body = b'{"sid": "SM' + b"f" * 32 + b'", "status": "queued"}'
            self.send_response(201)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    procs = [ctx.Process(target=_notify_in_process, args=(url, redis_url, redis_prefix, start, out)) for _ in range(3)]
    try:
        for p in procs:
            p.start()
        time.sleep(1.0)
        start.set()
        sids = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
        server.shutdown()
    assert len(posts) == 1
    assert parse_qs(posts[0])["To"] == ["+447400123456"]
    assert sids == ["SM" + "f" * 32] * 3
