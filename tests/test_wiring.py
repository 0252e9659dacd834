"""Settings switch a whole Gatekeeper: to the sandbox by URL, to Redis by URL, to a Twilio region and edge."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from support import drop_prefix
from twilio.rest import Client

from gatekeeper import Action, GatedClient, Gatekeeper, Settings
from gatekeeper.aio import AsyncGatekeeper
from gatekeeper.errors import InvalidArgument
from gatekeeper.sandbox import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    AsyncSandboxHttpClient,
    Sandbox,
    SandboxHttpClient,
    SandboxServer,
)
from gatekeeper.stores.redis import RedisStore
from gatekeeper.transport import LazyAsyncHttpClient
from gatekeeper.wiring import build_async_twilio_client, build_twilio_client


def test_sandbox_url_switches_the_whole_gate(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """GATEKEEPER_SANDBOX_URL sends Lookup and sends to the sandbox, with its test credentials."""
    settings = Settings.load(env={"GATEKEEPER_SANDBOX_URL": sandbox_server.url})
    gate = Gatekeeper.from_settings(settings)
    out = gate.notify("+14155550101", "Your table is ready", from_="+15005550006")
    assert out.action is Action.VOICE
    assert sandbox.lookup_count("+14155550101") == 1
    assert sandbox.call_twiml(out.sid or "") is not None


def test_gated_client_from_settings(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """GatedClient.from_settings builds the client and the gate from one Settings."""
    client = GatedClient.from_settings(Settings.load(env={"GATEKEEPER_SANDBOX_URL": sandbox_server.url}))
    message = client.messages.create(to="+14155550100", from_="+15005550006", body="hi")
    assert [m["sid"] for m in sandbox.messages()] == [message.sid]


def test_redis_url_shares_every_store(
    sandbox_server: SandboxServer, sandbox: Sandbox, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """With a Redis URL, two gates (two 'processes') share opt-outs and the Lookup cache."""
    config = tmp_path / "gk.toml"
    config.write_text(f'[redis]\nkey_prefix = "{redis_prefix}"\n')
    settings = Settings.load(
        config, env={"GATEKEEPER_SANDBOX_URL": sandbox_server.url, "GATEKEEPER_REDIS_URL": redis_url}
    )
    first, second = Gatekeeper.from_settings(settings), Gatekeeper.from_settings(settings)
    try:
        assert isinstance(first.stores.opt_outs, RedisStore)
        assert isinstance(first.stores.cache, RedisStore)
        first.decide("+14155550100")
        assert second.decide("+14155550100").cache_hit
        assert sandbox.lookup_count("+14155550100") == 1
        first.opt_out("+14155550100")
        assert second.decide("+14155550100").twilio_code == 21610
    finally:
        first.close()
        second.close()
        drop_prefix(redis_url, redis_prefix)


# -- region and edge: the client's hostnames, seen on real requests ----------------------------------------
MOBILE = "+14155550100"
CREDENTIALS = {"account_sid": TEST_ACCOUNT_SID, "auth_token": TEST_AUTH_TOKEN}
REGIONS = [  # [twilio] region/edge, and the host part the SDK writes between product and twilio.com
    pytest.param({"region": "ie1", "edge": "dublin"}, "dublin.ie1", id="region+edge"),
    pytest.param({"region": "au1"}, "au1", id="region"),
    pytest.param({"edge": "sydney"}, "sydney.us1", id="edge"),  # an edge alone is in US1, as Twilio documents
]
TRANSPORTS = ["twilio", "sandbox_url"]  # Twilio's own HttpClient (relayed to the sandbox), or the sandbox's


@pytest.fixture
def clean_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TWILIO_REGION/TWILIO_EDGE from the shell running the tests (the SDK would read them)."""
    monkeypatch.delenv("TWILIO_REGION", raising=False)
    monkeypatch.delenv("TWILIO_EDGE", raising=False)


