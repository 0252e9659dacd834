"""Quiet hours in the gate (``[quiet]``): a notification in the recipient's night is refused (refuse), scheduled
through a Messaging Service for the window's opening or answered DEFER (defer), sent and counted (observe), never
held back for MFA; off by default. The recipient's zones and the window's arithmetic are ``quiet.py``'s
(tests/test_quiet.py)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from support import FakeClock

from gatekeeper import Action, ConfigError, GatedClient, Gatekeeper, GateRefused, Settings, Stores
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.memory import MemoryStore

FROM, MG = "+15005550006", "MG" + "0" * 32
NEW_YORK = ZoneInfo("America/New_York")
NIGHT = datetime(2026, 11, 30, 23, 30, tzinfo=NEW_YORK).timestamp()  # 23:30 in San Francisco's zone is 20:30
DAY = datetime(2026, 11, 30, 14, 0, tzinfo=NEW_YORK).timestamp()


def ny_mobile() -> str:
    from gatekeeper.sandbox.numbers import NumberBook

    book = NumberBook()
    return next(f"+1212555{i:04d}" for i in range(100, 9999) if book.profile(f"+1212555{i:04d}").line_type == "mobile")


def gate(server: SandboxServer, at: float, **quiet: Any) -> Gatekeeper:
    clock = FakeClock(at)
    return Gatekeeper(
        server.client(), settings=Settings(quiet=quiet), clock=clock, stores=Stores.using(MemoryStore(clock=clock))
    )


def test_off_by_default(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    assert gate(sandbox_server, NIGHT).notify(ny_mobile(), "hi", from_=FROM).action is Action.SMS


def test_refuse_mode_refuses_at_night_names_the_zone_and_when(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    g = gate(sandbox_server, NIGHT, mode="refuse")
    out = g.notify(ny_mobile(), "hi", from_=FROM)
    assert out.action is Action.REFUSE and out.decision.twilio_code == 20429
    assert out.decision.reasons == ("quiet_hours:US:America/New_York", "retry_at:2026-12-01T13:00:00+00:00")
    with pytest.raises(GateRefused) as info:  # the drop-in: Twilio's "not now"
        GatedClient(g.client, g).messages.create(to=ny_mobile(), from_=FROM, body="hi")
    assert info.value.code == 20429
    assert sandbox.messages() == []
    assert gate(sandbox_server, DAY, mode="refuse").notify(ny_mobile(), "hi", from_=FROM).action is Action.SMS


def test_observe_mode_sends_at_night_and_counts_it(
    sandbox_server: SandboxServer, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Observe: a notification in quiet hours goes, counted by country and logged with the number masked, so an
    operator sees what refuse or defer would hold back before enforcing."""
    from prometheus_client import REGISTRY

    def observed() -> float:
        labels = {"mode": "observe", "country": "US"}
        return REGISTRY.get_sample_value("gatekeeper_quiet_hours_total", labels) or 0.0

    before, number = observed(), ny_mobile()
    with caplog.at_level(logging.INFO, logger="gatekeeper"):
        out = gate(sandbox_server, NIGHT, mode="observe").notify(number, "hi", from_=FROM)
    assert out.action is Action.SMS and len(sandbox.messages()) == 1
    assert observed() == before + 1
    assert "quiet hours (observe)" in caplog.text and number not in caplog.text and number[:-4] in caplog.text
    gate(sandbox_server, DAY, mode="observe").notify(number, "hi", from_=FROM)
    assert observed() == before + 1  # daytime: nothing to observe


def test_mfa_is_exempt(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    out = gate(sandbox_server, NIGHT, mode="refuse").start_verification(ny_mobile(), verify_service_sid="VA" + "0" * 32)
    assert out.action is Action.VERIFY_SMS


def test_defer_schedules_through_a_messaging_service_or_answers_defer(
    sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """With a Messaging Service the text goes now, scheduled (send_at, schedule_type fixed) for 08:00 New York;
    without one, notify answers DEFER with the earliest time, and nothing is sent."""
    g = gate(sandbox_server, NIGHT, mode="defer")
    out = g.notify(ny_mobile(), "hi", messaging_service_sid=MG)
    assert out.action is Action.SMS and out.status == "scheduled"
    form = sandbox.requests(route="messages.create")[-1].form
    assert form["SendAt"][0].startswith("2026-12-01T13:00:00") and form["ScheduleType"] == ["fixed"]
    deferred = g.notify(ny_mobile(), "hi", from_=FROM)
    assert deferred.action is Action.DEFER and deferred.detail == {"earliest": "2026-12-01T13:00:00+00:00"}
    assert len(sandbox.messages()) == 1


def test_a_bad_window_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Settings.load(env={"GATEKEEPER_QUIET__WINDOW": "8 to 9"})
