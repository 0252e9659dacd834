"""AsyncGatekeeper over the sandbox's real loopback HTTP: the blocking gate's answers, one Lookup for many
callers, one send per idempotency key, and an event loop that is never blocked.

Every coroutine here runs under :func:`run_strict`: an event loop in debug mode that fails the test when
any one callback holds the loop longer than ``SLOW_CALLBACK_SECONDS`` (asyncio's own slow-callback
report), so a blocking call hidden in the async gate fails the test that reaches it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from support import drop_prefix

from gatekeeper import Action, Decision, Gatekeeper, Outcome, SendUnavailable, Settings, Stores
from gatekeeper.aio import AsyncGatekeeper
from gatekeeper.errors import (
    GateRefused,
    IdempotencyConflict,
    InvalidArgument,
    SendRejected,
    StoreUnavailable,
)
from gatekeeper.models import SendRequest
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.base import ACCOUNT_SCOPE
from gatekeeper.stores.memory import MemoryStore

T = TypeVar("T")

MOBILE, LANDLINE, VOIP = "+14155550100", "+14155550101", "+14155550102"
GUERNSEY = "+447911123456"
INVALID = "+15005550001"  # Lookup: valid false; Messages create: 21211
TWILIO_OPTED_OUT = "+15005550004"  # Messages create answers 21610
FRAUD_GUARD = "+14155550108"  # Verify create answers 403 / 60410
NOT_SMS_CAPABLE = "+14155550177"  # overridden below: Lookup says mobile, Messages create answers 21614
VERIFY_SMS_REFUSED = "+14155550178"  # overridden below: Lookup says mobile, Verify create answers 60205
FROM = "+15005550006"
VA = "VA" + "a" * 32

# -- the event-loop watchdog -----------------------------------------------------------------------
# The longest step of these tests takes ~6 ms; a full suite on a busy two-CPU machine has stalled one for ~60 ms.
# A blocking call worth finding (the 0.2 s store read below) is well past this.
SLOW_CALLBACK_SECONDS = 0.1
_SLOW_CALLBACK = re.compile(r"Executing .+ took \d+(?:\.\d+)? seconds", re.DOTALL)


class _SlowCallbacks(logging.Handler):
    """Collects asyncio's debug-mode reports of a callback (a task step) that held the loop too long."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if _SLOW_CALLBACK.match(message):
            self.reports.append(message)


def run_watched(coro: Coroutine[Any, Any, T]) -> tuple[T, list[str]]:
    """Run ``coro`` in a fresh debug-mode loop; returns its result and every slow-callback report."""
    logger = logging.getLogger("asyncio")
    handler, level = _SlowCallbacks(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)

    async def main() -> T:
        asyncio.get_running_loop().slow_callback_duration = SLOW_CALLBACK_SECONDS
        return await coro

    gc.collect()
    collecting = gc.isenabled()
    gc.disable()  # a full collection among thousands of debug-mode tasks pauses for ~50 ms: not a blocking call
    try:
        result = asyncio.run(main(), debug=True)
    finally:
        if collecting:
            gc.enable()
        logger.removeHandler(handler)
        logger.setLevel(level)
    return result, handler.reports


