"""A 2xx means stored: Redis down → 503 and a clean retry; an opt-out is visible to other processes before the 2xx."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode
from uuid import uuid4

import pytest
from support import PrivateRedis, drop_prefix

from gatekeeper.stores.base import Stores
from gatekeeper.stores.redis import RedisStore

from .helpers import (
    ALICE,
    BOB,
    PREFIX,
    TOKEN,
    FakeClock,
    inbound,
    make_app,
    make_gate,
    post,
    sign,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server with an append-only file, so a restart keeps its data like a real deployment."""
    server = PrivateRedis(persist_dir=tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_outage_503_then_retry_applies_once(persistent_redis: PrivateRedis, clock: FakeClock) -> None:
    """STOP ok; Redis stops; another STOP → 503; Redis restarts; the retry → 200, applied once, nothing lost."""
    store = RedisStore.from_url(persistent_redis.url, prefix=f"gktest:{uuid4().hex}:", timeout_seconds=1.0)
    gate = make_gate(stores=Stores.using(store), clock=clock)
    client = make_app(gate).test_client()
    try:
        assert post(client, "/messages/inbound", inbound("STOP", frm=ALICE, n=1)).status_code == 200

        persistent_redis.stop()
        bob_stop = inbound("STOP", frm=BOB, n=2)
        assert post(client, "/messages/inbound", bob_stop).status_code == 503
        assert client.get(f"{PREFIX}/healthz").status_code == 503

        persistent_redis.start()
        assert post(client, "/messages/inbound", bob_stop).status_code == 200
        assert gate.is_opted_out(ALICE)  # the earlier opt-out survived the restart
        assert gate.is_opted_out(BOB)
        history = gate.stores.opt_outs.consent_history(BOB)
        assert [(c.opted_out, c.source) for c in history] == [(True, f"webhook:STOP:{bob_stop['MessageSid']}")]
        assert len(gate.stores.opt_outs.consent_history(ALICE)) == 1
        # A further redelivery is a duplicate: still one entry.
        assert post(client, "/messages/inbound", bob_stop).status_code == 200
        assert len(gate.stores.opt_outs.consent_history(BOB)) == 1
    finally:
        store.close()


def test_opt_out_is_effective_for_another_process_before_the_2xx(redis_url: str) -> None:
    """The app runs in its own process; right after its 200 to STOP, this process's gate refuses the number 21610."""
    prefix = f"gktest:{uuid4().hex}:"
    env = {**os.environ, "GK_TEST_TOKEN": TOKEN}
    script = Path(__file__).with_name("serve_app.py")
    repo = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, str(script), redis_url, prefix], stdout=subprocess.PIPE, env=env, text=True
    )
    store = RedisStore.from_url(redis_url, prefix=prefix)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the child prints its port once it listens: no polling, no sleep
        assert line.startswith("PORT "), line
        port = int(line.split()[1])
        url = f"http://127.0.0.1:{port}{PREFIX}/messages/inbound"
        fields = inbound("STOP", frm=ALICE)
        request = urllib.request.Request(
            url,
            data=urlencode(fields).encode(),
            headers={"X-Twilio-Signature": sign(url, fields), "Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a local http URL we built
            assert response.status == 200

        gate = make_gate(stores=Stores.using(store))
        decision = gate.decide(ALICE)
        assert (decision.refused, decision.twilio_code) == (True, 21610)
        assert not gate.decide(ALICE, purpose="mfa").refused
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        store.close()
        drop_prefix(redis_url, prefix)
