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
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from gatekeeper.sandbox import TEST_AUTH_TOKEN, Sandbox, SandboxServer


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


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


class _Served:
    def __init__(self, app: Flask) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """One emulator for the whole session, on a free loopback port."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[Sandbox]:
    """The emulator's control object, reset before and after the test."""
    sandbox_server.sandbox.reset()
    yield sandbox_server.sandbox
    sandbox_server.sandbox.reset()


@pytest.fixture
def client(sandbox_server: SandboxServer, sandbox: Sandbox) -> Client:
    """A real twilio Client on the test account, talking to the emulator."""
    return sandbox_server.client()


@pytest.fixture(scope="session")
def _receiver_server() -> Iterator[tuple[_Served, Receiver]]:
    receiver = Receiver()
    served = _Served(_receiver_app(receiver, TEST_AUTH_TOKEN))
    receiver.url = served.url
    yield served, receiver
    served.stop()


@pytest.fixture
def receiver(_receiver_server: tuple[_Served, Receiver]) -> Receiver:
    """The callback receiver, emptied for this test."""
    _, found = _receiver_server
    with found._lock:
        found.received.clear()
        found._failures.clear()
    return found


class FakeClock:
    """A clock tests move by hand (epoch seconds)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