def observed(client: Client, sandbox_url: str, asynchronous: bool) -> tuple[list[str], Any]:
    """Record the URL of every request ``client`` makes, at its HttpClient, before anything rewrites it.

    The sandbox transports are watched where they rewrite Twilio's hosts; Twilio's own HttpClient is
    replaced by a relay to a sandbox transport, so the request is still a real one, answered by the sandbox.
    Returns the URLs and the relay (None for a sandbox transport), whose session the caller closes.
    """
    urls: list[str] = []
    http = client.http_client
    if isinstance(http, (SandboxHttpClient, AsyncSandboxHttpClient)):
        rewrite = http.rewrite

        def watched(url: str) -> str:
            urls.append(url)
            return rewrite(url)

        http.rewrite = watched
        return urls, None
    if asynchronous:
        relay: Any = AsyncSandboxHttpClient(sandbox_url)

        async def relayed_async(method: str, url: str, **kwargs: Any) -> Any:
            urls.append(url)
            return await relay.request(method, url, **kwargs)

        http.request = relayed_async
    else:
        relay = SandboxHttpClient(sandbox_url)

        def relayed(method: str, url: str, **kwargs: Any) -> Any:
            urls.append(url)
            return relay.request(method, url, **kwargs)

        http.request = relayed
    return urls, relay


def twilio_settings(transport: str, sandbox_url: str, **twilio: Any) -> Settings:
    return Settings(twilio={**CREDENTIALS, **twilio, **({"sandbox_url": sandbox_url} if transport != "twilio" else {})})


def async_hosts(settings: Settings, sandbox_url: str) -> tuple[Client, list[str]]:
    """An async client built by wiring from ``settings`` (inside the loop: Twilio's own HttpClient opens its
    aiohttp session when built), the hosts of an account fetch and a Lookup it makes, in a debug-mode loop."""

    async def main() -> tuple[Client, list[str]]:
        client = build_async_twilio_client(settings)
        urls, relay = observed(client, sandbox_url, asynchronous=True)
        try:
            await client.api.v2010.accounts(TEST_ACCOUNT_SID).fetch_async()
            await client.lookups.v2.phone_numbers(MOBILE).fetch_async()
        finally:
            if relay is not None:
                await relay.close()
            await client.http_client.close()
        return client, [urlsplit(u).hostname or "" for u in urls]

    return asyncio.run(main(), debug=True)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("regional", "host"), REGIONS)
