"""Fixtures for the webhook tests: a Gatekeeper on memory stores, a Flask app, Redis (shared or private)."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest
import redis
import responses
from flask import Flask
from flask.testing import FlaskClient

from gatekeeper.gate import Gatekeeper
from gatekeeper.stores.base import Stores
from gatekeeper.stores.redis import RedisStore

from .helpers import (
    FakeClock,
    Recorder,
    drop_prefix,
    make_app,
    make_gate,
    redis_server_available,
    start_private_redis,
)

SHARED_REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def no_network() -> Iterator[responses.RequestsMock]:
    """Any HTTP call through requests (the twilio SDK) fails instead of reaching the internet."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def gate(clock: FakeClock) -> Gatekeeper:
    return make_gate(clock=clock)


@pytest.fixture
def app(gate: Gatekeeper, recorder: Recorder) -> Flask:
    return make_app(gate, recorder)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The shared Redis on 127.0.0.1:6379 if it answers PING, else a private server, else skip."""
    try:
        probe = redis.Redis.from_url(SHARED_REDIS, socket_connect_timeout=0.5, socket_timeout=0.5)
        probe.ping()
        probe.close()
        yield SHARED_REDIS
        return
    except redis.RedisError:
        pass
    if not redis_server_available():
        pytest.skip("no Redis: nothing answers on 127.0.0.1:6379 and redis-server is not on PATH")
    server = start_private_redis()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[RedisStore]:
    """A RedisStore with a fresh key prefix; its keys are deleted afterwards."""
    prefix = f"gktest:{uuid4().hex}:"
    store = RedisStore.from_url(redis_url, prefix=prefix, timeout_seconds=2.0)
    yield store
    store.close()
    drop_prefix(redis_url, prefix)


@pytest.fixture
def redis_gate(redis_store: RedisStore, clock: FakeClock) -> Gatekeeper:
    return make_gate(stores=Stores.using(redis_store), clock=clock)
