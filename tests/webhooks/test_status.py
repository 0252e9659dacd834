"""Status callbacks: ranks, dedupe, failure counting and suppression, 21610, Verify events, health, 503s."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from gatekeeper import phone as phones
from gatekeeper.gate import Gatekeeper
from gatekeeper.stores.base import ACCOUNT_SCOPE, Stores
from gatekeeper.stores.memory import MemoryStore
from gatekeeper.webhooks import status as statuses

from .helpers import (
    ALICE,
    BOB,
    FakeClock,
    Flaky,
    Recorder,
    call_status,
    inbound,
    make_app,
    make_gate,
    message_status,
    post,
    sid,
    sign,
)

MSG = "/messages/status"
CALL = "/calls/status"


# -- ranks (pure) ---------------------------------------------------------------------------
def test_message_ranks_move_forward_only() -> None:
    """queued < sending < sent < delivered < read; every terminal state outranks every non-terminal one."""
    order = ["accepted", "queued", "sending", "sent", "delivered", "read"]
    ranks = [statuses.rank("message", s) for s in order]
    assert ranks == sorted(set(ranks))
    for terminal in ("delivered", "undelivered", "failed", "canceled"):
        assert statuses.is_terminal("message", terminal)
        assert statuses.rank("message", terminal) > statuses.rank("message", "sent")


def test_call_ranks_move_forward_only() -> None:
    """queued < initiated < ringing < in-progress < any terminal call state."""
    ranks = [statuses.rank("call", s) for s in ("queued", "initiated", "ringing", "in-progress")]
    assert ranks == sorted(set(ranks))
    for terminal in ("completed", "busy", "no-answer", "failed", "canceled"):
        assert statuses.rank("call", terminal) > ranks[-1]


def test_unknown_status_ranks_below_known_ones() -> None:
    """A status Twilio adds later is stored only when nothing known is."""
    assert statuses.rank("message", "teleported") < statuses.rank("message", "accepted")


# -- stored status ------------------------------------------------------------------------------
def test_delivered_is_not_overwritten_by_late_sent(client: FlaskClient, gate: Gatekeeper) -> None:
    """Callbacks out of order: a late 'sent' does not replace 'delivered'."""
    post(client, MSG, message_status("delivered"))
    post(client, MSG, message_status("sent"))
    record = gate.status_of(sid("SM", 1))
    assert record is not None
    assert record.status == "delivered"


def test_read_lifts_delivered_and_first_terminal_wins(client: FlaskClient, gate: Gatekeeper) -> None:
    """'read' follows 'delivered'; a terminal state is not replaced by another terminal one."""
    post(client, MSG, message_status("delivered", n=1))
    post(client, MSG, message_status("read", n=1))
    post(client, MSG, message_status("failed", n=2, error=30008))
    post(client, MSG, message_status("delivered", n=2))
    assert gate.status_of(sid("SM", 1)).status == "read"  # type: ignore[union-attr]
    record = gate.status_of(sid("SM", 2))
    assert record is not None
    assert (record.status, record.error_code) == ("failed", 30008)


def test_status_record_has_time_and_pseudonym(client: FlaskClient, gate: Gatekeeper, clock: FakeClock) -> None:
    """The stored status carries the time and a pseudonym of the recipient, never the number."""
    post(client, MSG, message_status("sent"))
    record = gate.status_of(sid("SM", 1))
    assert record is not None
    assert record.updated_at == clock.now
    assert record.to_hash == gate.auditor.digest(ALICE) != phones.digest(ALICE)  # keyed by the store's secret


def test_call_statuses_are_stored(client: FlaskClient, gate: Gatekeeper, recorder: Recorder) -> None:
    """Call callbacks: ringing then completed; a late ringing does not move it back."""
    post(client, CALL, call_status("ringing", seq=1))
    post(client, CALL, call_status("completed", seq=3, CallDuration="12"))
    post(client, CALL, call_status("in-progress", seq=2))
    assert gate.status_of(sid("CA", 1)).status == "completed"  # type: ignore[union-attr]
    assert [(e.kind, e.status, e.applied) for e in recorder.status] == [
        ("call", "ringing", True),
        ("call", "completed", True),
        ("call", "in-progress", False),
    ]


# -- duplicates -----------------------------------------------------------------------------------
def test_duplicate_callback_processed_once(client: FlaskClient, recorder: Recorder) -> None:
    """The same SID + status twice: 200 both times, processed once."""
    assert post(client, MSG, message_status("delivered")).status_code == 200
    assert post(client, MSG, message_status("delivered")).status_code == 200
    assert len(recorder.status) == 1


def test_idempotency_token_is_the_event_key(client: FlaskClient, recorder: Recorder) -> None:
    """With I-Twilio-Idempotency-Token, a redelivery with the same token is a duplicate; a new token is new."""
    headers = {"I-Twilio-Idempotency-Token": "tok-1"}
    post(client, CALL, call_status("completed"), headers=headers)
    post(client, CALL, call_status("completed"), headers=headers)
    post(client, CALL, call_status("completed"), headers={"I-Twilio-Idempotency-Token": "tok-2"})
    assert len(recorder.status) == 2


def test_call_sequence_number_distinguishes_events(client: FlaskClient, recorder: Recorder) -> None:
    """Without a token, a call event is SID + status + sequence number."""
    post(client, CALL, call_status("ringing", seq=1))
    post(client, CALL, call_status("ringing", seq=1))
    post(client, CALL, call_status("ringing", seq=2))
    assert len(recorder.status) == 2


def test_duplicate_while_first_is_pending_gets_503(client: FlaskClient, gate: Gatekeeper) -> None:
    """A redelivery while the first delivery still holds the claim gets 503, so Twilio retries later."""
    fields = message_status("delivered")
    key = statuses.event_key("message", fields["MessageSid"], "delivered", idempotency_token=None).claim
    claim = gate.stores.idempotency.claim(key, key, ttl_seconds=30)
    assert claim.won
    response = post(client, MSG, fields)
    assert response.status_code == 503
    assert gate.status_of(fields["MessageSid"]) is None


# -- hard failures ----------------------------------------------------------------------------------
def test_hard_failures_suppress_at_threshold(client: FlaskClient, gate: Gatekeeper, recorder: Recorder) -> None:
    """Three hard failures (default threshold) suppress the number; the gate then refuses it 21610-style."""
    for n, code in enumerate((30003, 30005, 30006), start=1):
        assert not gate.decide(ALICE).refused
        post(client, MSG, message_status("undelivered", n=n, error=code))
    decision = gate.decide(ALICE)
    assert (decision.refused, decision.twilio_code) == (True, 21610)
    assert [e.failures for e in recorder.status] == [1, 2, 3]
    assert [e.suppressed for e in recorder.status] == [False, False, True]
    assert gate.stores.failures.suppression(ALICE, now=0, window_seconds=1, threshold=99) == (
        "suppressed:delivery_failures:30006"
    )


def test_failure_counts_once_per_sid_and_status(client: FlaskClient, gate: Gatekeeper, clock: FakeClock) -> None:
    """Redeliveries of one failure, even with different idempotency tokens, count once."""
    for token in ("a", "b", "c"):
        post(client, MSG, message_status("failed", error=30003), headers={"I-Twilio-Idempotency-Token": token})
    count = gate.stores.failures.suppression(ALICE, now=clock.now, window_seconds=86400, threshold=1)
    assert count == "failures:1"
    assert not gate.decide(ALICE).refused


def test_failure_counts_even_when_status_not_applied(client: FlaskClient, gate: Gatekeeper, clock: FakeClock) -> None:
    """A failure callback that arrives after another terminal state still counts."""
    post(client, MSG, message_status("delivered"))
    post(client, MSG, message_status("undelivered", error=30007))
    assert gate.status_of(sid("SM", 1)).status == "delivered"  # type: ignore[union-attr]
    assert gate.stores.failures.suppression(ALICE, now=clock.now, window_seconds=60, threshold=1) == "failures:1"


def test_soft_errors_do_not_count(client: FlaskClient, gate: Gatekeeper, clock: FakeClock) -> None:
    """An error code outside failure_codes (30008 unknown error) is stored but not counted."""
    post(client, MSG, message_status("failed", error=30008))
    assert gate.stores.failures.suppression(ALICE, now=clock.now, window_seconds=60, threshold=1) is None


def test_failures_outside_the_window_do_not_suppress(clock: FakeClock) -> None:
    """Failures older than failure_window_seconds fall out of the count (fake clock, no sleep)."""
    gate = make_gate(clock=clock, failure_window_seconds=3600, failure_threshold=2)
    client = make_app(gate).test_client()
    post(client, MSG, message_status("failed", n=1, error=30003))
    clock.advance(7200)
    post(client, MSG, message_status("failed", n=2, error=30003))
    assert not gate.decide(ALICE).refused
    post(client, MSG, message_status("failed", n=3, error=30003))
    assert gate.decide(ALICE).refused


def test_twilio_21610_opts_out_at_once(client: FlaskClient, gate: Gatekeeper, recorder: Recorder) -> None:
    """ErrorCode 21610 marks the number opted out account-wide (source twilio:21610), once."""
    post(client, MSG, message_status("failed", n=1, error=21610))
    post(client, MSG, message_status("failed", n=2, error=21610))
    assert gate.is_opted_out(ALICE)
    history = gate.stores.opt_outs.consent_history(ALICE)
    assert [(c.scope, c.source) for c in history] == [(ACCOUNT_SCOPE, "twilio:21610")]
    assert [c.source for c in recorder.consent] == ["twilio:21610"]


def test_21610_after_start_opts_out_again(client: FlaskClient, gate: Gatekeeper) -> None:
    """A 21610 after the person opted back in is a new opt-out, not a duplicate of the old one."""
    post(client, MSG, message_status("failed", n=1, error=21610))
    post(client, "/messages/inbound", inbound("START", n=9))
    assert not gate.is_opted_out(ALICE)
    post(client, MSG, message_status("failed", n=2, error=21610))
    assert gate.is_opted_out(ALICE)


def test_callback_to_a_non_number_is_stored_without_counting(client: FlaskClient, gate: Gatekeeper) -> None:
    """A call to a client: identity has no number to count failures for; the status is still stored."""
    post(client, CALL, call_status("failed", to="client:alice", ErrorCode="30003"))
    assert gate.status_of(sid("CA", 1)).status == "failed"  # type: ignore[union-attr]


# -- malformed ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "fields", "message"),
    [
        (MSG, {"MessageStatus": "sent"}, "MessageSid is required"),
        (MSG, {"MessageSid": sid(), "MessageStatus": ""}, "MessageStatus is required"),
        (MSG, {"MessageSid": sid(), "MessageStatus": "DROP TABLE"}, "MessageStatus is required"),
        (MSG, {"MessageSid": sid(), "MessageStatus": "failed", "ErrorCode": "abc"}, "ErrorCode must be a number"),
        (CALL, {"CallSid": sid("CA"), "CallStatus": ""}, "CallStatus is required"),
        (CALL, {"CallStatus": "completed"}, "CallSid is required"),
    ],
)
def test_malformed_callbacks_are_400(client: FlaskClient, path: str, fields: dict[str, str], message: str) -> None:
    """Missing or malformed fields get 400 with a message naming the field."""
    response = post(client, path, fields)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_oversized_body_is_413(clock: FakeClock) -> None:
    """A body over max_body_bytes is refused before it is parsed or verified."""
    gate = make_gate(clock=clock, max_body_bytes=1024)
    client = make_app(gate).test_client()
    response = post(client, MSG, message_status("sent", Padding="x" * 2000))
    assert response.status_code == 413
    assert gate.status_of(sid("SM", 1)) is None


def test_unsigned_content_type_is_refused(client: FlaskClient) -> None:
    """A body that is neither a form nor JSON with bodySHA256 is not covered by the signature: 403."""
    signature = sign("http://localhost/twilio/messages/status", {})
    response = client.post(
        "/twilio/messages/status",
        data="MessageSid=x",
        content_type="text/plain",
        headers={"X-Twilio-Signature": signature},
    )
    assert response.status_code == 403


# -- durability with a failing store ------------------------------------------------------------------
def test_store_down_answers_503_and_nothing_half_applied(clock: FakeClock) -> None:
    """When the status store fails, 503, the claim is released, and Twilio's retry is processed normally."""
    backend = MemoryStore()
    flaky = Flaky(backend, failing={"apply_status"})
    stores = Stores.using(backend)
    stores.statuses = flaky
    gate = make_gate(stores=stores, clock=clock)
    rec = Recorder()
    client = make_app(gate, rec).test_client()
    assert post(client, MSG, message_status("delivered")).status_code == 503
    assert rec.status == []
    flaky.failing.clear()
    assert post(client, MSG, message_status("delivered")).status_code == 200
    assert gate.status_of(sid("SM", 1)).status == "delivered"  # type: ignore[union-attr]
    assert len(rec.status) == 1