def test_async_client_region_and_edge_from_settings_reach_the_regional_host(
    sandbox_server: SandboxServer,
    sandbox: Sandbox,
    clean_shell: None,
    regional: dict[str, str],
    host: str,
    transport: str,
) -> None:
    """build_async_twilio_client sets [twilio] region/edge on the client, and its requests go to the regional
    hosts (``api.dublin.ie1.twilio.com``), over Twilio's own aiohttp client or the sandbox's alike."""
    client, hosts = async_hosts(twilio_settings(transport, sandbox_server.url, **regional), sandbox_server.url)
    expected = AsyncSandboxHttpClient if transport == "sandbox_url" else LazyAsyncHttpClient
    assert type(client.http_client) is expected
    assert (client.region, client.edge) == (regional.get("region"), regional.get("edge"))
    assert hosts == [f"api.{host}.twilio.com", f"lookups.{host}.twilio.com"]
    assert [(r.route, r.status) for r in sandbox.requests()] == [("accounts.fetch", 200), ("lookup", 200)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_async_client_takes_region_and_edge_from_the_environment(
    sandbox_server: SandboxServer, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    """TWILIO_REGION/TWILIO_EDGE in the environment are read by Settings (as the twilio SDK reads them) and give
    the async client its region and edge; [twilio] region/edge in settings built without them win; and a
    Settings loaded from another environment is not overruled by the process's (wiring gives the SDK an
    environment of its own, so it reads no variable behind settings' back)."""
    for name in ("GATEKEEPER_CONFIG", "GATEKEEPER_SANDBOX_URL", "TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    shell = {"TWILIO_REGION": "au1", "TWILIO_EDGE": "sydney"}
    shell |= {"TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN}
    if transport == "sandbox_url":
        shell["GATEKEEPER_SANDBOX_URL"] = sandbox_server.url
    for name, value in shell.items():
        monkeypatch.setenv(name, value)
    loaded = Settings.load()
    assert (loaded.twilio.region, loaded.twilio.edge) == ("au1", "sydney")
    client, hosts = async_hosts(loaded, sandbox_server.url)
    assert (client.region, client.edge) == ("au1", "sydney")
    assert hosts == ["api.sydney.au1.twilio.com", "lookups.sydney.au1.twilio.com"]
    configured = twilio_settings(transport, sandbox_server.url, region="ie1", edge="dublin")
    client, hosts = async_hosts(configured, sandbox_server.url)
    assert (client.region, client.edge) == ("ie1", "dublin")
    assert hosts == ["api.dublin.ie1.twilio.com", "lookups.dublin.ie1.twilio.com"]
    elsewhere = Settings.load(env={k: v for k, v in shell.items() if k not in ("TWILIO_REGION", "TWILIO_EDGE")})
    client, hosts = async_hosts(elsewhere, sandbox_server.url)
    assert (client.region, client.edge) == (None, None)  # the process's TWILIO_REGION does not leak in
    assert hosts == ["api.twilio.com", "lookups.twilio.com"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sync_client_region_and_edge_from_settings_reach_the_regional_host(
    sandbox_server: SandboxServer, sandbox: Sandbox, clean_shell: None, transport: str
) -> None:
    """build_twilio_client does the same for the blocking client: region/edge set, regional hosts asked."""
    client = build_twilio_client(twilio_settings(transport, sandbox_server.url, region="ie1", edge="dublin"))
    urls, relay = observed(client, sandbox_server.url, asynchronous=False)
    try:
        client.api.v2010.accounts(TEST_ACCOUNT_SID).fetch()
        client.lookups.v2.phone_numbers(MOBILE).fetch()
    finally:
        if relay is not None:
            relay.session.close()
    assert (client.region, client.edge) == ("ie1", "dublin")
    assert [urlsplit(u).hostname for u in urls] == ["api.dublin.ie1.twilio.com", "lookups.dublin.ie1.twilio.com"]
    assert [r.route for r in sandbox.requests()] == ["accounts.fetch", "lookup"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_async_gate_is_built_before_its_loop_and_serves_that_loop_only(
    sandbox_server: SandboxServer, sandbox: Sandbox, clean_shell: None, transport: str
) -> None:
    """AsyncGatekeeper.from_settings at startup, outside any event loop (twilio's own async client would need
    one), then used inside asyncio.run: its client opens its session there; a second loop is told to make
    its own client instead of failing inside aiohttp."""
    gate = AsyncGatekeeper.from_settings(twilio_settings(transport, sandbox_server.url))
    assert isinstance(gate.client.http_client, LazyAsyncHttpClient)
    urls, relay = observed(gate.client, sandbox_server.url, asynchronous=True)

    async def first() -> str:
        decision = await gate.decide(MOBILE)
        return decision.facts.source if decision.facts else ""

    async def second() -> None:
        await gate.client.api.v2010.accounts(TEST_ACCOUNT_SID).fetch_async()

    async def both() -> tuple[str, BaseException | None]:
        source = await first()
        other: BaseException | None = None
        try:
            await asyncio.to_thread(asyncio.run, second())
        except InvalidArgument as exc:
            other = exc
        finally:
            if relay is not None:
                await relay.close()
            await gate.close()
        return source, other

    source, other = asyncio.run(both(), debug=True)
    assert source == "lookup" and urlsplit(urls[0]).hostname == "lookups.twilio.com"
    assert other is not None and "one event loop" in str(other)  # (for Twilio's transport, said by the relay)
