"""Gatekeeper on each way a deployment runs Redis, configured only by ``[redis]`` (``mode``, ``url``, ``sentinels``,
``service_name``, ``sentinel_password``): one server, a Redis Cluster named by one node, the primary a Sentinel
names. End to end through the real twilio SDK (the drop-in GatedClient) against the sandbox and the Flask blueprint
on loopback: a send goes out, its signed status callback is stored, a signed STOP opts the number out and the next
send is refused with Twilio's 21610, concurrent sends to a new number share one Lookup; the async gate the same; the
health report and ``gatekeeper check`` name the durability risks instead of failing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from support import run_threads
from twilio.request_validator import RequestValidator

from gatekeeper import Action, GatedClient, Gatekeeper, Settings
from gatekeeper.aio import AsyncGatekeeper
from gatekeeper.cli import main
from gatekeeper.errors import GateRefused
from gatekeeper.models import Outcome
from gatekeeper.sandbox import TEST_AUTH_TOKEN, BackgroundServer, Sandbox, SandboxServer
from gatekeeper.stores.redis import RedisStore
from gatekeeper.stores.redis_async import AsyncRedisStore
from gatekeeper.webhooks import init_app

pytestmark = pytest.mark.redis

MOBILE = "+14155550100"  # delivered
NEW = "+14155550105"  # not looked up before under the test's prefix
FROM = "+15005550006"
SENDERS = 20


def configured(redis: dict[str, Any], sandbox_server: SandboxServer) -> Settings:
    """What a deployment's file says: ``[redis]``, Twilio at the sandbox, webhooks called on loopback."""
    return Settings(redis=redis, twilio={"sandbox_url": sandbox_server.url}, webhooks={"allowed_hosts": ["127.0.0.1"]})


@pytest.fixture
def deployed(
    redis_deployment: dict[str, Any], sandbox_server: SandboxServer, sandbox: Sandbox
) -> Iterator[tuple[Gatekeeper, GatedClient, str]]:
    """The gate built from settings, the twilio-shaped client over it, and the URL of its webhooks (the blueprint
    served on loopback, where the sandbox delivers its signed callbacks)."""
    gate = Gatekeeper.from_settings(configured(redis_deployment, sandbox_server))
    assert isinstance(gate.stores.opt_outs, RedisStore) and isinstance(gate.stores.cache, RedisStore)
    app = Flask("redis-deployment")
    init_app(app, gate)
    try:
        with BackgroundServer(app, name="redis-deployment-webhooks") as web:
            yield gate, GatedClient(gate.client, gate), web.url + "/twilio"
    finally:
        gate.close()


def signed_post(url: str, form: dict[str, str]) -> int:
    """POST ``form`` to ``url`` as Twilio would: signed with the account's auth token (the sandbox's)."""
    signature = RequestValidator(TEST_AUTH_TOKEN).compute_signature(url, form)
    return requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10).status_code