def test_opt_out_written_once_when_completing_fails(clock: FakeClock) -> None:
    """The opt-out is stored but the claim cannot be completed (store died): 503; the retry does not write it twice."""
    backend = MemoryStore(clock=clock)
    flaky = Flaky(backend, failing={"complete", "abandon"})
    stores = Stores.using(backend)
    stores.idempotency = flaky
    gate = make_gate(stores=stores, clock=clock)
    rec = Recorder()
    client = make_app(gate, rec).test_client()
    assert post(client, "/messages/inbound", inbound("STOP")).status_code == 503
    assert gate.is_opted_out(ALICE)  # effective at once, even though the answer was 503
    flaky.failing.clear()
    # The claim is still pending until its short lease ends: Twilio's quick retry gets 503 too.
    assert post(client, "/messages/inbound", inbound("STOP")).status_code == 503
    clock.advance(31)
    assert post(client, "/messages/inbound", inbound("STOP")).status_code == 200
    assert len(gate.stores.opt_outs.consent_history(ALICE)) == 1
    assert len(rec.inbound) == len(rec.consent) == 1


# -- Verify events and health ----------------------------------------------------------------------------
def test_verify_events_are_deduplicated(client: FlaskClient, recorder: Recorder) -> None:
    """Verify events: accepted, validated, deduplicated by their id, handed to on_status."""
    event = {"uuid": "ev-1", "type": "verification.approved", "verification_sid": "VE" + "2" * 32}
    assert post(client, "/verify/events", event).status_code == 200
    assert post(client, "/verify/events", event).status_code == 200
    assert post(client, "/verify/events", {**event, "uuid": "ev-2"}).status_code == 200
    assert [(e.kind, e.sid, e.status) for e in recorder.status] == [
        ("verify", event["verification_sid"], "verification.approved")
    ] * 2


def test_healthz_reports_stores(client: FlaskClient) -> None:
    """GET /healthz needs no signature, says the stores are reachable, and says how they may lose an opt-out
    (here: the memory store, which forgets at exit) without taking the webhooks out of service."""
    response = client.get("/twilio/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["ok"], body["durable"]) == ("ok", True, False)
    assert body["stores"] == {"opt_outs": "ok", "failures": "ok", "statuses": "ok", "idempotency": "ok"}
    assert [risk["code"] for risk in body["durability"]] == ["store:memory"]


def test_healthz_503_when_a_store_is_down(clock: FakeClock) -> None:
    """/healthz answers 503 naming the unreachable store."""
    stores = Stores.using(MemoryStore())
    stores.opt_outs = Flaky(stores.opt_outs, failing={"opted_out_scope"})
    client = make_app(make_gate(stores=stores, clock=clock)).test_client()
    response = client.get("/twilio/healthz")
    assert response.status_code == 503
    assert response.get_json()["stores"]["opt_outs"] == "unavailable"


def test_bob_unaffected_by_alice(client: FlaskClient, gate: Gatekeeper) -> None:
    """Failures and opt-outs are per number."""
    post(client, MSG, message_status("failed", error=21610))
    assert not gate.is_opted_out(BOB)
