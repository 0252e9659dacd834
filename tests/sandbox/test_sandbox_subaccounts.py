"""Subaccounts: a parent's credentials act on its subaccounts' paths, never the other way round."""

from __future__ import annotations

from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from gatekeeper.sandbox import (
    TEST_ACCOUNT_SID,
    TEST_API_KEY_SECRET,
    TEST_API_KEY_SID,
    TEST_AUTH_TOKEN,
    TEST_SUBACCOUNT_AUTH_TOKEN,
    TEST_SUBACCOUNT_SID,
    Account,
    Sandbox,
    SandboxConfig,
    SandboxServer,
    sandbox_client,
)

PARENT = "AC" + "1" * 32
CHILD = "AC" + "2" * 32
GRANDCHILD = "AC" + "3" * 32


def _sub(client: Client) -> Any:
    return client.api.v2010.accounts(TEST_SUBACCOUNT_SID)


def test_parent_sends_on_the_subaccount_path(client: Client, sandbox: Sandbox) -> None:
    """A message created by the parent on the subaccount's path belongs to the subaccount."""
    message = _sub(client).messages.create(to="+14155550100", from_="+15005550006", body="hi")
    assert message.account_sid == TEST_SUBACCOUNT_SID
    assert message.uri == f"/2010-04-01/Accounts/{TEST_SUBACCOUNT_SID}/Messages/{message.sid}.json"
    (stored,) = sandbox.messages()
    assert stored["account_sid"] == TEST_SUBACCOUNT_SID
    assert _sub(client).messages(message.sid).fetch().sid == message.sid


