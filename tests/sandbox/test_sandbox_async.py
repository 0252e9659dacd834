"""The SDK's *_async methods over aiohttp: AsyncSandboxHttpClient reaches the sandbox and closes cleanly."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gatekeeper.sandbox import (
    TEST_AUTH_TOKEN,
    TEST_SUBACCOUNT_SID,
    AsyncSandboxHttpClient,
    Sandbox,
    SandboxServer,
    async_sandbox_client,
)
from gatekeeper.sandbox.transport import DEFAULT_TIMEOUT_SECONDS

T = TypeVar("T")
SERVICE = "VA" + "6" * 32
FLOW = "FW" + "6" * 32


def run(server: SandboxServer, action: Callable[[Client], Awaitable[T]], **kwargs: Any) -> T:
    """Run ``action`` with a fresh async client in a fresh event loop, closing the client inside the loop."""

    async def main() -> T:
        client = server.async_client(**kwargs)
        async with client.http_client:
            return await action(client)

    return asyncio.run(main())


def test_messages_create_async(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """messages.create_async reaches the sandbox and returns a queued MessageInstance."""

    async def action(client: Client) -> Any:
        return await client.messages.create_async(to="+14155550100", from_="+15005550006", body="hi")

    message = run(sandbox_server, action)
    assert (message.status, message.to, message.body) == ("queued", "+14155550100", "hi")
    assert [m["sid"] for m in sandbox.messages()] == [message.sid]


def test_calls_create_async(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """calls.create_async places a call (SIP here) that the sandbox stores."""

    async def action(client: Client) -> Any:
        return await client.calls.create_async(to="sip:alice@example.com", from_="+15005550006", twiml="<Response/>")

    call = run(sandbox_server, action)
    assert (call.status, call.to) == ("queued", "sip:alice@example.com")
    assert sandbox.call(call.sid) is not None


def test_lookup_fetch_async(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """lookups.v2 fetch_async with fields answers the fixture's line type and is counted."""

    async def action(client: Client) -> Any:
        return await client.lookups.v2.phone_numbers("+14155550101").fetch_async(fields="line_type_intelligence")

    facts = run(sandbox_server, action)
    assert facts.line_type_intelligence["type"] == "landline"
    assert sandbox.lookup_count("+14155550101") == 1


