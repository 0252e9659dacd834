"""Settings switch a whole Gatekeeper: to the sandbox by URL, to Redis by URL."""

from __future__ import annotations

from pathlib import Path

from support import drop_prefix

from gatekeeper import Action, GatedClient, Gatekeeper, Settings
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.redis import RedisStore


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