def run_strict(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` and fail the test if any callback blocked the event loop."""
    result, reports = run_watched(coro)
    if reports:
        pytest.fail("the event loop was blocked:\n" + "\n".join(reports))
    return result


async def swarm(n: int, work: Callable[[], Awaitable[T]], *, batch: int = 50) -> tuple[list[T], int]:
    """Run ``work`` in ``n`` tasks that all start in one turn of the loop; returns the results and how many
    tasks had started when the first one finished (``n`` when they truly ran at once).

    The tasks are created in batches and released by one ``Event.set`` per batch, each its own callback,
    so the harness itself never holds the loop long enough to trip the watchdog (in debug mode every task
    and handle records a stack).
    """
    started = 0
    when_first_done: list[int] = []

    async def one(go: asyncio.Event) -> T:
        nonlocal started
        await go.wait()
        started += 1
        result = await work()
        if not when_first_done:
            when_first_done.append(started)
        return result

    events: list[asyncio.Event] = []
    tasks: list[asyncio.Task[T]] = []
    for first in range(0, n, batch):
        go = asyncio.Event()
        events.append(go)
        tasks += [asyncio.ensure_future(one(go)) for _ in range(min(batch, n - first))]
        await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    for go in events:
        loop.call_soon(go.set)
    return list(await asyncio.gather(*tasks)), when_first_done[0]


@pytest.fixture(autouse=True, scope="module")
def _sdk_imported(sandbox_server: SandboxServer) -> None:
    """Import the twilio SDK's domains before any watched loop runs: the SDK imports each on first attribute
    access (~40 ms for Lookup and the 2010 API), a one-time cost the watchdog is not here to measure."""
    client = sandbox_server.client()
    for domain in (client.lookups.v2, client.api.v2010, client.verify.v2, client.studio.v2):
        assert domain is not None
    assert client.messages is not None and client.calls is not None


async def no_wait(seconds: float) -> None:
    """The async gate's ``sleep`` for retry backoff: yields to the loop, waits for nothing."""
    await asyncio.sleep(0)


# -- parity: one scenario body, driven through both gates ---------------------------------------------
class Awaited:
    """A blocking Gatekeeper whose methods are awaited as AsyncGatekeeper's are, so one scenario body drives
    both gates; its other attributes (``stores``) pass through."""

    def __init__(self, gate: Gatekeeper) -> None:
        self.gate = gate

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.gate, name)
        if not callable(found):
            return found

        async def call(*args: Any, **kwargs: Any) -> Any:
            return found(*args, **kwargs)

        return call


async def attempt(pending: Awaitable[Any]) -> tuple[Any, ...]:
    """What a gate call came to, in fields both gates must agree on (never a SID or a time)."""
    try:
        result = await pending
    except GateRefused as exc:
        return ("gate_refused", exc.code, exc.decision.reasons)
    except SendRejected as exc:
        return ("send_rejected", exc.code)
    except IdempotencyConflict as exc:
        return ("conflict", exc.reason)
    except SendUnavailable as exc:
        return ("send_unavailable", exc.may_have_sent)
    if isinstance(result, Outcome):
        d = result.decision
        refused = result.action is Action.REFUSE
        return ("outcome", result.action.value, refused, d.enforced, d.twilio_code, d.reasons, result.status)
    if isinstance(result, Decision):
        source = result.facts.source if result.facts else None
        return ("decision", result.action.value, result.twilio_code, result.reasons, source)
    return ("value", result)


Body = Callable[[Any, Sandbox], Coroutine[Any, Any, list[Any]]]


@dataclass(frozen=True)
class Scenario:
    name: str
    body: Body
    expected: list[Any]
    settings: dict[str, Any] = field(default_factory=dict)
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)
    stores: Callable[[], Stores] = Stores.memory


async def invalid_numbers(g: Any, sb: Sandbox) -> list[Any]:
    return [
        await attempt(g.notify("not a number", "hi", from_=FROM)),
        await attempt(g.notify(INVALID, "hi", from_=FROM)),
        await attempt(g.start_verification(INVALID, verify_service_sid=VA)),
        sb.lookup_counts(),
        sb.request_count("messages") + sb.request_count("verifications"),
    ]


async def countries(g: Any, sb: Sandbox) -> list[Any]:
    return [
        await attempt(g.notify(GUERNSEY, "hi", from_=FROM)),
        await attempt(g.start_verification(GUERNSEY, verify_service_sid=VA)),
        await attempt(g.decide(GUERNSEY)),
        sb.lookup_counts(),  # refused from the parse alone: nothing asked
    ]


async def opt_out_and_in(g: Any, sb: Sandbox) -> list[Any]:
    return [
        await g.opt_out("(415) 555-0100"),
        await g.opt_out(MOBILE),  # already out: nothing changed
        await g.is_opted_out(MOBILE),
        await attempt(g.notify(MOBILE, "hi", from_=FROM)),
        await attempt(g.decide(MOBILE, purpose="mfa")),  # MFA is user-initiated: an opt-out does not block it
        sb.lookup_counts(),
        await g.opt_in(MOBILE),
        await g.is_opted_out(MOBILE),
        await attempt(g.notify(MOBILE, "hi", from_=FROM)),
        len(sb.messages()),
    ]


async def twilio_says_opted_out(g: Any, sb: Sandbox) -> list[Any]:
    return [
        await attempt(g.notify(TWILIO_OPTED_OUT, "hi", from_=FROM)),
        await g.is_opted_out(TWILIO_OPTED_OUT),
        [c.source for c in g.stores.opt_outs.consent_history(TWILIO_OPTED_OUT)],
        await attempt(g.notify(TWILIO_OPTED_OUT, "hi", from_=FROM)),  # known now: never reaches Twilio
        sb.request_count("messages.create"),
    ]


async def landlines_refused(g: Any, sb: Sandbox) -> list[Any]:
    return [
        await attempt(g.notify(LANDLINE, "hi", from_=FROM)),
        await attempt(g.start_verification(LANDLINE, verify_service_sid=VA)),
        sb.request_count("messages") + sb.request_count("calls") + sb.request_count("verifications"),
    ]


async def twilio_says_not_sms_capable(g: Any, sb: Sandbox) -> list[Any]:
    return [
        await attempt(g.notify(NOT_SMS_CAPABLE, "hi", from_=FROM)),
        await attempt(g.notify(NOT_SMS_CAPABLE, "hi", from_=FROM)),  # corrected to a landline: a call
        sb.lookup_counts(),
        (sb.request_count("messages.create"), sb.request_count("calls.create")),
    ]


async def verify_sms_refusals(g: Any, sb: Sandbox) -> list[Any]:
    sms, verify_sms = (
        SendRequest(Action.SMS, body="hi", from_=FROM),
        SendRequest(Action.VERIFY_SMS, verify_service_sid=VA),
    )
    checked = await g.check(MOBILE, sms)
    return [
        await attempt(g.start_verification(VERIFY_SMS_REFUSED, verify_service_sid=VA)),  # Twilio's own 60205
        await attempt(g.check(LANDLINE, verify_sms, purpose="mfa")),  # exactly Verify SMS: the gate's 60205
        await attempt(g.check(LANDLINE, sms)),  # exactly an SMS: the gate's 21614
        await attempt(g.check(MOBILE, sms)),
        await attempt(g.act(checked, sms)),
        await attempt(g.start_verification(FRAUD_GUARD, verify_service_sid=VA)),
        g.stores.failures.suppression(FRAUD_GUARD, now=time.time(), window_seconds=86_400, threshold=1),
        (sb.request_count("messages.create"), sb.request_count("verifications.create")),
    ]


async def lookup_down(g: Any, sb: Sandbox) -> list[Any]:
    sb.add_fault("error", route="lookup")
    return [
        await attempt(g.decide(MOBILE, purpose="mfa")),
        await attempt(g.start_verification(MOBILE, verify_service_sid=VA)),
        await attempt(g.notify(MOBILE, "hi", from_=FROM)),  # notify routes on local facts
        sb.lookup_counts(),
        (sb.request_count("verifications"), sb.request_count("messages")),
    ]


async def routes(g: Any, sb: Sandbox) -> list[Any]:
    return [
        await attempt(g.notify(MOBILE, "hi", from_=FROM)),
        await attempt(g.notify(LANDLINE, "hi", from_=FROM)),
        await attempt(g.notify("whatsapp:" + LANDLINE, "hi", from_="whatsapp:" + FROM)),
        await attempt(g.start_verification(MOBILE, verify_service_sid=VA)),
        await attempt(g.start_verification(MOBILE, verify_service_sid=VA, channel="whatsapp")),
        await attempt(g.start_verification(LANDLINE, verify_service_sid=VA)),
        await attempt(g.start_verification(VOIP, verify_service_sid=VA)),
        await attempt(g.start_verification(VOIP, verify_service_sid=VA, channel="email", email="a@example.com")),
        await attempt(g.decide(MOBILE)),
        [(r.form["To"], r.form["Channel"]) for r in sb.requests("verifications.create")],
        [(m["to"], m["from"]) for m in sb.messages()],
        [c["to"] for c in sb.calls()],
        sb.lookup_counts(),
    ]


async def idempotent_repeats(g: Any, sb: Sandbox) -> list[Any]:
    first = await g.notify(MOBILE, "Your code", from_=FROM, idempotency_key="order-1")
    again = await g.notify(MOBILE, "Your code", from_=FROM, idempotency_key="order-1")
    return [
        (first.replayed, again.replayed, again.sid == first.sid, again.decision == first.decision),
        await attempt(g.notify(MOBILE, "Another text", from_=FROM, idempotency_key="order-1")),
        await attempt(g.start_verification(MOBILE, verify_service_sid=VA, idempotency_key="order-1")),  # its own kind
        await attempt(g.start_verification(MOBILE, verify_service_sid=VA, idempotency_key="order-1")),
        (len(sb.messages()), len(sb.verifications())),
    ]


async def send_failures(g: Any, sb: Sandbox) -> list[Any]:
    sb.add_fault("too_many_requests", route="messages.create", times=1)
    seen = [await attempt(g.notify(MOBILE, "hi", from_=FROM))]  # 429: Twilio did not act, so it is sent again
    sb.add_fault("drop", route="messages.create", times=1)
    seen += [
        await attempt(g.notify(MOBILE, "hi", from_=FROM, idempotency_key="k")),  # dropped: it may have sent
        await attempt(g.notify(MOBILE, "hi", from_=FROM, idempotency_key="k")),  # so the key never sends again
    ]
    sb.add_fault("error", route="messages.create", status=400, code=21612, times=1)
    seen += [
        await attempt(g.notify(MOBILE, "hi", from_=FROM, idempotency_key="k2")),  # refused: nothing was sent
        await attempt(g.notify(MOBILE, "hi", from_=FROM, idempotency_key="k2")),  # so the key is free again
    ]
    return [*seen, [r.status for r in sb.requests("messages.create")]]


async def observe_mode(g: Any, sb: Sandbox) -> list[Any]:
    await g.opt_out(LANDLINE)
    return [
        await attempt(g.notify(LANDLINE, "hi", from_=FROM)),  # recorded as a refusal, sent as asked
        [m["to"] for m in sb.messages()],
    ]


class CacheDown(MemoryStore):
    """A Lookup cache that cannot be reached: the gate keeps what Lookup said in this process only."""

    def get_lookup(self, key: str) -> Any:
        raise StoreUnavailable("cache down")

    def put_lookup(self, key: str, entry: Any, *, ttl_seconds: float) -> None:
        raise StoreUnavailable("cache down")


def cache_down() -> Stores:
    stores = Stores.memory()
    stores.cache = CacheDown()
    return stores


SCENARIOS = [
    Scenario(
        "21211-invalid",
        invalid_numbers,
        [
            ("outcome", "refuse", True, True, 21211, ("number:not_a_number",), None),
            ("outcome", "refuse", True, True, 21211, ("lookup:invalid",), None),
            ("outcome", "refuse", True, True, 60200, ("lookup:invalid",), None),
            {INVALID: 1},
            0,
        ],
    ),
    Scenario(
        "21408-60605-country",
        countries,
        [
            ("outcome", "refuse", True, True, 21408, ("country:not_allowed:GG",), None),
            ("outcome", "refuse", True, True, 60605, ("country:not_allowed:GG",), None),
            ("decision", "refuse", 21408, ("country:not_allowed:GG",), None),
            {},
        ],
        settings={"policy": {"allow_countries": ["US"]}},
    ),
    Scenario(
        "21610-opt-out",
        opt_out_and_in,
        [
            True,
            False,
            True,
            ("outcome", "refuse", True, True, 21610, ("opted_out:account",), None),
            ("decision", "verify_sms", None, (), "lookup"),
            {MOBILE: 1},
            True,
            False,
            ("outcome", "sms", False, True, None, (), "queued"),
            1,
        ],
    ),
    Scenario(
        "21610-from-twilio",
        twilio_says_opted_out,
        [
            ("outcome", "refuse", True, True, 21610, ("opted_out:account", "twilio:21610"), None),
            True,
            ["twilio:21610"],
            ("outcome", "refuse", True, True, 21610, ("opted_out:account",), None),
            1,
        ],
    ),
    Scenario(
        "21614-60205-landline-refused",
        landlines_refused,
        [
            ("outcome", "refuse", True, True, 21614, ("line_type:landline", "landline:refuse"), None),
            ("outcome", "refuse", True, True, 60205, ("line_type:landline", "channel:sms_unreachable"), None),
            0,
        ],
        settings={"policy": {"landline": "refuse"}},
    ),
    Scenario(
        "21614-from-twilio",
        twilio_says_not_sms_capable,
        [
            ("send_rejected", 21614),
            ("outcome", "voice", False, True, None, ("line_type:landline", "fallback:voice"), "queued"),
            {NOT_SMS_CAPABLE: 1},
            (1, 1),
        ],
        numbers={NOT_SMS_CAPABLE: {"line_type": "mobile", "create_error": 21614}},
    ),
    Scenario(
        "21614-from-twilio-cache-down",
        twilio_says_not_sms_capable,
        [
            ("send_rejected", 21614),
            ("outcome", "voice", False, True, None, ("line_type:landline", "fallback:voice"), "queued"),
            {NOT_SMS_CAPABLE: 1},
            (1, 1),
        ],
        numbers={NOT_SMS_CAPABLE: {"line_type": "mobile", "create_error": 21614}},
        stores=cache_down,
    ),
    Scenario(
        "60205-verify-sms",
        verify_sms_refusals,
        [
            ("send_rejected", 60205),
            ("gate_refused", 60205, ("line_type:landline", "channel:sms_unreachable")),
            ("gate_refused", 21614, ("line_type:landline", "channel:sms_unreachable")),
            ("decision", "sms", None, (), "cache"),
            ("outcome", "sms", False, True, None, (), "queued"),
            ("send_rejected", 60410),
            "failures:1",
            (1, 2),
        ],
        numbers={VERIFY_SMS_REFUSED: {"line_type": "mobile", "verify_error": 60205}},
    ),
    Scenario(
        "20503-lookup-down",
        lookup_down,
        [
            ("decision", "refuse", 20503, ("lookup:unavailable:http_500", "on_lookup_error:refuse"), "local"),
            ("outcome", "refuse", True, True, 20503, ("lookup:unavailable:http_500", "on_lookup_error:refuse"), None),
            (
                "outcome",
                "sms",
                False,
                True,
                None,
                ("lookup:unavailable:http_500", "on_lookup_error:allow_local"),
                "queued",
            ),
            {MOBILE: 9},
            (0, 1),
        ],
    ),
    Scenario(
        "routes",
        routes,
        [
            ("outcome", "sms", False, True, None, (), "queued"),
            ("outcome", "voice", False, True, None, ("line_type:landline", "fallback:voice"), "queued"),
            ("outcome", "whatsapp", False, True, None, (), "queued"),
            ("outcome", "verify_sms", False, True, None, (), "pending"),
            ("outcome", "verify_whatsapp", False, True, None, (), "pending"),
            ("outcome", "verify_call", False, True, None, ("line_type:landline", "fallback:call"), "pending"),
            (
                "outcome",
                "totp",
                False,
                True,
                None,
                ("line_type:nonFixedVoip", "mfa:voip:totp", "fallback:totp"),
                "use_totp",
            ),
            ("outcome", "email", False, True, None, (), "pending"),
            ("decision", "sms", None, (), "cache"),
            [([MOBILE], ["sms"]), ([MOBILE], ["whatsapp"]), ([LANDLINE], ["call"]), (["a@example.com"], ["email"])],
            [(MOBILE, FROM), ("whatsapp:" + LANDLINE, "whatsapp:" + FROM)],
            [LANDLINE],
            {MOBILE: 1, LANDLINE: 1, VOIP: 1},
        ],
    ),
    Scenario(
        "idempotency",
        idempotent_repeats,
        [
            (False, True, True, True),
            ("conflict", "payload_mismatch"),
            ("outcome", "verify_sms", False, True, None, (), "pending"),
            ("outcome", "verify_sms", False, True, None, (), "pending"),
            (1, 1),
        ],
    ),
    Scenario(
        "send-failures",
        send_failures,
        [
            ("outcome", "sms", False, True, None, (), "queued"),
            ("send_unavailable", True),
            ("conflict", "outcome_unknown"),
            ("send_rejected", 21612),
            ("outcome", "sms", False, True, None, (), "queued"),
            [429, 201, None, 400, 201],
        ],
    ),
    Scenario(
        "observe-mode",
        observe_mode,
        [
            ("outcome", "sms", False, False, 21610, ("opted_out:account", "mode:observe"), "queued"),
            [LANDLINE],
        ],
        settings={"policy": {"mode": "observe"}},
    ),
]


def _fresh(sandbox: Sandbox, scenario: Scenario) -> None:
    sandbox.reset()
    if scenario.numbers:
        sandbox.override_numbers(scenario.numbers)


def through_sync_gate(server: SandboxServer, sandbox: Sandbox, scenario: Scenario) -> list[Any]:
    _fresh(sandbox, scenario)
    gate = Gatekeeper(
        server.client(), settings=Settings(**scenario.settings), stores=scenario.stores(), sleep=lambda s: None
    )
    return asyncio.run(scenario.body(Awaited(gate), sandbox))


def through_async_gate(server: SandboxServer, sandbox: Sandbox, scenario: Scenario) -> list[Any]:
    _fresh(sandbox, scenario)

    async def main() -> list[Any]:
        gate = AsyncGatekeeper(
            server.async_client(), settings=Settings(**scenario.settings), stores=scenario.stores(), sleep=no_wait
        )
        try:
            return await scenario.body(gate, sandbox)
        finally:
            await gate.close()

    return run_strict(main())


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_async_gate_answers_as_the_blocking_gate(
    scenario: Scenario, sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """The same calls through Gatekeeper and AsyncGatekeeper against the same sandbox: the same outcomes,
    refusals, Twilio codes and reasons, and the same requests reaching Twilio."""
    blocking = through_sync_gate(sandbox_server, sandbox, scenario)
    awaited = through_async_gate(sandbox_server, sandbox, scenario)
    assert awaited == blocking
    assert awaited == scenario.expected


# -- the async gate's own API -----------------------------------------------------------------------
def test_each_gate_refuses_a_client_of_the_other_kind(sandbox_server: SandboxServer) -> None:
    """A blocking gate on an aiohttp client (or the reverse) would block the loop or never send: InvalidArgument."""
    with pytest.raises(InvalidArgument, match="use AsyncGatekeeper for this client"):
        Gatekeeper(sandbox_server.async_client())
    with pytest.raises(InvalidArgument, match="use Gatekeeper for this client"):
        AsyncGatekeeper(sandbox_server.client())
    assert isinstance(AsyncGatekeeper(sandbox_server.async_client()), AsyncGatekeeper)  # nothing opened yet


def test_from_settings_reaches_the_sandbox_and_close_ends_the_session(
    sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """from_settings builds the aiohttp client from [twilio] sandbox_url; close() closes its session in the loop."""

    async def main() -> tuple[Decision, Any, Any]:
        gate = AsyncGatekeeper.from_settings(Settings(twilio={"sandbox_url": sandbox_server.url}))
        decision = await gate.decide(LANDLINE)
        opened = gate.client.http_client.session
        await gate.close()
        return decision, opened, gate.client.http_client.session

    decision, opened, after = run_strict(main())
    assert (decision.action, decision.facts.line_type if decision.facts else None) == (Action.VOICE, "landline")
    assert opened is not None and opened.closed
    assert after is None
    assert sandbox.lookup_count(LANDLINE) == 1


def test_consent_is_shared_with_a_blocking_gate_on_the_same_stores(
    sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """Opt-outs written by either gate are honoured by the other at once, even for a route the async gate keeps."""
    stores = Stores.memory()
    blocking = Gatekeeper(sandbox_server.client(), stores=stores)

    async def main() -> list[Any]:
        gate = AsyncGatekeeper(sandbox_server.async_client(), stores=stores)
        try:
            first = await gate.decide(MOBILE)  # routed from Lookup facts: the route is kept
            blocking.opt_out(MOBILE)  # the other gate writes
            kept_route = await gate.decide(MOBILE)
            refused = await gate.notify(MOBILE, "hi", from_=FROM)
            lifted = await gate.opt_in(MOBILE)
            out = await gate.opt_out(LANDLINE)
            return [first.action, kept_route, refused, lifted, out, await gate.is_opted_out(MOBILE)]
        finally:
            await gate.close()

    first, kept_route, refused, lifted, out, still_out = run_strict(main())
    assert first is Action.SMS
    assert (kept_route.action, kept_route.twilio_code, kept_route.reasons) == (
        Action.REFUSE,
        21610,
        ("opted_out:account",),
    )
    assert (refused.action, refused.sid, refused.decision.twilio_code) == (Action.REFUSE, None, 21610)
    assert (lifted, out, still_out) == (True, True, False)
    # What the async gate wrote, the blocking gate reads.
    assert blocking.is_opted_out(LANDLINE) and not blocking.is_opted_out(MOBILE)
    assert blocking.decide(LANDLINE).twilio_code == 21610
    assert [c.source for c in stores.opt_outs.consent_history(LANDLINE)] == ["api"]
    assert stores.opt_outs.opted_out_scope(LANDLINE, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE
    assert sandbox.messages() == [] and sandbox.lookup_count(MOBILE) == 1


def test_twilios_21614_correction_reaches_the_shared_cache(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """Twilio's 'not SMS-capable' heard by the async gate corrects the cached Lookup answer: a blocking gate
    on the same stores then calls the number without asking Lookup again."""
    sandbox.override_numbers({NOT_SMS_CAPABLE: {"line_type": "mobile", "create_error": 21614}})
    stores = Stores.memory()

    async def main() -> int | None:
        gate = AsyncGatekeeper(sandbox_server.async_client(), stores=stores)
        try:
            await gate.notify(NOT_SMS_CAPABLE, "hi", from_=FROM)
        except SendRejected as rejected:
            code: int | None = rejected.code
            return code
        finally:
            await gate.close()
        return None

    assert run_strict(main()) == 21614
    decision = Gatekeeper(sandbox_server.client(), stores=stores).decide(NOT_SMS_CAPABLE)
    assert (decision.action, decision.reasons) == (Action.VOICE, ("line_type:landline", "fallback:voice"))
    assert decision.facts is not None and decision.facts.source == "cache"
    assert sandbox.lookup_count(NOT_SMS_CAPABLE) == 1


def test_status_of_reads_the_stored_status(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """status_of answers None for a SID never reported, and the stored record once a status is kept."""
    stores = Stores.memory()

    async def main() -> tuple[Any, Any, str | None]:
        gate = AsyncGatekeeper(sandbox_server.async_client(), stores=stores)
        try:
            out = await gate.notify(MOBILE, "hi", from_=FROM)
            assert out.sid is not None
            before = await gate.status_of(out.sid)
            stores.statuses.apply_status(out.sid, "delivered", 5, error_code=None, at=time.time(), ttl_seconds=60)
            return before, await gate.status_of(out.sid), out.sid
        finally:
            await gate.close()

    before, after, sid = run_strict(main())
    assert before is None
    assert after is not None and (after.sid, after.status, after.error_code) == (sid, "delivered", None)
    assert [m["sid"] for m in sandbox.messages()] == [sid]


def test_a_cancelled_send_never_frees_its_key(
    sandbox_server: SandboxServer, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notify cancelled while Twilio holds its request (a web framework's timeout) may have sent: the key
    then answers outcome_unknown, and no second message goes out under it."""
    arrived, release = threading.Event(), threading.Event()

    def held(seconds: float) -> None:  # the sandbox's "latency": hold the request until the test lets go
        arrived.set()
        release.wait(10)

    monkeypatch.setattr(sandbox, "sleep", held)
    sandbox.add_fault("latency", route="messages.create", latency_seconds=0.01, times=1)

    async def main() -> tuple[bool, tuple[Any, ...]]:
        gate = AsyncGatekeeper(sandbox_server.async_client())
        try:
            sending = asyncio.ensure_future(gate.notify(MOBILE, "hi", from_=FROM, idempotency_key="k"))
            while not arrived.is_set():
                await asyncio.sleep(0.001)
            sending.cancel()
            try:
                await sending
            except asyncio.CancelledError:
                cancelled = True
            else:
                cancelled = False
            return cancelled, await attempt(gate.notify(MOBILE, "hi", from_=FROM, idempotency_key="k"))
        finally:
            release.set()
            await gate.close()

    cancelled, again = run_strict(main())
    assert cancelled
    assert again == ("conflict", "outcome_unknown")
    deadline = time.monotonic() + 10
    while sandbox.requests("messages.create")[0].status is None and time.monotonic() < deadline:
        time.sleep(0.001)  # the held request finishes at the sandbox before it is reset
    assert sandbox.request_count("messages.create") == 1
    assert len(sandbox.messages()) == 1  # the cancelled send did go out: exactly why the key stays shut


# -- many callers at once, on each kind of store -----------------------------------------------------
class ThreadedStore(MemoryStore):
    """The memory store declaring that its verbs may block, as any custom store does by default: the async
    gate must run every verb in a worker thread. It notes the threads its lookup and claim verbs ran on."""

    blocking = True

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def get_lookup(self, key: str) -> Any:
        self.threads.add(threading.get_ident())
        return super().get_lookup(key)

    def claim(self, key: str, fingerprint: str, *, ttl_seconds: float) -> Any:
        self.threads.add(threading.get_ident())
        return super().claim(key, fingerprint, ttl_seconds=ttl_seconds)


@dataclass
class StoreKind:
    """How to build one kind of store inside the running loop, and what a blocking gate uses to share it."""

    name: str
    build: Callable[[], Any]
    blocking_twin: Callable[[Any], Any] = lambda store: store
    close: Callable[[Any], Awaitable[None]] | None = None
    crowd: int = 1000  # callers in the single-flight race


@pytest.fixture(
    params=["memory", "worker-thread", pytest.param("async-redis", marks=pytest.mark.redis)],
)
def store_kind(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        yield StoreKind("memory", MemoryStore)
        return
    if request.param == "worker-thread":
        yield StoreKind("worker-thread", ThreadedStore)
        return
    import redis.asyncio as aioredis

    from gatekeeper.stores.redis import RedisStore
    from gatekeeper.stores.redis_async import AsyncRedisStore

    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")

    def build() -> AsyncRedisStore:  # in the loop: redis.asyncio's connections belong to the loop that opens them
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=16, socket_timeout=5)
        return AsyncRedisStore(aioredis.Redis(connection_pool=pool), prefix=prefix)

    async def close(store: AsyncRedisStore) -> None:
        await store.close()

    twins: list[RedisStore] = []

    def twin(_: Any) -> RedisStore:
        twins.append(RedisStore.from_url(url, prefix=prefix))
        return twins[-1]

    try:
        # Fewer callers: every one of them makes several Redis round trips through a 16-connection pool.
        yield StoreKind("async-redis", build, twin, close, crowd=250)
    finally:
        for store in twins:
            store.close()
        drop_prefix(url, prefix)


async def closing(gate: AsyncGatekeeper, kind: StoreKind, store: Any) -> None:
    await gate.close()
    if kind.close is not None:
        await kind.close(store)


def test_a_thousand_concurrent_decisions_make_one_lookup(
    store_kind: StoreKind, sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """1,000 tasks deciding one new number at the same moment: exactly one Lookup reaches Twilio, and every
    task gets the same route (one from Lookup, the rest from the answer it brought)."""

    async def main() -> tuple[list[Decision], int, Any]:
        store = store_kind.build()
        gate = AsyncGatekeeper(sandbox_server.async_client(), stores=Stores.using(store))
        try:
            decisions, started = await swarm(store_kind.crowd, lambda: gate.decide(MOBILE))
        finally:
            await closing(gate, store_kind, store)
        return decisions, started, store

    decisions, started, store = run_strict(main())
    assert started == store_kind.crowd  # all were waiting on the answer at once: the test did race them
    assert sandbox.lookup_counts() == {MOBILE: 1}
    assert {(d.action, d.twilio_code) for d in decisions} == {(Action.SMS, None)}
    assert Counter(d.facts.source for d in decisions if d.facts) == {"lookup": 1, "cache": store_kind.crowd - 1}
    if isinstance(store, ThreadedStore):
        assert store.threads and threading.main_thread().ident not in store.threads


def test_concurrent_repeats_of_one_key_send_once(
    store_kind: StoreKind, sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """100 tasks notifying with one idempotency key: one message is created, every caller gets its SID, and
    only the first is not a replay. The same key for another body is a payload mismatch, concurrently or
    later, and a blocking gate on the same store replays the first send too."""

    async def main() -> tuple[list[Outcome], list[Any], Any, Any]:
        store = store_kind.build()
        gate = AsyncGatekeeper(
            sandbox_server.async_client(),
            stores=Stores.using(store),
            settings=Settings(idempotency={"wait_ms": 10_000}),
        )
        try:
            repeats, started = await swarm(
                100, lambda: gate.notify(MOBILE, "Your code", from_=FROM, idempotency_key="K")
            )
            assert started == 100
            bodies = iter(range(10))
            others, _ = await swarm(
                10, lambda: attempt(gate.notify(MOBILE, f"text {next(bodies)}", from_=FROM, idempotency_key="K2"))
            )
            mismatch = await attempt(gate.notify(MOBILE, "Another text", from_=FROM, idempotency_key="K"))
        finally:
            await closing(gate, store_kind, store)
        return repeats, others, mismatch, store

    repeats, others, mismatch, store = run_strict(main())
    sids = {o.sid for o in repeats}
    assert len(sids) == 1 and None not in sids
    assert sum(not o.replayed for o in repeats) == 1
    assert {(o.action, o.status) for o in repeats} == {(Action.SMS, "queued")}
    assert Counter(o[0] for o in others) == {"outcome": 1, "conflict": 9}
    assert {o for o in others if o[0] == "conflict"} == {("conflict", "payload_mismatch")}
    assert mismatch == ("conflict", "payload_mismatch")
    assert [m["sid"] for m in sandbox.messages()][:1] == list(sids)
    assert len(sandbox.messages()) == 2  # one for K, one for K2; nothing for any repeat or mismatch
    if isinstance(store, ThreadedStore):
        assert store.threads and threading.main_thread().ident not in store.threads
    # The blocking gate computes the same key and fingerprint: it replays, it does not send.
    blocking = Gatekeeper(sandbox_server.client(), stores=Stores.using(store_kind.blocking_twin(store)))
    replay = blocking.notify(MOBILE, "Your code", from_=FROM, idempotency_key="K")
    assert (replay.sid, replay.replayed) == (next(iter(sids)), True)
    with pytest.raises(IdempotencyConflict) as conflict:
        blocking.notify(MOBILE, "Another text", from_=FROM, idempotency_key="K")
    assert conflict.value.reason == "payload_mismatch"
    assert len(sandbox.messages()) == 2


# -- the watchdog itself ----------------------------------------------------------------------------
class SlowOptOuts:
    """An opt-out store whose read waits 0.2 s (a disk, a network). It says nothing about blocking, so it is
    taken to block (``stores.base.blocking``) and the async gate runs it in a worker thread."""

    def __init__(self) -> None:
        self._inner = MemoryStore()
        self.reads: list[bool] = []  # per read: was it on the event loop's thread?

    def opt_out(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        return self._inner.opt_out(e164, scope, source=source, at=at)

    def opt_in(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        return self._inner.opt_in(e164, scope, source=source, at=at)

    def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        self.reads.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.2)
        return self._inner.opted_out_scope(e164, scopes)

    def consent_history(self, e164: str, *, limit: int = 50) -> list[Any]:
        return self._inner.consent_history(e164, limit=limit)


class LyingOptOuts(SlowOptOuts):
    """The same store wrongly declaring that it never blocks: the async gate calls it on the event loop."""

    blocking = False


@pytest.mark.parametrize(("store_class", "caught"), [(LyingOptOuts, True), (SlowOptOuts, False)])
def test_the_watchdog_catches_a_blocked_loop(
    store_class: type[SlowOptOuts], caught: bool, sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """A 0.2 s store read on the loop's thread is reported by the slow-callback watchdog (so run_strict would
    fail the test); the same read declared blocking runs in a worker thread and the loop never waits."""
    slow = store_class()
    stores = Stores.memory()
    stores.opt_outs = slow  # satisfies the OptOutStore protocol

    async def main() -> bool:
        return await AsyncGatekeeper(sandbox_server.async_client(), stores=stores).is_opted_out(MOBILE)

    opted_out, reports = run_watched(main())
    assert opted_out is False
    assert slow.reads == [caught]  # read once: on the loop's thread only when it lied
    assert bool(reports) is caught
    if caught:
        assert re.search(r"took 0\.2\d* seconds", reports[0]), reports
        with pytest.raises(pytest.fail.Exception, match="the event loop was blocked"):
            run_strict(main())


class VersionedSlowOptOuts(SlowOptOuts):
    """A store that may block and vouches for its opt-outs with a suppression version that takes a disk read
    (0.2 s): the async gate reads that version as it reads the store's verbs, in a worker thread."""

    def __init__(self) -> None:
        super().__init__()
        self.version_reads: list[bool] = []  # per read: was it on the event loop's thread?

    def suppression_version(self) -> int:
        self.version_reads.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.2)
        return 0  # nothing is written in this test


def test_a_blocking_stores_suppression_version_is_read_off_the_loop(
    sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """A repeated number is screened by comparing suppression versions; a store that may block has its version
    read in a worker thread, so a slow version read never holds the loop (run_strict fails otherwise)."""
    slow = VersionedSlowOptOuts()
    stores = Stores.memory()
    stores.opt_outs = slow

    async def main() -> list[Action]:
        client = sandbox_server.async_client()
        try:
            gate = AsyncGatekeeper(client, stores=stores)
            return [(await gate.decide(MOBILE)).action for _ in range(5)]
        finally:
            await client.http_client.close()

    assert run_strict(main()) == [Action.SMS] * 5
    # Decides 1-2 fetch and keep the route, 3 takes a mark and reads consent, 4-5 only compare versions.
    assert len(slow.version_reads) == 3 and not any(slow.version_reads)
    assert slow.reads == [False, False, False]  # consent read (in a thread) by decides 1-3 only


FIRST_SEND = textwrap.dedent(
    """
    import asyncio, logging
    from gatekeeper.aio import AsyncGatekeeper
    from gatekeeper.sandbox import SandboxServer

    reports = []
    handler = logging.Handler()
    handler.emit = lambda record: reports.append(record.getMessage())
    logging.getLogger("asyncio").addHandler(handler)
    with SandboxServer() as server:
        client = server.async_client()
        gate = AsyncGatekeeper(client)  # built at startup, before the loop, as an application does

        async def main():
            asyncio.get_running_loop().slow_callback_duration = 0.02
            outcome = await gate.notify("+14155550100", "hi", from_="+15005550006")
            await client.http_client.close()
            return outcome.action.value

        print(asyncio.run(main(), debug=True), [r for r in reports if " took " in r])
    """
)


def test_the_first_send_of_a_fresh_process_does_not_stall_the_loop() -> None:
    """In a fresh interpreter (nothing of the SDK imported yet), the first notify of a gate built before the
    loop holds no callback for 20 ms: the SDK's lazy imports (~40 ms) were paid when the gate was built."""
    done = subprocess.run([sys.executable, "-c", FIRST_SEND], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "sms []"
