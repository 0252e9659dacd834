"""Fixtures for the sandbox tests: one live emulator per session, reset before every test,
and a tiny real HTTP receiver for status callbacks.

Everything goes over real HTTP on 127.0.0.1 through the real twilio SDK; nothing is mocked.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from flask import Flask, Response, request
from support import FakeClock
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from gatekeeper.sandbox import TEST_AUTH_TOKEN, BackgroundServer, Sandbox, SandboxServer


@dataclass
class Received:
    """One callback as the receiver saw it."""

    path: str
    form: dict[str, str]
    headers: dict[str, str]
    signature_valid: bool


@dataclass
class Receiver:
    """A real HTTP server that records callbacks and checks their signatures.

    ``fail_next(n, status)`` makes the next ``n`` requests answer ``status``.
    """

    url: str = ""
    received: list[Received] = field(default_factory=list)
    _failures: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, count: int, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def next_status(self) -> int:
        with self._lock:
            return self._failures.pop(0) if self._failures else 204

    def statuses(self, key: str) -> list[str]:
        return [r.form[key] for r in self.received if key in r.form]


def _receiver_app(receiver: Receiver, auth_token: str) -> Flask:
    app = Flask("callback-receiver")
    validator = RequestValidator(auth_token)

    @app.post("/<path:path>")
    def receive(path: str) -> Response:
        valid = validator.validate(request.url, request.form, request.headers.get("X-Twilio-Signature", ""))
        with receiver._lock:
            receiver.received.append(Received("/" + path, request.form.to_dict(), dict(request.headers), bool(valid)))
        return Response(status=receiver.next_status())

    return app


@pytest.fixture
def client(sandbox_server: SandboxServer, sandbox: Sandbox) -> Client:
    """A real twilio Client on the test account, talking to the emulator."""
    return sandbox_server.client()


@pytest.fixture(scope="session")
def _receiver_server() -> Iterator[tuple[BackgroundServer, Receiver]]:
    receiver = Receiver()
    served = BackgroundServer(_receiver_app(receiver, TEST_AUTH_TOKEN), name="callback-receiver").start()
    receiver.url = served.url
    yield served, receiver
    served.stop()


@pytest.fixture
def receiver(_receiver_server: tuple[BackgroundServer, Receiver]) -> Receiver:
    """The callback receiver, emptied for this test."""
    _, found = _receiver_server
    with found._lock:
        found.received.clear()
        found._failures.clear()
    return found


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)
