"""Shared helpers for the webhook tests: signing, posting, building apps, a flaky store."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from support import FakeClock
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
    app.testing = True  # Flask's test client: any Host (a deployed app pins public_base_url or allowed_hosts)
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
