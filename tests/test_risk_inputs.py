"""Lookup's risk packages as policy inputs (``[policy] sim_swap``, ``refuse_line_statuses``, Twilio's own
``number_blocked``), fetched only when a rule needs them, each with its own short TTL."""

from __future__ import annotations

from typing import Any

from support import FakeClock

from gatekeeper import Action, Gatekeeper, Settings, Stores
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.memory import MemoryStore

SWAPPED, INACTIVE, BLOCKED, PLAIN = "+14155550171", "+14155550172", "+14155550173", "+14155550174"


def gate(server: SandboxServer, sandbox: Sandbox, **policy: Any) -> Gatekeeper:
    sandbox.override_numbers({
        SWAPPED: {"line_type": "mobile", "sim_swapped": True},
        INACTIVE: {"line_type": "mobile", "line_status": "inactive"},
        BLOCKED: {"line_type": "mobile", "number_blocked": True},
        PLAIN: {"line_type": "mobile"},
    })  # fmt: skip
    clock = FakeClock()
    return Gatekeeper(server.client(), settings=Settings(policy=policy), clock=clock,
                      stores=Stores.using(MemoryStore(clock=clock)))  # fmt: skip


def fields_asked(sandbox: Sandbox) -> set[str]:
    return {f for r in sandbox.requests(route="lookup") for f in ",".join(r.query.get("Fields", [])).split(",") if f}


def test_no_rule_fetches_no_risk_package(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    g = gate(sandbox_server, sandbox)
    assert g.decide(SWAPPED, "mfa").action is Action.VERIFY_SMS
    assert fields_asked(sandbox) == {"line_type_intelligence"}


def test_a_recent_sim_swap_is_refused_or_flagged_for_mfa(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    g = gate(sandbox_server, sandbox, mfa={"sim_swap": "refuse"})
    refused = g.decide(SWAPPED, "mfa")
    assert refused.refused and refused.reasons == ("sim_swap:recent",) and refused.twilio_code == 60410
    assert "sim_swap" in fields_asked(sandbox)
    assert not g.decide(PLAIN, "mfa").refused
    assert not g.decide(SWAPPED, "notify").refused  # the rule was set for MFA only
    flagged = gate(sandbox_server, sandbox, sim_swap="flag").decide(SWAPPED, "mfa")
    assert not flagged.refused and "sim_swap:recent" in flagged.reasons


def test_an_inactive_line_and_twilios_own_block(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    g = gate(sandbox_server, sandbox, refuse_line_statuses=["inactive", "unreachable"], max_sms_pumping_risk=90)
    assert g.decide(INACTIVE).reasons == ("line_status:inactive",)
    assert g.decide(BLOCKED).reasons == ("sms_pumping_risk:number_blocked",)
    assert not g.decide(PLAIN).refused
    assert {"line_status", "sms_pumping_risk"} <= fields_asked(sandbox)
