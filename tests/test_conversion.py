"""Conversion-aware limits for MFA (``[guard.conversion]``, gatekeeper/conversion.py): Verify codes the gate sends
count as started and approvals as approved, per prefix and country, once per verification however they are heard of
(the gate's checks, the drop-in's, Verify's events webhook); a prefix approving too few of its settled codes has
its rules tightened within bounds, says why, and is logged; on every store, on a fake clock."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from guard_traces import VA, legitimate, paced_attack, run
from support import FakeClock
from twilio.request_validator import RequestValidator

from gatekeeper import GatedClient, Gatekeeper, Settings, Stores
from gatekeeper.errors import StoreUnavailable
from gatekeeper.models import Action
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.memory import MemoryStore
from gatekeeper.velocity import Terms, factor, tightened
from gatekeeper.webhooks import init_app

MakeGate = Callable[..., tuple[Gatekeeper, FakeClock]]


def _mobiles(count: int) -> list[str]:
    """``count`` numbers of one block (+1 415 555) the sandbox answers as mobiles."""
    from gatekeeper.sandbox.numbers import NumberBook

    book = NumberBook()
    numbers = (f"+1415555{i:04d}" for i in range(300, 9999))
    return [n for n in numbers if book.profile(n).line_type == "mobile"][:count]


BLOCK = _mobiles(24)
PREFIX = "+1415555"


def start(gate: Gatekeeper, number: str, i: int) -> Any:
    return gate.start_verification(number, verify_service_sid=VA, client_key=f"ip:{i}")


def tallies(gate: Gatekeeper, clock: FakeClock, scope: str = "prefix", subject: str = PREFIX) -> list[int]:
    """Started and approved for ``subject`` over the last day, as the store holds them."""
    keys = [f"conversion:{kind}:{scope}:{subject}" for kind in ("started", "approved")]
    return list(gate.stores.windows.tally([(key, clock() - 86_400, clock()) for key in keys]))  # type: ignore[union-attr]


def test_the_arithmetic_of_a_tightened_limit() -> None:
    """A subject is judged only from min_started settled codes, tightened only under the floor, to rate ÷ floor of
    its limits, never below min_factor of them nor below 1."""
    terms = Terms(min_started=10, floor=0.3, min_factor=0.1)
    assert factor(9, 0, terms) is None  # too few to judge
    assert factor(10, 3, terms) is None  # at the floor: left alone
    assert factor(10, 8, terms) is None
    assert factor(20, 3, terms) == pytest.approx(0.5)  # 15 % of a 30 % floor: half the limits
    assert factor(50, 0, terms) == 0.1  # collapsed: the bound
    assert factor(10, 20, terms) is None  # approvals of codes sent before the window: a rate of at most 1
    assert tightened(10, 0.5) == 5 and tightened(10, 0.1) == 1 and tightened(3, 0.1) == 1


def test_a_prefix_whose_codes_are_not_entered_has_its_limit_tightened(
    each_store_gate: MakeGate, sandbox: Sandbox
) -> None:
    """Ten codes sent to one block and none entered: once the prefix rule's own window has passed, the block gets
    one attempt per window instead of ten; the refusal names the rule, why it is tight, and the wait."""
    gate, clock = each_store_gate()
    assert all(start(gate, n, i).action is Action.VERIFY_SMS for i, n in enumerate(BLOCK[:10]))
    assert tallies(gate, clock) == [10, 0]
    clock.advance(11 * 60)  # the prefix rule's 10 minutes over; the codes settled (2 minutes), none approved
    assert start(gate, BLOCK[10], 10).action is Action.VERIFY_SMS
    refused = start(gate, BLOCK[11], 11)
    assert refused.action is Action.REFUSE and refused.decision.twilio_code == 60203
    assert refused.decision.reasons == (
        "velocity:prefix:+1415555:10m",
        "conversion:prefix:+1415555:0/10",
        "retry_after:600s",
    )
    assert len(sandbox.verifications()) == 11


def test_a_prefix_whose_codes_are_entered_keeps_its_limit(each_store_gate: MakeGate, sandbox: Sandbox) -> None:
    """The same block with eight of ten codes entered (through ``gate.verify_check``) keeps all ten attempts of its
    next window."""
    gate, clock = each_store_gate()
    for i, number in enumerate(BLOCK[:10]):
        start(gate, number, i)
        if i < 8:
            checked = gate.verify_check(number, sandbox.verification_code(number), verify_service_sid=VA)
            assert checked.status == "approved"
    assert tallies(gate, clock) == [10, 8]
    clock.advance(11 * 60)
    assert [start(gate, n, 10 + i).action for i, n in enumerate(BLOCK[10:20])] == [Action.VERIFY_SMS] * 10


def test_codes_still_settling_are_not_judged_and_observe_mode_names_the_tightening(
    sandbox_server: SandboxServer,
) -> None:
    """Codes sent within ``settle`` do not count as started (they may still be entered); once settled, an observing
    guard lets the attempt go and names both the rule and why it was tight."""
    clock = FakeClock()
    rules = [{"scope": "prefix", "window": "1m", "limit": 10, "purpose": "mfa"}]
    gate = Gatekeeper(sandbox_server.client(), clock=clock, stores=Stores.using(MemoryStore(clock=clock)),
                      settings=Settings(guard={"mode": "observe", "rules": rules}))  # fmt: skip
    for i, number in enumerate(BLOCK[:10]):
        start(gate, number, i)
    clock.advance(61)  # the rule's minute over, the codes not yet settled: ten more go, nothing named
    assert all(start(gate, n, i).decision.reasons == () for i, n in enumerate(BLOCK[10:20]))
    clock.advance(119)  # the first ten settled, unapproved; the next ten (61 s later) not yet: 0 of 10 approved
    start(gate, BLOCK[20], 20)
    observed = start(gate, BLOCK[21], 21)
    assert observed.action is Action.VERIFY_SMS
    assert observed.decision.reasons == (
        "velocity:prefix:+1415555:1m:observe",
        "conversion:prefix:+1415555:0/10:observe",
    )


def test_a_verification_counts_once_however_it_is_heard_of(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """The gate's send, the drop-in's check, ``record_verification`` and a repeat of each count one verification
    started and one approved; a wrong code approves nothing; other statuses and addresses count nothing."""
    clock = FakeClock()
    gate = Gatekeeper(sandbox_server.client(), clock=clock, stores=Stores.using(MemoryStore(clock=clock)))
    gated = GatedClient(sandbox_server.client(), gate)
    service = gated.verify.v2.services(VA)
    sent = service.verifications.create(to=BLOCK[0], channel="sms")
    wrong = service.verification_checks.create(to=BLOCK[0], code="000000")
    assert wrong.status == "pending" and tallies(gate, clock) == [1, 0]
    approved = service.verification_checks.create(to=BLOCK[0], code=sandbox.verification_code(BLOCK[0]))
    assert approved.status == "approved" and approved.sid == sent.sid
    gate.record_verification(BLOCK[0], sent.sid, "approved")
    gate.record_verification(BLOCK[0], sent.sid, "pending")
    gate.record_verification(BLOCK[1], "VE" + "9" * 32, "canceled")
    gate.record_verification("person@example.com", "VE" + "8" * 32, "approved")
    assert tallies(gate, clock) == [1, 1]
    assert tallies(gate, clock, "country", "US") == [1, 1]


def test_async_gates_and_async_drop_in_checks_count_too(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """AsyncGatekeeper's send and ``verify_check``, and ``create_async`` checks through the drop-in over either
    gate, count as the blocking ones do."""
    from gatekeeper.aio import AsyncGatekeeper

    async def main() -> tuple[list[int], list[int]]:
        clock = FakeClock()
        aio = AsyncGatekeeper(sandbox_server.async_client(), clock=clock, stores=Stores.using(MemoryStore(clock=clock)))
        try:
            await aio.start_verification(BLOCK[0], verify_service_sid=VA)
            await aio.verify_check(BLOCK[0], sandbox.verification_code(BLOCK[0]), verify_service_sid=VA)
            await aio.start_verification(BLOCK[1], verify_service_sid=VA)
            checks = GatedClient(sandbox_server.async_client(), aio).verify.v2.services(VA).verification_checks
            await checks.create_async(to=BLOCK[1], code=sandbox.verification_code(BLOCK[1]))
            blocking = Gatekeeper(sandbox_server.client(), clock=clock, stores=Stores.using(MemoryStore(clock=clock)))
            over_blocking = GatedClient(sandbox_server.async_client(), blocking).verify.v2.services(VA)
            await over_blocking.verifications.create_async(to=BLOCK[2], channel="sms")
            await over_blocking.verification_checks.create_async(to=BLOCK[2], code=sandbox.verification_code(BLOCK[2]))
            return tallies(aio, clock), tallies(blocking, clock)  # type: ignore[arg-type]  # memory: a blocking tally
        finally:
            await aio.close()

    assert asyncio.run(main()) == ([2, 2], [1, 1])


def test_a_store_that_cannot_count_never_fails_a_sent_code(
    sandbox_server: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Counting is advisory: with the conversion windows failing, the code still goes out, its Outcome is returned
    (not an error the caller would retry, sending twice) and the failure is logged."""

    class NoConversions(MemoryStore):
        def hit(self, key: str, event: str, **kwargs: Any) -> tuple[int, float | None]:
            if key.startswith("conversion:"):
                raise StoreUnavailable("conversion windows down")
            return super().hit(key, event, **kwargs)

    clock = FakeClock()
    gate = Gatekeeper(sandbox_server.client(), clock=clock, stores=Stores.using(NoConversions(clock=clock)))
    with caplog.at_level(logging.WARNING, logger="gatekeeper.guard"):
        outcome = gate.start_verification(BLOCK[0], verify_service_sid=VA)
    assert outcome.action is Action.VERIFY_SMS and outcome.sid
    assert "could not count a verification pending: unavailable" in caplog.text


