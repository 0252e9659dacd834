"""The scripted story ``gatekeeper demo`` tells, offline: sandbox + webhooks in-process, the real SDK over HTTP.

Every step states what should happen and checks that it did; the demo passes only if all do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import requests
from flask import Flask
from rich.console import Console
from rich.table import Table
from twilio.request_validator import RequestValidator

from gatekeeper.gate import Gatekeeper
from gatekeeper.models import Action, Outcome
from gatekeeper.phone import mask
from gatekeeper.sandbox import TEST_AUTH_TOKEN, BackgroundServer, CallbackConfig, SandboxConfig, SandboxServer
from gatekeeper.settings import Settings
from gatekeeper.stores.base import Stores
from gatekeeper.webhooks import StatusEvent, init_app

MOBILE, LANDLINE, VOIP, FIXED_VOIP = "+14155550100", "+14155550101", "+14155550102", "+14155550103"
MOBILE_2 = "+14155550105"
SENDER = "+15005550006"
VERIFY_SERVICE = "VA" + "d" * 32
TEXT = "Your package arrives today between 2 and 4 pm."


@dataclass
class Step:
    title: str
    number: str
    expected: str
    outcome: str = ""
    reasons: str = ""
    lookups: int = 0
    ok: bool = False


class Demo:
    """The sandbox, the webhook app and a Gatekeeper wired together on loopback."""

    def __init__(self) -> None:
        self.sandbox_server = SandboxServer(SandboxConfig(callbacks=CallbackConfig(mode="manual"))).start()
        self.sandbox = self.sandbox_server.sandbox
        self.client = self.sandbox_server.client()
        # The sandbox calls the webhooks on loopback: the one host their signatures are checked for.
        loopback = Settings(webhooks={"allowed_hosts": ["127.0.0.1"]})
        self.gate = Gatekeeper(self.client, settings=loopback, stores=Stores.memory())
        email_mfa = dataclasses.replace(self.gate.policies["mfa"], voip="email")
        self.email_gate = self.gate.derive(policy={"mfa": email_mfa})
        self.status_events: list[StatusEvent] = []
        app = Flask("gatekeeper-demo")
        init_app(app, self.gate, on_status=self.status_events.append)
        self.webhook_server = BackgroundServer(app, name="webhooks").start()
        self.hooks = self.webhook_server.url + "/twilio"

    def close(self) -> None:
        self.webhook_server.stop()
        self.sandbox_server.stop()

    def lookups(self) -> int:
        return sum(self.sandbox.lookup_counts().values())

    def reply(self, from_number: str, body: str) -> requests.Response:
        """An inbound SMS, posted and signed exactly as Twilio would."""
        url = self.hooks + "/messages/inbound"
        params = {
            "MessageSid": "SM" + "e" * 32,
            "AccountSid": self.client.account_sid,
            "From": from_number,
            "To": SENDER,
            "Body": body,
            "NumMedia": "0",
        }
        signature = RequestValidator(TEST_AUTH_TOKEN).compute_signature(url, params)
        return requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)


def _describe(out: Outcome) -> tuple[str, str]:
    d = out.decision
    action = out.action.value + (f" {d.twilio_code}" if out.action is Action.REFUSE else "")
    return action, ", ".join(d.reasons) or "-"


def _story(demo: Demo) -> list[tuple[Step, Callable[[Step], bool]]]:
    gate, sandbox = demo.gate, demo.sandbox

    def mobile_sms(step: Step) -> bool:
        out = gate.notify(MOBILE, TEXT, from_=SENDER)
        step.outcome, step.reasons = _describe(out)
        return out.action is Action.SMS and any(m["sid"] == out.sid for m in sandbox.messages())

    def landline_voice(step: Step) -> bool:
        out = gate.notify(LANDLINE, TEXT, from_=SENDER)
        step.outcome, step.reasons = _describe(out)
        twiml = sandbox.call_twiml(out.sid) if out.sid else ""
        return out.action is Action.VOICE and f"{TEXT}</Say>" in (twiml or "")

    def voip_totp(step: Step) -> bool:
        out = gate.start_verification(VOIP, verify_service_sid=VERIFY_SERVICE)
        step.outcome, step.reasons = _describe(out)
        return out.action is Action.TOTP and not sandbox.verifications()

    def voip_email(step: Step) -> bool:
        out = demo.email_gate.start_verification(
            FIXED_VOIP, verify_service_sid=VERIFY_SERVICE, email="alex@example.com"
        )
        step.outcome, step.reasons = _describe(out)
        return out.action is Action.EMAIL and [v["channel"] for v in sandbox.verifications()] == ["email"]

    def invalid_no_lookup(step: Step) -> bool:
        before = demo.lookups()
        out = gate.notify("+1 415 555 01", TEXT, from_=SENDER)
        step.outcome, step.reasons = _describe(out)
        return out.decision.twilio_code == 21211 and demo.lookups() == before

    def stop_suppresses(step: Step) -> bool:
        answer = demo.reply(MOBILE, "Stop texting me, please")
        out = gate.notify(MOBILE, TEXT, from_=SENDER)
        step.outcome, step.reasons = _describe(out)
        return answer.status_code == 200 and out.decision.twilio_code == 21610

    def duplicate_callbacks(step: Step) -> bool:
        sandbox.configure_callbacks(duplicate=1.0)
        out = gate.notify(MOBILE_2, TEXT, from_=SENDER, status_callback=demo.hooks + "/messages/status")
        deliveries = [d for d in sandbox.flush_callbacks() if d.ok]
        processed = [e for e in demo.status_events if e.sid == out.sid]
        record = gate.status_of(out.sid or "")
        step.outcome = f"{len(deliveries)} callbacks, {len(processed)} processed"
        step.reasons = f"stored status: {record.status if record else None}"
        return (
            bool(processed)
            and len(deliveries) == 2 * len(processed)
            and record is not None
            and record.status == "delivered"
        )

    def cached(step: Step) -> bool:
        before = demo.lookups()
        decision = gate.decide(LANDLINE)
        step.outcome = f"{decision.action.value} (facts from {decision.facts.source if decision.facts else '-'})"
        step.reasons = ", ".join(decision.reasons)
        return decision.cache_hit and demo.lookups() == before

    return [
        (Step("Mobile gets an SMS", MOBILE, "sms"), mobile_sms),
        (Step("Landline gets a voice call saying the text", LANDLINE, "voice"), landline_voice),
        (Step("VoIP on MFA gets TOTP, not an SMS code", VOIP, "totp"), voip_totp),
        (Step("VoIP on MFA with voip = email gets an email code", FIXED_VOIP, "email"), voip_email),
        (Step("Invalid number refused, no Lookup paid", "+1415555****", "refuse 21211, 0 Lookups"), invalid_no_lookup),
        (Step('"Stop texting me, please" suppresses the next send', MOBILE, "refuse 21610"), stop_suppresses),
        (Step("Duplicated status callbacks processed once", MOBILE_2, "each status once"), duplicate_callbacks),
        (Step("Repeated number served from cache", LANDLINE, "no new Lookup"), cached),
    ]


def run(console: Console | None = None) -> bool:
    """Run the story and print it; True when every step behaved as stated."""
    console = console or Console()
    if not console.is_terminal:
        console = Console(file=console.file, width=150)  # a log or a CI page is wider than 80
    demo = Demo()
    steps: list[Step] = []
    try:
        for step, check in _story(demo):
            try:
                step.ok = check(step)
            except Exception as exc:  # a broken step is reported in its row, and fails the demo
                step.outcome, step.ok = f"error: {type(exc).__name__}: {exc}", False
            step.lookups = demo.lookups()
            steps.append(step)
    finally:
        demo.close()
    table = Table(title="Gatekeeper demo: sandbox + webhooks on loopback, real twilio SDK")
    for column in ("#", "step", "number", "expected", "what happened", "reasons", "Lookups", ""):
        table.add_column(column, overflow="fold")
    for i, s in enumerate(steps, start=1):
        mark = "[green]✓[/green]" if s.ok else "[red]✗[/red]"
        table.add_row(str(i), s.title, mask(s.number), s.expected, s.outcome, s.reasons, str(s.lookups), mark)
    console.print(table)
    passed = sum(s.ok for s in steps)
    style = "green" if passed == len(steps) else "red"
    console.print(f"[{style}]{passed}/{len(steps)} steps behaved as stated.[/{style}]")
    return passed == len(steps)
