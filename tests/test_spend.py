"""Spend caps (``[spend]``, gatekeeper/spend.py): each send's estimated cost charged to daily and monthly totals, in
all and per country, in every store; refused past a cap (enforce) or let through and counted (observe); days
turning over at midnight in the configured zone; nothing charged without a cap."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY
from support import FakeClock

from gatekeeper import Action, ConfigError, GatedClient, Gatekeeper, GateRefused, Settings, Stores
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.memory import MemoryStore

FROM = "+15005550006"
US_SMS = 0.0083  # the starting table's US SMS price per segment (prices.STARTING_PRICES)


def mobiles(n: int) -> list[str]:
    from gatekeeper.sandbox.numbers import NumberBook

    book, found, i = NumberBook(), [], 200
    while len(found) < n:
        if book.profile(f"+1415555{i:04d}").line_type == "mobile":
            found.append(f"+1415555{i:04d}")
        i += 1
    return found


MakeGate = Callable[..., tuple[Gatekeeper, FakeClock]]


@pytest.fixture
def make_gate(each_store_gate: MakeGate) -> MakeGate:
    """Gates on each store with ``[spend]`` from keywords, their clock starting at ``start``."""

    def make(start: float = 1_800_000_000.0, **spend: Any) -> tuple[Gatekeeper, FakeClock]:
        return each_store_gate(start=start, spend=spend)

    return make


def refusals(period: str, scope: str) -> float:
    return REGISTRY.get_sample_value("gatekeeper_spend_refusals_total", {"period": period, "scope": scope}) or 0.0


def test_a_daily_cap_refuses_the_send_that_would_pass_it(
    make_gate: Callable[..., tuple[Gatekeeper, FakeClock]], sandbox: Sandbox
) -> None:
    """Two one-segment texts to the US fit a cap of 2.5 segments' price; the third is refused before Twilio, as
    an Outcome from notify and as Twilio's 20429 from the drop-in, and counted."""
    gate, _ = make_gate(daily_usd=US_SMS * 2.5)
    numbers, before = mobiles(4), refusals("daily", "total")
    assert [gate.notify(n, "hi", from_=FROM).action for n in numbers[:2]] == [Action.SMS, Action.SMS]
    refused = gate.notify(numbers[2], "hi", from_=FROM)
    assert refused.action is Action.REFUSE and refused.decision.reasons == ("spend:daily:total",)
    with pytest.raises(GateRefused) as info:
        GatedClient(gate.client, gate).messages.create(to=numbers[3], from_=FROM, body="hi")
    assert info.value.code == 20429
    assert len(sandbox.messages()) == 2
    assert refusals("daily", "total") == before + 2


def test_a_country_cap_and_the_segments_of_the_body(make_gate: Callable[..., tuple[Gatekeeper, FakeClock]]) -> None:
    """A country's own cap holds apart from the total's; a text that forces UCS-2 costs its segments (161 GSM-7
    characters are 2 segments; a curly quote makes 71 characters 2 segments)."""
    gate, _ = make_gate(country_daily_usd={"us": US_SMS * 3.5})
    a, b, c = mobiles(3)
    assert gate.notify(a, "x" * 161, from_=FROM).action is Action.SMS  # 2 segments
    assert gate.notify(b, "it\u2019s" + "x" * 67, from_=FROM).action is Action.REFUSE  # 2 more: past 3.5
    assert gate.notify(c, "ok", from_=FROM).action is Action.SMS  # 1 more fits


def test_days_turn_over_at_midnight_in_the_configured_zone(
    make_gate: Callable[..., tuple[Gatekeeper, FakeClock]],
) -> None:
    zone = ZoneInfo("America/New_York")
    just_before = datetime(2026, 11, 30, 23, 59, 50, tzinfo=zone).timestamp()
    gate, clock = make_gate(start=just_before, daily_usd=US_SMS * 1.5, time_zone="America/New_York")
    a, b, c = mobiles(3)
    assert gate.notify(a, "hi", from_=FROM).action is Action.SMS
    assert gate.notify(b, "hi", from_=FROM).action is Action.REFUSE  # 23:59:50 New York: the same day
    clock.advance(20)  # 00:00:10 in New York (05:00 UTC: a UTC day would not have turned)
    assert gate.notify(c, "hi", from_=FROM).action is Action.SMS


def test_a_monthly_cap_turns_over_with_the_month(make_gate: Callable[..., tuple[Gatekeeper, FakeClock]]) -> None:
    last_day = datetime(2026, 11, 30, 12, tzinfo=ZoneInfo("UTC")).timestamp()
    gate, clock = make_gate(start=last_day, monthly_usd=US_SMS * 1.5)
    a, b, c = mobiles(3)
    assert [gate.notify(n, "hi", from_=FROM).action for n in (a, b)] == [Action.SMS, Action.REFUSE]
    assert gate.notify(b, "hi", from_=FROM).decision.reasons == ("spend:monthly:total",)
    clock.advance(86_400)  # 1 December
    assert gate.notify(c, "hi", from_=FROM).action is Action.SMS


def test_observe_mode_sends_and_counts(make_gate: Callable[..., tuple[Gatekeeper, FakeClock]]) -> None:
    gate, _ = make_gate(daily_usd=US_SMS * 1.5, mode="observe")
    before = refusals("daily", "total")
    assert [gate.notify(n, "hi", from_=FROM).action for n in mobiles(3)] == [Action.SMS] * 3
    assert refusals("daily", "total") == before + 2


def test_no_cap_charges_nothing(sandbox_server: SandboxServer) -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    gate = Gatekeeper(sandbox_server.client(), clock=clock, stores=Stores.using(store))
    assert gate.notify(mobiles(1)[0], "hi", from_=FROM).action is Action.SMS
    assert len(store._ledger) == 0


@pytest.mark.parametrize(
    "spend",
    [{"time_zone": "Mars/Olympus"}, {"country_daily_usd": {"USA": 1}}, {"prices": {"GB": {"sms": "-1"}}}],
)
def test_bad_spend_settings_are_config_errors(spend: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Settings.load(env={f"GATEKEEPER_SPEND__{k.upper()}": __import__("json").dumps(v) if not isinstance(v, str)
                           else v for k, v in spend.items()})  # fmt: skip


def test_max_price_passes_through_to_twilio(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """Twilio's own per-message price cap (max_price) reaches Messages from notify and from the drop-in."""
    gate = Gatekeeper(sandbox_server.client(), stores=Stores.using(MemoryStore()))
    a, b = mobiles(2)
    assert gate.notify(a, "hi", from_=FROM, max_price="0.05").action is Action.SMS
    GatedClient(gate.client, gate).messages.create(to=b, from_=FROM, body="hi", max_price="0.05")
    assert [r.form.get("MaxPrice") for r in sandbox.requests(route="messages.create")] == [["0.05"], ["0.05"]]