def test_verify_create_async(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """verify.v2 verifications.create_async starts a pending verification with the sandbox's code."""

    async def action(client: Client) -> Any:
        return await client.verify.v2.services(SERVICE).verifications.create_async(to="+14155550100", channel="sms")

    verification = run(sandbox_server, action)
    assert verification.status == "pending"
    assert sandbox.verification_code("+14155550100") == "123456"


def test_studio_executions_create_async(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """studio.v2 executions.create_async (studio.twilio.com) reaches the sandbox with its Parameters."""

    async def action(client: Client) -> Any:
        flow = client.studio.v2.flows(FLOW)
        created = await flow.executions.create_async(to="+14155550100", from_="+15005550006", parameters={"a": 1})
        return created, await flow.executions(created.sid).fetch_async()

    created, fetched = run(sandbox_server, action)
    assert (created.status, created.context["flow"]["data"]) == ("active", {"a": 1})
    assert fetched.sid == created.sid
    assert [e["sid"] for e in sandbox.executions()] == [created.sid]


def test_errors_raise_twilio_rest_exception(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """A Twilio error body surfaces from *_async calls as TwilioRestException, code and status intact."""

    async def action(client: Client) -> Any:
        return await client.messages.create_async(to="+15005550010", from_="+15005550006", body="x")

    with pytest.raises(TwilioRestException) as caught:
        run(sandbox_server, action)
    assert (caught.value.status, caught.value.code) == (400, 30450)


def test_subaccount_path_async(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """The parent's async client acts on the subaccount path too."""

    async def action(client: Client) -> Any:
        sub = client.api.v2010.accounts(TEST_SUBACCOUNT_SID)
        return await sub.messages.create_async(to="+14155550100", from_="+15005550006", body="hi")

    assert run(sandbox_server, action).account_sid == TEST_SUBACCOUNT_SID


def test_session_is_closed_and_leaves_no_warning(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """After close the aiohttp session is gone and garbage collection reports no unclosed session."""
    client = sandbox_server.async_client()  # built outside any event loop
    http: AsyncSandboxHttpClient = client.http_client
    assert http.session is None

    async def main() -> tuple[Any, bool]:
        await client.lookups.v2.phone_numbers("+14155550100").fetch_async()
        session = http.session
        await http.close()
        return session, session.closed

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session, closed = asyncio.run(main())
        del session
        gc.collect()
    assert closed is True
    assert http.session is None
    assert [str(w.message) for w in caught if "nclosed" in str(w.message)] == []


def test_a_closed_client_serves_a_new_loop(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """Once closed, the same client opens a fresh session in the next event loop."""
    client = sandbox_server.async_client()

    async def once() -> bool:
        async with client.http_client:
            facts = await client.lookups.v2.phone_numbers("+14155550100").fetch_async()
            return bool(facts.valid)

    assert asyncio.run(once()) is True
    assert asyncio.run(once()) is True
    assert sandbox.lookup_count("+14155550100") == 2


def test_proxy_env_vars_are_ignored(
    sandbox_server: SandboxServer, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP(S)_PROXY in the environment does not divert async sandbox traffic."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")

    async def action(client: Client) -> Any:
        return await client.lookups.v2.phone_numbers("+14155550100").fetch_async()

    assert run(sandbox_server, action).valid is True
    assert sandbox.lookup_count("+14155550100") == 1


def test_rewrite_and_defaults() -> None:
    """The async transport rewrites the same hosts (Studio included), keeps others, and has a timeout."""
    http = AsyncSandboxHttpClient("http://sb:1/")
    assert http.rewrite("https://studio.twilio.com/v2/Flows/FW1/Executions") == "http://sb:1/v2/Flows/FW1/Executions"
    assert http.rewrite("https://api.dublin.ie1.twilio.com/2010-04-01/x") == "http://sb:1/2010-04-01/x"
    assert http.rewrite("https://conversations.twilio.com/v1/x") == "https://conversations.twilio.com/v1/x"
    assert http.is_async is True
    assert http.timeout == DEFAULT_TIMEOUT_SECONDS
    assert AsyncSandboxHttpClient("http://sb:1", timeout=2).timeout == 2


def test_async_sandbox_client_uses_the_given_credentials(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """async_sandbox_client with wrong credentials gets Twilio's 401 / 20003."""

    async def main() -> None:
        client = async_sandbox_client(sandbox_server.url, auth_token="wrong")
        async with client.http_client:
            await client.lookups.v2.phone_numbers("+14155550100").fetch_async()

    with pytest.raises(TwilioRestException) as caught:
        asyncio.run(main())
    assert (caught.value.status, caught.value.code) == (401, 20003)


def test_dropped_post_raises_aiohttp_connection_error(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """A drop fault on a create closes the socket: create_async raises aiohttp's connection error."""
    sandbox.add_fault("drop", route="messages.create", times=1)

    async def action(client: Client) -> Any:
        return await client.messages.create_async(to="+14155550100", from_="+15005550006", body="x")

    with pytest.raises(aiohttp.ClientConnectionError):
        run(sandbox_server, action)
    assert [r.status for r in sandbox.requests("messages.create")] == [None]
    assert sandbox.messages() == []


def test_credentials_stay_out_of_the_sdk_log(
    sandbox_server: SandboxServer, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The Authorization header the transport writes is never in twilio's request log."""

    async def action(client: Client) -> Any:
        return await client.lookups.v2.phone_numbers("+14155550100").fetch_async()

    with caplog.at_level(logging.INFO, logger="twilio"):
        assert run(sandbox_server, action).valid is True
    assert "BEGIN Twilio API Request" in caplog.text
    assert TEST_AUTH_TOKEN not in caplog.text
    assert "Basic " not in caplog.text