def test_stores_without_windows_count_nothing_and_fail_nothing(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """A gate whose stores keep no windows (a custom store without ``Windows``) sends and checks codes as usual:
    nothing is counted, nothing raised."""
    clock = FakeClock()
    gate = Gatekeeper(sandbox_server.client(), clock=clock, stores=Stores.using(MemoryStore(clock=clock)))
    gate.stores.windows = None  # as Stores.using leaves it for a backend without the verbs
    assert gate.start_verification(BLOCK[0], verify_service_sid=VA).action is Action.VERIFY_SMS
    checked = gate.verify_check(BLOCK[0], sandbox.verification_code(BLOCK[0]), verify_service_sid=VA)
    assert checked.status == "approved"
    gate.record_verification(BLOCK[0], checked.sid, "approved")


def test_the_verify_events_webhook_counts_event_streams_verifications(sandbox_server: SandboxServer) -> None:
    """A signed Event Streams delivery (a JSON array of CloudEvents) counts each verification's status once: a
    repeat of the delivery, and events of other types, count nothing."""
    clock = FakeClock()
    client = sandbox_server.client()
    gate = Gatekeeper(client, clock=clock, stores=Stores.using(MemoryStore(clock=clock)),
                      settings=Settings(webhooks={"public_base_url": "http://localhost"}))  # fmt: skip
    app = Flask("conversion")
    init_app(app, gate)

    def event(kind: str, sid: str, to: str) -> dict[str, Any]:
        data = {"verification_sid": sid, "to": to, "verification_status": kind.upper(), "country": "US"}
        return {"specversion": "1.0", "type": f"com.twilio.accountsecurity.verify.verification.{kind}",
                "id": f"EV{sid}{kind}", "data": data}  # fmt: skip

    a, b = "VE" + "a" * 32, "VE" + "b" * 32
    body = json.dumps([
        event("pending", a, BLOCK[0]), event("approved", a, BLOCK[0]), event("approved", b, BLOCK[1]),
        {"specversion": "1.0", "type": "com.twilio.messaging.message.delivered", "data": {"to": BLOCK[2]}},
    ])  # fmt: skip
    path = f"/twilio/verify/events?bodySHA256={hashlib.sha256(body.encode()).hexdigest()}"
    signature = RequestValidator(client.password).compute_signature(f"http://localhost{path}", {})
    web = app.test_client()
    for _ in range(2):
        answer = web.post(path, data=body, content_type="application/json", headers={"X-Twilio-Signature": signature})
        assert answer.status_code == 200
    assert tallies(gate, clock) == [1, 2]


def test_a_paced_attack_is_cut_and_real_users_are_not(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """Fixed seeds, as ``bench/guard.py`` prints them: one code a minute to one block for two hours (within the
    prefix rule, none entered) gets 120 codes out of the velocity rules alone and 22 with conversion-aware limits;
    two hours of real users across 10 countries (80 % entering their code) are never blocked."""

    def trace(attempts: list[Any], conversion: bool) -> Any:
        sandbox.reset()
        clock = FakeClock()
        gate = Gatekeeper(sandbox_server.client(), clock=clock, stores=Stores.using(MemoryStore(clock=clock)),
                          settings=Settings(guard={"conversion": {"enabled": conversion}}))  # fmt: skip
        start_at = clock()
        return run(gate, attempts, lambda offset: setattr(clock, "now", start_at + offset), sandbox.verification_code)

    paced, users = paced_attack(hours=2), legitimate(240, every_seconds=30)
    assert trace(paced, conversion=False).sent == 120
    cut = trace(paced, conversion=True)
    assert cut.sent == 22 and cut.first_blocked == 12
    assert trace(users, conversion=True).blocked == 0