def test_subaccount_resource_is_not_on_the_parent_path(client: Client) -> None:
    """A subaccount's message is fetched on its own path; on the parent's path it is 404 / 20404."""
    message = _sub(client).messages.create(to="+14155550100", from_="+15005550006", body="hi")
    with pytest.raises(TwilioRestException) as caught:
        client.messages(message.sid).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_callbacks_are_signed_with_the_subaccount_token(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """Status callbacks of a subaccount's message carry its AccountSid and are signed with its auth token."""
    _sub(client).messages.create(
        to="+14155550100", from_="+15005550006", body="hi", status_callback=f"{receiver.url}/sub"
    )
    sandbox.flush_callbacks()
    assert receiver.statuses("MessageStatus") == ["sent", "delivered"]
    sub_validator = RequestValidator(TEST_SUBACCOUNT_AUTH_TOKEN)
    for got in receiver.received:
        assert got.form["AccountSid"] == TEST_SUBACCOUNT_SID
        assert not got.signature_valid  # the receiver checks with the parent's token
        assert sub_validator.validate(receiver.url + got.path, got.form, got.headers["X-Twilio-Signature"])


def test_subaccount_calls_and_their_callbacks(client: Client, sandbox: Sandbox, receiver: Any) -> None:
    """Calls on the subaccount path belong to it; their callbacks are signed with its token."""
    call = _sub(client).calls.create(
        to="+14155550100", from_="+15005550006", twiml="<Response/>", status_callback=f"{receiver.url}/c"
    )
    assert call.account_sid == TEST_SUBACCOUNT_SID
    sandbox.flush_callbacks()
    (got,) = receiver.received
    assert (got.form["AccountSid"], got.form["CallStatus"]) == (TEST_SUBACCOUNT_SID, "completed")
    assert RequestValidator(TEST_SUBACCOUNT_AUTH_TOKEN).validate(
        receiver.url + got.path, got.form, got.headers["X-Twilio-Signature"]
    )
    assert _sub(client).calls(call.sid).fetch().status == "completed"


def test_subaccount_credentials_work_on_its_own_path(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """The subaccount's SID and token send on its own path."""
    sub = sandbox_client(sandbox_server.url, TEST_SUBACCOUNT_SID, TEST_SUBACCOUNT_AUTH_TOKEN)
    message = sub.messages.create(to="+14155550100", from_="+15005550006", body="hi")
    assert message.account_sid == TEST_SUBACCOUNT_SID
    assert sub.messages(message.sid).fetch().account_sid == TEST_SUBACCOUNT_SID


def test_subaccount_credentials_cannot_act_on_the_parent(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """The subaccount's credentials on the parent's path answer 404 / 20404, and nothing is stored."""
    sub = sandbox_client(sandbox_server.url, TEST_SUBACCOUNT_SID, TEST_SUBACCOUNT_AUTH_TOKEN)
    with pytest.raises(TwilioRestException) as caught:
        sub.api.v2010.accounts(TEST_ACCOUNT_SID).messages.create(to="+14155550100", from_="+15005550006", body="x")
    assert (caught.value.status, caught.value.code) == (404, 20404)
    assert sandbox.messages() == []


def test_parent_api_key_acts_on_the_subaccount(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """The parent's API key opens the subaccount's path like the parent's token does."""
    keyed = sandbox_client(sandbox_server.url, TEST_ACCOUNT_SID, TEST_API_KEY_SECRET, username=TEST_API_KEY_SID)
    assert _sub(keyed).messages.create(to="+14155550100", from_="+15005550006", body="x").account_sid == (
        TEST_SUBACCOUNT_SID
    )


def test_unknown_account_on_the_path_is_still_404(client: Client, sandbox: Sandbox) -> None:
    """Valid parent credentials on an account that is not its subaccount answer 404 / 20404."""
    with pytest.raises(TwilioRestException) as caught:
        client.api.v2010.accounts("AC" + "b" * 32).calls.create(
            to="+14155550100", from_="+15005550006", twiml="<Response/>"
        )
    assert (caught.value.status, caught.value.code) == (404, 20404)
    assert sandbox.calls() == []


def test_configured_parent_and_children() -> None:
    """parent_sid links configured accounts: each reaches its direct children only, a stranger nothing."""
    config = SandboxConfig(
        accounts=[
            Account(PARENT, "parent-token"),
            Account(CHILD, "child-token", parent_sid=PARENT),
            Account(GRANDCHILD, "grandchild-token", parent_sid=CHILD),
        ]
    )
    with SandboxServer(config) as server:
        parent = server.client(PARENT, "parent-token")
        sent = parent.api.v2010.accounts(CHILD).messages.create(to="+14155550100", from_="+15005550006", body="x")
        assert sent.account_sid == CHILD
        child = server.client(CHILD, "child-token")
        below = child.api.v2010.accounts(GRANDCHILD).messages.create(to="+14155550100", from_="+15005550006", body="x")
        assert below.account_sid == GRANDCHILD
        with pytest.raises(TwilioRestException) as caught:  # only a direct parent, as subaccounts do not nest
            parent.api.v2010.accounts(GRANDCHILD).messages.create(to="+14155550100", from_="+15005550006", body="x")
        assert caught.value.status == 404
        with pytest.raises(TwilioRestException) as caught:
            server.client().messages.create(to="+14155550100", from_="+15005550006", body="x")
        assert caught.value.status == 401


def test_subaccount_repr_hides_its_token() -> None:
    """A subaccount's repr shows its parent but not its token."""
    text = repr(Account(TEST_SUBACCOUNT_SID, TEST_SUBACCOUNT_AUTH_TOKEN, parent_sid=TEST_ACCOUNT_SID))
    assert TEST_SUBACCOUNT_AUTH_TOKEN not in text
    assert TEST_AUTH_TOKEN not in text
    assert f"parent_sid={TEST_ACCOUNT_SID!r}" in text


def test_default_config_has_the_documented_subaccount() -> None:
    """The default accounts are the test account and its subaccount, with distinct tokens."""
    accounts = SandboxConfig().accounts
    assert [(a.sid, a.parent_sid) for a in accounts] == [
        (TEST_ACCOUNT_SID, None),
        (TEST_SUBACCOUNT_SID, TEST_ACCOUNT_SID),
    ]
    assert accounts[1].auth_token == TEST_SUBACCOUNT_AUTH_TOKEN != TEST_AUTH_TOKEN
