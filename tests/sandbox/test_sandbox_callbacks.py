"""Status callbacks: signed, idempotency-tokened POSTs to a real receiver; duplicates, reorder, retries."""

from __future__ import annotations

from typing import Any

from twilio.rest import Client

from gatekeeper.sandbox import TEST_ACCOUNT_SID, Sandbox, SandboxConfig, SandboxServer
from gatekeeper.sandbox.config import CallbackConfig

SERVICE = "MG" + "3" * 32


def _send(client: Client, receiver: Any, to: str = "+14155550100", **kwargs: Any) -> Any:
    return client.messages.create(
        to=to, from_="+15005550006", body="hi", status_callback=f"{receiver.url}/status", **kwargs
    )


def test_message_callbacks_are_signed_and_ordered(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """A delivered message POSTs sent then delivered, each with a valid X-Twilio-Signature."""
    message = _send(client, receiver)
    assert receiver.received == []  # manual mode: nothing until flushed
    deliveries = sandbox.flush_callbacks()
    assert [d.status_code for d in deliveries] == [204, 204]
    assert receiver.statuses("MessageStatus") == ["sent", "delivered"]
    assert all(r.signature_valid for r in receiver.received)
    first = receiver.received[0].form
    assert first["MessageSid"] == first["SmsSid"] == message.sid
    assert (first["AccountSid"], first["From"], first["To"], first["ApiVersion"]) == (
        TEST_ACCOUNT_SID,
        "+15005550006",
        "+14155550100",
        "2010-04-01",
    )
    assert "RawDlrDoneDate" in receiver.received[1].form
    assert client.messages(message.sid).fetch().status == "delivered"


def test_undelivered_fixture_reports_30003(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """+14155550104 ends undelivered with ErrorCode 30003, in the callback and on the resource."""
    message = _send(client, receiver, to="+14155550104")
    sandbox.flush_callbacks()
    assert receiver.statuses("MessageStatus") == ["sent", "undelivered"]
    assert receiver.received[-1].form["ErrorCode"] == "30003"
    fetched = client.messages(message.sid).fetch()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30003)


def test_failed_delivery_skips_sent(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """A number whose messages fail reports only 'failed' with its error code."""
    sandbox.override_numbers({"+14155559876": {"delivery": "failed", "delivery_error_code": 30007}})
    _send(client, receiver, to="+14155559876")
    sandbox.flush_callbacks()
    assert receiver.statuses("MessageStatus") == ["failed"]
    assert receiver.received[0].form["ErrorCode"] == "30007"


def test_messaging_service_reports_queued_too(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """With a Messaging Service the callbacks are queued, sent, delivered and carry the service SID."""
    client.messages.create(
        to="+14155550100", messaging_service_sid=SERVICE, body="hi", status_callback=f"{receiver.url}/status"
    )
    sandbox.flush_callbacks()
    assert receiver.statuses("MessageStatus") == ["queued", "sent", "delivered"]
    assert {r.form["MessagingServiceSid"] for r in receiver.received} == {SERVICE}


def test_status_advances_without_a_callback_url(client: Client, sandbox: Sandbox) -> None:
    """A message with no StatusCallback still reaches its final status when flushed, sending nothing."""
    message = client.messages.create(to="+14155550100", from_="+15005550006", body="hi")
    assert sandbox.flush_callbacks() == []
    assert client.messages(message.sid).fetch().status == "delivered"


def test_call_callbacks_follow_requested_events(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """All four StatusCallbackEvents give initiated, ringing, in-progress, completed with sequence numbers."""
    call = client.calls.create(
        to="+14155550100",
        from_="+15005550006",
        twiml="<Response/>",
        status_callback=f"{receiver.url}/call",
        status_callback_event=["initiated", "ringing", "answered", "completed"],
    )
    sandbox.flush_callbacks()
    assert receiver.statuses("CallStatus") == ["initiated", "ringing", "in-progress", "completed"]
    assert receiver.statuses("SequenceNumber") == ["0", "1", "2", "3"]
    assert all(r.signature_valid and r.form["CallSid"] == call.sid for r in receiver.received)
    assert receiver.received[-1].form["CallDuration"] == "17"
    assert {r.form["Direction"] for r in receiver.received} == {"outbound-api"}


def test_call_default_is_completed_only(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """Without StatusCallbackEvent Twilio reports only the final status; a busy line says busy."""
    client.calls.create(
        to="+14155550105", from_="+15005550006", twiml="<Response/>", status_callback=f"{receiver.url}/call"
    )
    sandbox.flush_callbacks()
    assert receiver.statuses("CallStatus") == ["busy"]
    assert receiver.statuses("SequenceNumber") == ["0"]


def test_idempotency_tokens_are_unique_per_event(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """Every event carries its own I-Twilio-Idempotency-Token."""
    _send(client, receiver)
    _send(client, receiver)
    sandbox.flush_callbacks()
    tokens = [r.headers["I-Twilio-Idempotency-Token"] for r in receiver.received]
    assert len(tokens) == 4
    assert len(set(tokens)) == 4


def test_duplicates_repeat_the_token(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """With duplicate=1.0 every event arrives twice with the same token and signature."""
    sandbox.configure_callbacks(duplicate=1.0)
    _send(client, receiver)
    deliveries = sandbox.flush_callbacks()
    assert [d.duplicate for d in deliveries] == [False, True, False, True]
    tokens = [r.headers["I-Twilio-Idempotency-Token"] for r in receiver.received]
    assert tokens[0] == tokens[1]
    assert tokens[2] == tokens[3]
    assert tokens[0] != tokens[2]
    assert all(r.signature_valid for r in receiver.received)


def test_reorder_shuffles_delivery_not_state(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """Reordering changes the arrival order, never the resource's final status."""
    sandbox.configure_callbacks(reorder=True, seed=7)
    call = client.calls.create(
        to="+14155550100",
        from_="+15005550006",
        twiml="<Response/>",
        status_callback=f"{receiver.url}/call",
        status_callback_event=["initiated", "ringing", "answered", "completed"],
    )
    sandbox.flush_callbacks()
    arrived = receiver.statuses("CallStatus")
    assert sorted(arrived) == sorted(["initiated", "ringing", "in-progress", "completed"])
    assert arrived != ["initiated", "ringing", "in-progress", "completed"]
    assert client.calls(call.sid).fetch().status == "completed"


def test_failed_deliveries_are_retried(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """A 500 from the receiver is retried (retries=2): the third attempt succeeds with the same token."""
    sandbox.configure_callbacks(retries=2)
    receiver.fail_next(2)
    _send(client, receiver)
    first, second = sandbox.flush_callbacks()
    assert (first.attempts, first.status_code, second.attempts) == (3, 204, 1)
    tokens = [r.headers["I-Twilio-Idempotency-Token"] for r in receiver.received[:3]]
    assert len(set(tokens)) == 1


def test_rc_fragment_overrides_retries(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """A #rc=0 connection override disables retries; the fragment is not sent and not signed."""
    receiver.fail_next(1, status=503)
    client.messages.create(
        to="+14155550100", from_="+15005550006", body="hi", status_callback=f"{receiver.url}/status#rc=0"
    )
    first, _ = sandbox.flush_callbacks()
    assert (first.attempts, first.status_code, first.ok) == (1, 503, False)
    assert all(r.signature_valid for r in receiver.received)


def test_connection_refused_is_reported(client: Client, sandbox: Sandbox) -> None:
    """A receiver that refuses connections is tried 1 + retries times and reported with no status."""
    client.messages.create(
        to="+14155550100", from_="+15005550006", body="hi", status_callback="http://127.0.0.1:9/status"
    )
    deliveries = sandbox.flush_callbacks()
    assert [(d.status_code, d.attempts, d.error) for d in deliveries] == [(None, 2, "ConnectionError")] * 2
    assert sandbox.callback_deliveries() == deliveries


def test_auto_mode_delivers_in_the_background(receiver: Any) -> None:
    """In auto mode callbacks arrive without a flush, from a background thread."""
    config = SandboxConfig(callbacks=CallbackConfig(mode="auto", delay_seconds=0.01))
    with SandboxServer(config) as server:
        server.client().messages.create(
            to="+14155550100", from_="+15005550006", body="hi", status_callback=f"{receiver.url}/status"
        )
        assert server.sandbox.dispatcher.wait_idle(timeout_seconds=5)
    assert receiver.statuses("MessageStatus") == ["sent", "delivered"]
