"""The sandbox's state and its Python control API (:class:`Sandbox`).

One ``Sandbox`` lives in ``app.extensions["sandbox"]``; the routes write to it, tests read
and steer it. Everything is guarded by one lock, because the server is threaded.
"""

from __future__ import annotations

import copy
import hmac
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.sandbox.callbacks import CallbackDelivery, CallbackDispatcher, CallbackEvent
from gatekeeper.sandbox.config import Account, CallbackConfig, SandboxConfig
from gatekeeper.sandbox.errors import DELIVERY_ERROR_MESSAGES
from gatekeeper.sandbox.faults import Fault, FaultDecision, FaultPlan
from gatekeeper.sandbox.numbers import NumberBook, NumberProfile
from gatekeeper.sandbox.resources import (
    API_VERSION,
    CALL_EVENTS,
    Verification,
    call_plan,
    message_plan,
    rfc2822,
)

_log = logging.getLogger("gatekeeper.sandbox")

#: Where a message sent through a Messaging Service appears to come from.
SERVICE_SENDER = "+15005550006"


@dataclass
class RecordedRequest:
    """One request the emulator received. Credentials are never recorded, only the user name."""

    id: int
    method: str
    path: str
    route: str | None
    number: str | None
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    username: str | None
    received_at: float
    status: int | None = None  # None while in flight, or when the connection was dropped

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view, for the control API."""
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "number": self.number,
            "query": self.query,
            "form": self.form,
            "username": self.username,
            "received_at": self.received_at,
            "status": self.status,
        }


def _route_matches(pattern: str, route: str | None) -> bool:
    return route is not None and (route == pattern or route.startswith(pattern + "."))


@dataclass
class _CallState:
    resource: dict[str, Any]
    twiml: str | None
    url: str | None
    status_callback: str | None
    events: tuple[str, ...]
    sequence: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Sandbox:
    """Control object of one emulator: state, faults, callbacks, numbers.

    ``clock`` (epoch seconds) dates resources and drives the rate limit; ``sleep`` is used
    for injected latency and auto-mode callback delays. Both can be faked in tests.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config or SandboxConfig()
        self.clock = clock
        self.sleep = sleep
        self.numbers = NumberBook(self.config.numbers)
        self.faults = FaultPlan(clock)
        self.dispatcher = CallbackDispatcher(self.config.callbacks, sleep=sleep)
        self._initial_callbacks = copy.deepcopy(self.config.callbacks)
        self._lock = threading.RLock()
        self._requests: list[RecordedRequest] = []
        self._messages: dict[str, dict[str, Any]] = {}
        self._calls: dict[str, _CallState] = {}
        self._verifications: dict[str, Verification] = {}
        self._executions: dict[str, dict[str, Any]] = {}
        self._verify_default = self.config.verify_code
        self._verify_codes: dict[str, str] = {}

    # -- control: lifecycle ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget requests, resources, faults, rate limit, overrides and queued callbacks."""
        with self._lock:
            self._requests.clear()
            self._messages.clear()
            self._calls.clear()
            self._verifications.clear()
            self._executions.clear()
            self._verify_codes.clear()
            self._verify_default = self.config.verify_code
        self.faults.clear()
        self.numbers = NumberBook(self.config.numbers)
        initial = copy.deepcopy(self._initial_callbacks)
        self.dispatcher.configure({k: getattr(initial, k) for k in vars(initial)})
        self.dispatcher.reset()

    def close(self) -> None:
        """Stop background work (the auto-mode callback thread)."""
        self.dispatcher.close()

    # -- control: introspection -----------------------------------------------------------------

    def requests(self, route: str | None = None, number: str | None = None) -> list[RecordedRequest]:
        """Requests received, oldest first; ``route`` may be a prefix (``"messages"``)."""
        wanted = self.normalize(number) if number else None
        with self._lock:
            return [
                r
                for r in self._requests
                if (route is None or _route_matches(route, r.route)) and (wanted is None or r.number == wanted)
            ]

    def request_count(self, route: str | None = None, number: str | None = None) -> int:
        """How many requests matched (see :meth:`requests`)."""
        return len(self.requests(route, number))

    def lookup_count(self, number: str) -> int:
        """How many Lookup requests were received for ``number`` (any format, any outcome)."""
        return self.request_count("lookup", number)

    def lookup_counts(self) -> dict[str, int]:
        """Lookup requests received per E.164 number."""
        with self._lock:
            return dict(Counter(r.number for r in self._requests if r.route == "lookup" and r.number))

    def messages(self) -> list[dict[str, Any]]:
        """Stored Message resources (Twilio JSON), oldest first."""
        with self._lock:
            return [copy.deepcopy(m) for m in self._messages.values()]

    def message(self, sid: str) -> dict[str, Any] | None:
        """One stored Message resource, or None."""
        with self._lock:
            found = self._messages.get(sid)
            return copy.deepcopy(found) if found else None

    def calls(self) -> list[dict[str, Any]]:
        """Stored Call resources, each with two sandbox extras: ``twiml`` and ``instructions_url``."""
        with self._lock:
            return [self._call_view(c) for c in self._calls.values()]

    def call(self, sid: str) -> dict[str, Any] | None:
        """One stored Call (with the ``twiml``/``instructions_url`` extras), or None."""
        with self._lock:
            found = self._calls.get(sid)
            return self._call_view(found) if found else None

    def call_twiml(self, sid: str) -> str | None:
        """The TwiML a call was created with, or None (unknown SID or created with ``Url``)."""
        with self._lock:
            found = self._calls.get(sid)
            return found.twiml if found else None

    @staticmethod
    def _call_view(state: _CallState) -> dict[str, Any]:
        view = copy.deepcopy(state.resource)
        view["twiml"] = state.twiml
        view["instructions_url"] = state.url
        return view

    def verifications(self) -> list[dict[str, Any]]:
        """Verification resources, oldest first, each with a sandbox extra ``code``."""
        with self._lock:
            return [{**v.to_json(), "code": v.code} for v in self._verifications.values()]

    def executions(self) -> list[dict[str, Any]]:
        """Stored Studio Execution resources (Twilio JSON), oldest first."""
        with self._lock:
            return [copy.deepcopy(e) for e in self._executions.values()]

    def execution(self, sid: str) -> dict[str, Any] | None:
        """One stored Studio Execution, or None."""
        with self._lock:
            found = self._executions.get(sid)
            return copy.deepcopy(found) if found else None

    def verification_code(self, to: str, service_sid: str | None = None) -> str | None:
        """The code the latest verification to ``to`` expects, or None if there is none."""
        to = self.normalize(to)
        with self._lock:
            for v in reversed(self._verifications.values()):
                if v.to == to and (service_sid is None or v.service_sid == service_sid):
                    return v.code
        return None

    def set_verify_code(self, code: str, *, to: str | None = None, sid: str | None = None) -> None:
        """Set the code verifications expect: one verification (``sid``), one number (``to``: its
        pending and future ones), or everyone's future ones (neither)."""
        if not (isinstance(code, str) and code.isalnum() and 4 <= len(code) <= 10):
            raise ValueError("a verification code is 4 to 10 letters or digits")
        with self._lock:
            if sid is not None:
                if sid not in self._verifications:
                    raise ValueError(f"no verification {sid}")
                self._verifications[sid].code = code
                return
            if to is None:
                self._verify_default = code
                return
            key = self.normalize(to)
            self._verify_codes[key] = code
            for v in self._verifications.values():
                if v.to == key and v.status == "pending":
                    v.code = code

    # -- control: faults, numbers, callbacks ----------------------------------------------------

    def add_fault(self, kind: str, **options: Any) -> Fault:
        """Inject a fault: ``kind`` is latency, error, too_many_requests or drop (see :class:`Fault`)."""
        if options.get("number"):
            options["number"] = self.normalize(options["number"])
        return self.faults.add(kind, **options)

    def clear_faults(self) -> None:
        """Remove every fault and the rate limit."""
        self.faults.clear()

    def set_rate_limit(
        self, rate_per_second: float, burst: int | None = None, route: str = "*", *, strict: bool = False
    ) -> None:
        """Answer 20429 (HTTP 429, ``Retry-After``) to requests beyond ``rate_per_second``; ``strict``: beyond
        ``rate_per_second`` in any one-second window, with no burst."""
        self.faults.set_rate_limit(rate_per_second, burst, route, strict=strict)

    def override_numbers(self, overrides: Mapping[str, Mapping[str, Any]]) -> None:
        """Add or change fixture numbers (E.164 → partial ``NumberProfile`` fields)."""
        self.numbers.override(overrides)

    def profile(self, number: str, country: str | None = None) -> NumberProfile:
        """The profile the sandbox uses for ``number``."""
        return self.numbers.profile(number, country)

    def normalize(self, number: str, country: str | None = None) -> str:
        """``number`` as the sandbox keys it (E.164 when it parses)."""
        return self.numbers.profile(number, country).e164

    def configure_callbacks(self, **changes: Any) -> None:
        """Change callback delivery: mode, retries, duplicate, reorder, seed, delay/timeout seconds."""
        self.dispatcher.configure(changes)

    @property
    def callback_config(self) -> CallbackConfig:
        """The current callback settings."""
        return self.dispatcher.config

    def flush_callbacks(self) -> list[CallbackDelivery]:
        """Deliver every queued status event now; returns what was sent and each HTTP status."""
        return self.dispatcher.flush()

    def callback_deliveries(self) -> list[CallbackDelivery]:
        """Every callback delivered so far (manual and auto), oldest first."""
        return self.dispatcher.history()

    # -- used by the routes ---------------------------------------------------------------------

    def authenticate(self, username: str | None, password: str | None) -> Account | None:
        """The account these Basic-auth credentials open, or None."""
        if not username or password is None:
            return None
        for account in self.config.accounts:
            if username == account.sid:
                secret: str | None = account.auth_token
            else:
                secret = account.api_keys.get(username)
            if secret is not None and hmac.compare_digest(secret.encode(), password.encode()):
                return account
        return None

    def owner(self, account: Account, path_sid: str | None) -> Account | None:
        """The account a request acts for: ``account`` itself (no account in the path, or its own),
        one of its subaccounts named by ``path_sid``, or None (another account: answered 404)."""
        if path_sid is None or path_sid == account.sid:
            return account
        for candidate in self.config.accounts:
            if candidate.sid == path_sid and candidate.parent_sid == account.sid:
                return candidate
        return None

    def record(self, record: RecordedRequest) -> RecordedRequest:
        """Store a received request (the id is assigned here)."""
        with self._lock:
            record.id = len(self._requests) + 1
            self._requests.append(record)
        return record

    def decide_faults(self, route: str, number: str | None) -> FaultDecision:
        """Consume the faults that apply to one request."""
        return self.faults.decide(route, number)

    def add_message(
        self,
        resource: dict[str, Any],
        *,
        profile: NumberProfile,
        account: Account,
        status_callback: str | None,
    ) -> None:
        """Store a created message and queue its lifecycle events."""
        sid = resource["sid"]
        with self._lock:
            self._messages[sid] = copy.deepcopy(resource)
        events = []
        for status, error in message_plan(profile, resource["messaging_service_sid"] is not None):
            params = {
                "MessageSid": sid,
                "SmsSid": sid,
                "AccountSid": account.sid,
                "From": resource["from"] or SERVICE_SENDER,
                "To": resource["to"],
                "MessageStatus": status,
                "SmsStatus": status,
                "ApiVersion": API_VERSION,
            }
            if resource["messaging_service_sid"]:
                params["MessagingServiceSid"] = resource["messaging_service_sid"]
            if error is not None:
                params["ErrorCode"] = str(error)
            if status in ("delivered", "undelivered"):
                params["RawDlrDoneDate"] = time.strftime("%y%m%d%H%M", time.gmtime(self.clock()))
            events.append(
                CallbackEvent(
                    "message",
                    sid,
                    status,
                    params,
                    status_callback,
                    account.auth_token,
                    self._message_applier(sid, status, error),
                )
            )
        self.dispatcher.enqueue(events)

    def _message_applier(self, sid: str, status: str, error: int | None) -> Callable[[], None]:
        def apply() -> None:
            with self._lock:
                message = self._messages.get(sid)
                if message is None:  # reset() ran between create and delivery
                    return
                now = rfc2822(self.clock())
                message["status"] = status
                message["date_updated"] = now
                if message["from"] is None:
                    message["from"] = SERVICE_SENDER
                if status == "sent":
                    message["date_sent"] = now
                    segments = int(message["num_segments"] or "1")
                    message["price"] = f"-{0.0079 * segments:.5f}"
                if error is not None:
                    message["error_code"] = error
                    message["error_message"] = DELIVERY_ERROR_MESSAGES.get(error, "Unknown error")

        return apply

    def get_message(self, account_sid: str, sid: str) -> dict[str, Any] | None:
        """A stored message, if it belongs to ``account_sid``."""
        found = self.message(sid)
        return found if found and found["account_sid"] == account_sid else None

    def add_call(
        self,
        resource: dict[str, Any],
        *,
        profile: NumberProfile,
        account: Account,
        twiml: str | None,
        url: str | None,
        status_callback: str | None,
        events: tuple[str, ...],
    ) -> None:
        """Store a created call and queue its lifecycle events."""
        sid = resource["sid"]
        state = _CallState(copy.deepcopy(resource), twiml, url, status_callback, events or ("completed",))
        with self._lock:
            self._calls[sid] = state
        batch = []
        for event, call_status in call_plan(profile):
            report = status_callback if event in state.events else None
            params = {
                "CallSid": sid,
                "AccountSid": account.sid,
                "From": resource["from"],
                "To": resource["to"],
                "Caller": resource["from"],
                "Called": resource["to"],
                "CallStatus": call_status,
                "Direction": "outbound-api",
                "ApiVersion": API_VERSION,
                "CallbackSource": "call-progress-events",
            }
            if event == "completed" and call_status == "completed":
                params["CallDuration"] = str(profile.call_duration_seconds)
                params["Duration"] = str(-(-profile.call_duration_seconds // 60))
            applier = self._call_applier(sid, call_status, profile, params, reported=report is not None)
            batch.append(CallbackEvent("call", sid, call_status, params, report, account.auth_token, applier))
        self.dispatcher.enqueue(batch)

    def _call_applier(
        self, sid: str, call_status: str, profile: NumberProfile, params: dict[str, str], *, reported: bool
    ) -> Callable[[], None]:
        def apply() -> None:
            with self._lock:
                state = self._calls.get(sid)
                if state is None:
                    return
                now = self.clock()
                if reported:  # sequence numbers and timestamps count the callbacks actually sent
                    params["SequenceNumber"] = str(state.sequence)
                    params["Timestamp"] = rfc2822(now)
                    state.sequence += 1
                call = state.resource
                call["date_updated"] = rfc2822(now)
                if call_status == "initiated":
                    return  # "initiated" is a callback status, not a resource status
                call["status"] = call_status
                if call_status == "in-progress":
                    call["start_time"] = rfc2822(now)
                if call_status in ("completed", "busy", "no-answer", "failed"):
                    seconds = profile.call_duration_seconds if call_status == "completed" else 0
                    minutes = -(-seconds // 60)  # Twilio bills started minutes
                    call["duration"] = str(seconds)
                    call["end_time"] = rfc2822(now + seconds)
                    call["price"] = f"-{0.014 * minutes:.5f}" if seconds else None

        return apply

    def get_call(self, account_sid: str, sid: str) -> dict[str, Any] | None:
        """A stored call (Twilio JSON only), if it belongs to ``account_sid``."""
        with self._lock:
            found = self._calls.get(sid)
            if found is None or found.resource["account_sid"] != account_sid:
                return None
            return copy.deepcopy(found.resource)

    def add_execution(self, resource: dict[str, Any]) -> None:
        """Store a created Studio Execution."""
        with self._lock:
            self._executions[resource["sid"]] = copy.deepcopy(resource)

    def get_execution(self, account_sid: str, flow_sid: str, sid: str) -> dict[str, Any] | None:
        """A stored execution, if it belongs to ``account_sid`` and ``flow_sid``."""
        found = self.execution(sid)
        return found if found and (found["account_sid"], found["flow_sid"]) == (account_sid, flow_sid) else None

    def code_for(self, to: str, custom: str | None) -> str:
        """The code a new verification to ``to`` will expect."""
        with self._lock:
            return custom or self._verify_codes.get(to) or self._verify_default

    def pending_verification(
        self, account_sid: str, service_sid: str, *, to: str | None = None, sid: str | None = None
    ) -> Verification | None:
        """The live (pending, not expired) verification for ``to`` or ``sid`` in a service."""
        now = self.clock()
        with self._lock:
            for v in reversed(self._verifications.values()):
                if v.account_sid != account_sid or v.service_sid != service_sid:
                    continue
                if (sid is not None and v.sid != sid) or (to is not None and v.to != to):
                    continue
                if v.status == "pending" and now - v.created > 600:  # Verify's 10-minute lifetime
                    v.status = "expired"
                return v if v.status == "pending" else None
        return None

    def save_verification(self, verification: Verification) -> None:
        """Store (or re-store) a verification."""
        with self._lock:
            self._verifications[verification.sid] = verification

    @property
    def lock(self) -> threading.RLock:
        """The state lock, for read-modify-write sequences in the routes."""
        return self._lock

    @staticmethod
    def call_events_valid(values: list[str]) -> tuple[str, ...]:
        """Keep the StatusCallbackEvent values Twilio knows, in lifecycle order."""
        return tuple(e for e in CALL_EVENTS if e in values)
