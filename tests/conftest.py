"""Shared fixtures: a fake clock, Twilio's HTTP intercepted by ``responses``, and a real Redis.

Redis: the suite uses the server on 127.0.0.1:6379 when it answers; otherwise it
starts a private ``redis-server`` on a free port; when neither is possible the
Redis tests are skipped with a reason saying so (shown in pytest's summary).
Every test gets a fresh key prefix, so tests never see each other's keys. A Redis
Cluster and a Sentinel are always the suite's own (``redis_cluster``,
``redis_sentinel``: started once, when a test first asks for one); ``redis_deployment`` runs a test once on each
(the ``[redis]`` table of each mode).

SQLite: a gate built from settings keeps its store under ``$XDG_DATA_HOME``, which every test points
at a directory of its own (``data_home``).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from support import (
    ACCOUNT_SID,
    API,
    AUTH_TOKEN,
    LOOKUP,
    FakeClock,
    FakeTwilio,
    PrivateCluster,
    PrivateRedis,
    PrivateSentinel,
    answers,
    drop_prefix,
)
from twilio.rest import Client

from gatekeeper import Gatekeeper, Settings, Stores
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.memory import MemoryStore
from gatekeeper.stores.redis import RedisStore
from gatekeeper.stores.sqlite import SQLiteStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def data_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where a gate built from settings keeps its SQLite store by default: a fresh directory per test (inherited
    by the processes it starts), never the user's data directory or the repository."""
    home = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    monkeypatch.delenv("GATEKEEPER_STORE_PATH", raising=False)
    return home


@pytest.fixture
def twilio_http() -> Iterator[FakeTwilio]:
    """Intercept Twilio's HTTP; unmatched requests fail the test (nothing reaches the network)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakeTwilio(mock)
        mock.add_callback("GET", LOOKUP, callback=fake._lookup)
        mock.add_callback("POST", f"{API}/Messages.json", callback=lambda r: fake._create("message", "SM", r))
        mock.add_callback("POST", f"{API}/Calls.json", callback=lambda r: fake._create("call", "CA", r))
        mock.add_callback(
            "POST",
            re.compile(r"https://verify\.twilio\.com/v2/Services/VA[0-9a-f]{32}/Verifications"),
            callback=lambda r: fake._create("verification", "VE", r),
        )
        yield fake


@pytest.fixture
def twilio_client() -> Client:
    return Client(ACCOUNT_SID, AUTH_TOKEN, environment={})


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    shared = "redis://127.0.0.1:6379/0"
    if answers(shared):
        yield shared
        return
    private = PrivateRedis().start()
    try:
        yield private.url
    finally:
        private.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    """A Redis Cluster of the suite's own: three primaries on free ports, no replicas (skipped, saying why, without
    redis-server and redis-cli). Tests share it, each under its own key prefix."""
    cluster = PrivateCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSentinel]:
    """A primary and a Sentinel monitoring it, both password-protected, on free ports (skipped, saying why, without
    redis-server). Tests share them, each under its own key prefix."""
    sentinel = PrivateSentinel(tmp_path_factory.mktemp("redis-sentinel")).start()
    try:
        yield sentinel
    finally:
        sentinel.stop()


@pytest.fixture(params=["standalone", "cluster", "sentinel"])
def redis_deployment(request: pytest.FixtureRequest, redis_prefix: str) -> Iterator[dict[str, Any]]:
    """The ``[redis]`` table of each way a deployment runs Redis, under a fresh key prefix: the shared (or suite's)
    server, the suite's cluster (one node named), the suite's Sentinel (passwords on both). Keys dropped after."""
    if request.param == "standalone":
        url: str = request.getfixturevalue("redis_url")
        yield {"url": url, "key_prefix": redis_prefix}
        drop_prefix(url, redis_prefix)
        return
    server: PrivateCluster | PrivateSentinel = request.getfixturevalue(f"redis_{request.param}")
    yield server.redis_settings(redis_prefix)
    server.drop(redis_prefix)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis this test owns: stopping it never touches the shared server."""
    server = PrivateRedis().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    return f"gktest:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_store(redis_url: str, redis_prefix: str) -> Iterator[RedisStore]:
    """A RedisStore with a fresh key prefix; its keys are deleted afterwards."""
    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    try:
        yield store
    finally:
        store.close()
        drop_prefix(redis_url, redis_prefix)


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """One Twilio emulator for the whole suite, on a free loopback port."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[Sandbox]:
    """The emulator's control object, reset before and after the test."""
    sandbox_server.sandbox.reset()
    yield sandbox_server.sandbox
    sandbox_server.sandbox.reset()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(params=["memory", "sqlite", "redis"])
def each_store_gate(
    request: pytest.FixtureRequest, sandbox_server: SandboxServer, tmp_path: Path
) -> Iterator[Callable[..., tuple[Gatekeeper, FakeClock]]]:
    """Gates on each store (memory, SQLite, Redis) over the sandbox, on one fake clock (the guard's windows take the
    caller's time); ``make(start=<epoch seconds>, **settings)`` builds one."""
    made: list[Gatekeeper] = []

    def make(*, start: float = 1_800_000_000.0, **settings: Any) -> tuple[Gatekeeper, FakeClock]:
        clock = FakeClock(start)
        if request.param == "memory":
            store: Any = MemoryStore(clock=clock)
        elif request.param == "sqlite":
            store = SQLiteStore(tmp_path / f"gk{len(made)}.db", clock=clock)
        else:
            url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
            store = RedisStore.from_url(url, prefix=f"{prefix}{len(made)}:")
        gate = Gatekeeper(
            sandbox_server.client(), settings=Settings(**settings), clock=clock, sleep=clock.sleep,
            stores=Stores.using(store),
        )  # fmt: skip
        made.append(gate)
        return gate, clock

    yield make
    for gate in made:
        gate.close()


@pytest.fixture
def root_logging_restored() -> Iterator[None]:
    """The CLI's ``main()`` installs its own root handler (as a console script should): the tests that run it get
    the root logger's handlers and level back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
