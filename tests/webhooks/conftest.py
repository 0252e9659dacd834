"""Fixtures for the webhook tests: a Gatekeeper on memory stores, a Flask app, Redis (shared or private)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient

from gatekeeper.gate import Gatekeeper
from gatekeeper.stores.base import Stores
from gatekeeper.stores.redis import RedisStore

from .helpers import FakeClock, Recorder, make_app, make_gate


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


@pytest.fixture
def redis_gate(redis_store: RedisStore, clock: FakeClock) -> Gatekeeper:
    return make_gate(stores=Stores.using(redis_store), clock=clock)
