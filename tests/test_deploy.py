"""The deployment recipe runs as written: Redis with deploy/redis.conf, the webhooks under gunicorn with
deploy/gunicorn.conf.py and two workers, /metrics apart from them, all on loopback (no containers)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from support import _spawn, clean_env, free_port
from twilio.request_validator import RequestValidator

from gatekeeper import Action, Gatekeeper, Settings
from gatekeeper.sandbox import TEST_AUTH_TOKEN, SandboxServer

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ALICE = "+14155550100"  # a mobile in the sandbox
FROM = "+15005550006"

pytestmark = pytest.mark.slow


@dataclass
class Recipe:
    env: dict[str, str]  # what the webhooks were started with (and the test's own gate reads)
    webhooks: str  # http://127.0.0.1:PORT
    metrics: str  # http://127.0.0.1:PORT/metrics
    access_log: Path
    server_log: Path
    redis_url: str


@pytest.fixture
def recipe(tmp_path: Path, sandbox_server: SandboxServer) -> Iterator[Recipe]:
    """redis-server with deploy/redis.conf (AOF in tmp_path), then gunicorn with deploy/gunicorn.conf.py and two
    workers, pointed at that Redis and at the sandbox; both stopped afterwards."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("no redis-server on the PATH: cannot run the deployment recipe")
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed (pip install -e '.[test]'): cannot run the deployment recipe")
    redis_port, web_port, metrics_port = free_port(), free_port(), free_port()
    (tmp_path / "redis").mkdir()
    # The recipe's file as it is; options after it override only where this test must differ (port, dir, bind).
    args = [redis_server, str(DEPLOY / "redis.conf"), "--port", str(redis_port), "--dir", str(tmp_path / "redis")]
    args += ["--bind", "127.0.0.1", "--save", ""]
    procs = [_spawn(args, "Ready to accept connections", "redis-server", time.monotonic() + 10)]
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    webhooks = f"http://127.0.0.1:{web_port}"
    env = clean_env(
        "PROMETHEUS_",
        GATEKEEPER_REDIS_URL=redis_url,
        GATEKEEPER_REDIS__REQUIRE_PERSISTENCE="true",  # the recipe's Redis passes the gate's own check
        GATEKEEPER_SANDBOX_URL=sandbox_server.url,
        GATEKEEPER_WEBHOOKS__PUBLIC_BASE_URL=webhooks,
        GATEKEEPER_WEBHOOKS__JOURNAL_PATH=str(tmp_path / "journal.db"),
        GATEKEEPER_METRICS__PORT=str(metrics_port),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    access_log, server_log = tmp_path / "access.log", tmp_path / "gunicorn.log"
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(DEPLOY / "gunicorn.conf.py")]
    gunicorn += ["--bind", f"127.0.0.1:{web_port}", "--workers", "2", "--access-logfile", str(access_log)]
    with server_log.open("w") as out:
        procs.append(subprocess.Popen(gunicorn, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT))
    try:
        yield Recipe(env, webhooks, f"http://127.0.0.1:{metrics_port}/metrics", access_log, server_log, redis_url)
    finally:
        for proc in reversed(procs):  # gunicorn first (SIGTERM: a graceful stop), then Redis
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until_up(recipe: Recipe, deadline: float) -> None:
    while True:
        try:
            if requests.get(recipe.webhooks + "/twilio/healthz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("the webhooks did not answer under gunicorn:\n" + recipe.server_log.read_text()[-3000:])
        time.sleep(0.05)


def _post_stop(url: str, sender: str, n: int) -> int:
    """One signed STOP from ``sender`` on a connection of its own; the status it got."""
    form = {"MessageSid": f"SM{n:032x}", "AccountSid": "AC" + "0" * 32, "From": sender, "To": FROM, "Body": "STOP"}
    signature = RequestValidator(TEST_AUTH_TOKEN).compute_signature(url, form)
    with requests.Session() as fresh:
        response = fresh.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)
    return response.status_code


def _worker_pids(access_log: Path) -> set[str]:
    """The pids of the workers that answered the inbound route, read from the recipe's access-log format."""
    lines = access_log.read_text().splitlines() if access_log.exists() else []
    found = (re.search(r"pid=<(\d+)>", line) for line in lines if "/twilio/messages/inbound" in line)
    return {m.group(1) for m in found if m}


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_a_stop_through_the_gunicorn_recipe_stops_the_next_send(recipe: Recipe) -> None:
    """Signed STOPs served by both gunicorn workers are stored in the recipe's Redis (AOF on): a later send to
    the number, by a gate in this process, is refused 21610; /metrics on the metrics port counts every STOP,
    merged across the workers, and the webhook port serves no /metrics."""
    started = time.monotonic()
    client = redis.Redis.from_url(recipe.redis_url)
    persistence = client.config_get("appendonly") | client.config_get("appendfsync")
    assert persistence == {"appendonly": "yes", "appendfsync": "everysec"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    gate = Gatekeeper.from_settings(Settings.load(env=recipe.env))
    try:
        before = gate.notify(ALICE, "Your table is ready", from_=FROM)
        assert before.action is Action.SMS and before.sid  # it goes out before the STOP

        _wait_until_up(recipe, started + 8)
        url = recipe.webhooks + "/twilio/messages/inbound"
        statuses = [_post_stop(url, ALICE, 0)]
        # More STOPs (other numbers), eight at a time, each on a connection of its own, until two workers answered.
        with ThreadPoolExecutor(8) as pool:
            while len(_worker_pids(recipe.access_log)) < 2 and len(statuses) < 160:
                n = len(statuses)
                senders = [(f"+1415555{(n + i) % 10_000:04d}", n + i) for i in range(8)]
                statuses += pool.map(lambda s: _post_stop(url, *s), senders)
        assert statuses == [200] * len(statuses)
        assert len(_worker_pids(recipe.access_log)) >= 2, recipe.access_log.read_text()

        after = gate.notify(ALICE, "Your table is ready", from_=FROM)
        assert after.action is Action.REFUSE and after.decision.twilio_code == 21610
        assert after.sid is None

        scraped = requests.get(recipe.metrics, timeout=5)
        assert scraped.status_code == 200
        processed = _sample(scraped.text, "gatekeeper_webhook_events_total", route="inbound", outcome="processed")
        assert processed == len(statuses)  # every worker's count, in one scrape of the master
        assert _sample(scraped.text, "gatekeeper_webhook_seconds_count", route="inbound") == len(statuses)
        assert requests.get(recipe.webhooks + "/metrics", timeout=5).status_code == 404
    finally:
        gate.close()
        client.close()
