"""Shared helpers for the webhook tests: signing, posting, a fake clock, a flaky store, private Redis servers."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from gatekeeper.errors import StoreUnavailable
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import Settings
from gatekeeper.stores.base import Stores
from gatekeeper.webhooks import ConsentEvent, InboundEvent, StatusEvent, init_app

ACCOUNT_SID = "AC" + "0" * 32
TOKEN = "test-auth-token-5f1e2d3c4b5a6978"
OTHER_TOKEN = "rotated-token-00aa11bb22cc33dd"
BASE = "http://localhost"
PREFIX = "/twilio"
ALICE = "+14155552671"
BOB = "+14155552672"
CAROL = "+12025550123"
OUR_NUMBER = "+14155550100"
OTHER_NUMBER = "+14155550199"
SERVICE_SID = "MG" + "c" * 32


def sid(prefix: str = "SM", n: int = 1) -> str:
    """A SID shaped like Twilio's: two letters and 32 hex digits."""
    return f"{prefix}{n:032x}"


class FakeClock:
    """A clock tests move by hand (epoch seconds)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings(**webhooks: Any) -> Settings:
    """Settings for tests: no Lookup (no network), ``[webhooks]`` overridden by ``webhooks``."""
    extra = {k: webhooks.pop(k) for k in ("twilio", "policy", "audit") if k in webhooks}
    return Settings(lookup={"enabled": False}, webhooks=webhooks, **extra)


def make_gate(
    *, stores: Stores | None = None, clock: FakeClock | None = None, token: str = TOKEN, **webhooks: Any
) -> Gatekeeper:
    client = Client(ACCOUNT_SID, token, environment={})
    return Gatekeeper(client, settings=settings(**webhooks), stores=stores, clock=clock or FakeClock())


@dataclass
class Recorder:
    """Collects what the hooks receive."""

    inbound: list[InboundEvent] = field(default_factory=list)
    consent: list[ConsentEvent] = field(default_factory=list)
    status: list[StatusEvent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_inbound(self, event: InboundEvent) -> None:
        with self.lock:
            self.inbound.append(event)

    def on_consent(self, event: ConsentEvent) -> None:
        with self.lock:
            self.consent.append(event)

    def on_status(self, event: StatusEvent) -> None:
        with self.lock:
            self.status.append(event)


def make_app(gate: Gatekeeper, recorder: Recorder | None = None, **kwargs: Any) -> Flask:
    app = Flask("webhook-test")
    rec = recorder or Recorder()
    init_app(app, gate, on_inbound=rec.on_inbound, on_consent=rec.on_consent, on_status=rec.on_status, **kwargs)
    return app


Params = Mapping[str, str] | Sequence[tuple[str, str]]


def sign(url: str, params: Params, token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, MultiDict(params)))


def post(
    client: FlaskClient,
    path: str,
    params: Params,
    *,
    token: str | None = TOKEN,
    signed_url: str | None = None,
    headers: Mapping[str, str] | None = None,
    base_url: str = BASE,
) -> TestResponse:
    """POST form ``params`` to ``PREFIX + path``, signed with ``token`` for ``signed_url`` (default: the URL posted)."""
    url = signed_url or f"{base_url}{PREFIX}{path}"
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["X-Twilio-Signature"] = sign(url, params, token)
    return client.post(PREFIX + path, data=MultiDict(params), headers=all_headers, base_url=base_url)


def inbound(body: str, *, frm: str = ALICE, to: str = OUR_NUMBER, n: int = 1, **extra: str) -> dict[str, str]:
    """The fields of an inbound message webhook."""
    return {
        "MessageSid": sid("SM", n),
        "SmsSid": sid("SM", n),
        "AccountSid": ACCOUNT_SID,
        "From": frm,
        "To": to,
        "Body": body,
        "NumMedia": "0",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def message_status(
    status: str, *, n: int = 1, to: str = ALICE, error: int | None = None, **extra: str
) -> dict[str, str]:
    """The fields of a message status callback."""
    fields = {
        "MessageSid": sid("SM", n),
        "SmsSid": sid("SM", n),
        "AccountSid": ACCOUNT_SID,
        "From": OUR_NUMBER,
        "To": to,
        "MessageStatus": status,
        "SmsStatus": status,
        "ApiVersion": "2010-04-01",
        **extra,
    }
    if error is not None:
        fields["ErrorCode"] = str(error)
    return fields


def call_status(status: str, *, n: int = 1, to: str = ALICE, seq: int = 0, **extra: str) -> dict[str, str]:
    """The fields of a call status callback."""
    return {
        "CallSid": sid("CA", n),
        "AccountSid": ACCOUNT_SID,
        "From": OUR_NUMBER,
        "To": to,
        "CallStatus": status,
        "SequenceNumber": str(seq),
        "ApiVersion": "2010-04-01",
        **extra,
    }


class Flaky:
    """Wraps a store; the verbs named in ``failing`` raise StoreUnavailable while they are listed."""

    def __init__(self, inner: Any, failing: Iterable[str] = ()) -> None:
        self._inner = inner
        self.failing = set(failing)

    def __getattr__(self, name: str) -> Any:
        if name in self.failing:

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise StoreUnavailable(f"injected failure in {name}")

            return fail
        return getattr(self._inner, name)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server on its own port, started and stopped by the test (never the shared one)."""

    def __init__(self, port: int, extra_args: Sequence[str] = ()) -> None:
        self.port = port
        self.args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", *extra_args]
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        # Wait on the server's own log line, not a sleep: ready means the data set is loaded too.
        for line in self.proc.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError(f"redis-server on port {self.port} did not start")
        # Keep draining the log so the server never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis flushes its append-only file, then exits
            self.proc.wait(timeout=10)
        self.proc = None


def redis_server_available() -> bool:
    return shutil.which("redis-server") is not None


def start_private_redis(directory: Path | None = None) -> RedisServer:
    """Start a private server; with ``directory`` it persists (append-only file) so a restart keeps data."""
    args = ["--save", "", "--appendonly", "no"]
    if directory is not None:
        args = ["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(directory)]
    server = RedisServer(free_port(), args)
    server.start()
    return server


def drop_prefix(url: str, prefix: str) -> None:
    """Delete a test's Redis keys (SCAN, never KEYS)."""
    import redis

    conn = redis.Redis.from_url(url, socket_timeout=2)
    try:
        keys = list(conn.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            conn.delete(*keys)
    except redis.RedisError:
        pass
    finally:
        conn.close()