def test_send_status_stop_refusal_from_configuration(
    deployed: tuple[Gatekeeper, GatedClient, str],
    sandbox: Sandbox,
    redis_deployment: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    """messages.create goes out; the sandbox's signed status callbacks reach the blueprint and the final status is
    readable from the store; a signed inbound STOP opts the number out, for this gate and for another built from
    the same settings (another process); the next messages.create raises GateRefused 21610 and sends nothing. On
    the cluster, no node refused a command all along (MOVED, CROSSSLOT…)."""
    gate, client, hooks = deployed
    cluster = request.getfixturevalue("redis_cluster") if redis_deployment.get("mode") == "cluster" else None
    if cluster is not None:
        cluster.reset_stats()
    message = client.messages.create(
        to=MOBILE, from_=FROM, body="Your order shipped", status_callback=hooks + "/messages/status"
    )
    assert [m["sid"] for m in sandbox.messages()] == [message.sid]

    deliveries = sandbox.flush_callbacks()
    assert [d.status_code for d in deliveries] == [200, 200]  # sent, delivered: each signed, each stored
    record = gate.status_of(message.sid)
    assert record is not None and record.status == "delivered"

    stop = {
        "MessageSid": "SM" + "5" * 32,
        "AccountSid": message.account_sid,
        "From": MOBILE,
        "To": FROM,
        "Body": "STOP",
    }
    assert signed_post(hooks + "/messages/inbound", stop) == 200
    assert gate.is_opted_out(MOBILE)
    other_process = Gatekeeper.from_settings(gate.settings)
    try:
        assert other_process.is_opted_out(MOBILE)
        assert other_process.status_of(message.sid) == record
    finally:
        other_process.close()

    with pytest.raises(GateRefused) as refused:
        client.messages.create(to=MOBILE, from_=FROM, body="One more thing")
    assert refused.value.code == 21610
    assert len(sandbox.messages()) == 1
    if cluster is not None:
        assert cluster.errors() == {}


def test_concurrent_sends_to_a_new_number_share_one_lookup(
    deployed: tuple[Gatekeeper, GatedClient, str], sandbox: Sandbox
) -> None:
    """20 threads send to one new number at once through the drop-in client: every message goes out, after one
    Lookup."""
    _, client, _ = deployed
    sent = run_threads(SENDERS, lambda i: client.messages.create(to=NEW, from_=FROM, body=f"Reminder {i}"))
    assert [type(m).__name__ for m in sent if isinstance(m, Exception)] == []
    assert len({m.sid for m in sent}) == SENDERS == len(sandbox.messages())
    assert sandbox.lookup_count(NEW) == 1


def test_the_async_gate_sends_and_refuses_after_an_opt_out(
    redis_deployment: dict[str, Any], sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """AsyncGatekeeper.from_settings (redis.asyncio; on a cluster its cluster client): one notify goes out as SMS;
    after opt_out, the next is refused with 21610 and sends nothing."""

    async def main() -> tuple[Outcome, Outcome, bool]:
        gate = AsyncGatekeeper.from_settings(configured(redis_deployment, sandbox_server))
        assert isinstance(gate.stores.opt_outs, AsyncRedisStore)
        try:
            sent = await gate.notify(MOBILE, "Your order shipped", from_=FROM)
            await gate.opt_out(MOBILE)
            return sent, await gate.notify(MOBILE, "One more thing", from_=FROM), await gate.is_opted_out(MOBILE)
        finally:
            await gate.close()

    sent, refused, opted_out = asyncio.run(main())
    assert sent.action is Action.SMS and [m["sid"] for m in sandbox.messages()] == [sent.sid]
    assert (refused.action, refused.decision.twilio_code, opted_out) == (Action.REFUSE, 21610, True)
    assert len(sandbox.messages()) == 1


@pytest.fixture(params=["cluster", "sentinel"])
def own_deployment(request: pytest.FixtureRequest, redis_prefix: str) -> Iterator[dict[str, Any]]:
    """A deployment on the suite's own servers only (their persistence known: none), never the shared one."""
    server = request.getfixturevalue(f"redis_{request.param}")
    yield server.redis_settings(redis_prefix)
    server.drop(redis_prefix)


def test_health_reports_the_durability_risks(
    own_deployment: dict[str, Any], sandbox_server: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    """No server of the suite's persists: building the gates logs persistence:none, and health() of both gates
    answers (every store ok) while saying the stores are not durable, on a cluster naming every primary."""
    settings = configured(own_deployment, sandbox_server)
    with caplog.at_level(logging.WARNING, logger="gatekeeper.stores"):
        gate = Gatekeeper.from_settings(settings)
    try:
        health = gate.health()
    finally:
        gate.close()
    assert [r.getMessage().split(":")[:3] for r in caplog.records] == [["store durability", " persistence", "none"]]

    async def main() -> dict[str, Any]:
        agate = AsyncGatekeeper.from_settings(settings)
        try:
            return await agate.health()
        finally:
            await agate.close()

    for report in (health, asyncio.run(main())):
        assert report["ok"] is True and set(report["stores"].values()) == {"ok"}
        assert report["durable"] is False
        assert [risk["code"] for risk in report["durability"]] == ["persistence:none"]
        if own_deployment["mode"] == "cluster":
            assert "on 3 of 3 primaries" in report["durability"][0]["detail"]


@pytest.fixture
def cli_logging_restored(monkeypatch: pytest.MonkeyPatch, root_logging_restored: None) -> None:
    """main() with the root logger given back afterwards; no variable of the environment steers the command: only
    the file."""
    for name in ("GATEKEEPER_CONFIG", "GATEKEEPER_REDIS_URL", "GATEKEEPER_SANDBOX_URL", "TWILIO_ACCOUNT_SID"):
        monkeypatch.delenv(name, raising=False)


def test_gatekeeper_check_warns_of_the_risks_and_answers(
    own_deployment: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], cli_logging_restored: None
) -> None:
    """``gatekeeper check --sandbox`` with ``[redis]`` in the config file: the decision is printed (exit 0), and the
    durability risk is a warning on stderr, not a failure."""
    config = tmp_path / "gatekeeper.toml"
    config.write_text("[redis]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in own_deployment.items()))
    assert main(["check", MOBILE, "--sandbox", "--json", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["action"] == "sms"
    assert "store durability: persistence:none" in err
    assert "error" not in err


def test_the_suites_private_cluster_moves_off_a_port_taken_before_it_binds(tmp_path: Path) -> None:
    """A free port is only a guess: when another process takes one the suite picked for a cluster node before the
    node binds it, the cluster starts on new ports instead of failing every cluster test."""
    import socket

    import redis
    from support import PrivateCluster

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = PrivateCluster(tmp_path)
        cluster.ports[0] = (port, cluster.ports[0][1])
        try:
            cluster.start()
            assert cluster.ports[0][0] != port and len(cluster.urls) == 3
            with redis.Redis.from_url(cluster.url) as node:
                assert node.cluster("info")["cluster_state"] == "ok"
        finally:
            cluster.stop()
