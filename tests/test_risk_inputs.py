"""Lookup's risk packages as policy inputs (``[policy] sim_swap``, ``refuse_line_statuses``, Twilio's own
``number_blocked``, ``reassigned`` with the caller's last-verified day), fetched only when a rule needs them, each
with its own short TTL."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from support import FakeClock

from gatekeeper import Action, GatedClient, Gatekeeper, GateRefused, Settings, Stores
from gatekeeper.errors import InvalidArgument
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.memory import MemoryStore

SWAPPED, INACTIVE, BLOCKED, PLAIN = "+14155550171", "+14155550172", "+14155550173", "+14155550174"
REASSIGNED = "+14155550175"  # changed hands on 2026-03-01


def gate(server: SandboxServer, sandbox: Sandbox, **policy: Any) -> Gatekeeper:
    sandbox.override_numbers({
        SWAPPED: {"line_type": "mobile", "sim_swapped": True},
        INACTIVE: {"line_type": "mobile", "line_status": "inactive"},
        BLOCKED: {"line_type": "mobile", "number_blocked": True},
        PLAIN: {"line_type": "mobile"},
        REASSIGNED: {"line_type": "mobile", "reassigned_on": "20260301"},
    })  # fmt: skip
    clock = FakeClock()
    return Gatekeeper(server.client(), settings=Settings(policy=policy), clock=clock,
                      stores=Stores.using(MemoryStore(clock=clock)))  # fmt: skip


def lookups(sandbox: Sandbox) -> list[dict[str, list[str]]]:
    return [dict(r.query) for r in sandbox.requests(route="lookup")]


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


def test_a_number_reassigned_since_the_caller_last_verified_it_is_refused(
    sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """With ``last_verified=`` a US number's reassigned_number is asked for that day (``LastVerifiedDate``): changed
    hands since, it is refused (``reassigned_number:yes``, the fraud-block code); verified after the change, or
    never changed, it goes. Without a day nothing is asked."""
    g = gate(sandbox_server, sandbox)
    assert g.decide(REASSIGNED, "mfa").action is Action.VERIFY_SMS
    assert "reassigned_number" not in fields_asked(sandbox)
    refused = g.decide(REASSIGNED, "mfa", last_verified=date(2026, 1, 15))
    assert refused.refused and refused.reasons == ("reassigned_number:yes",) and refused.twilio_code == 60410
    assert lookups(sandbox)[-1] == {"Fields": ["line_type_intelligence,reassigned_number"], "CountryCode": ["US"],
                                    "LastVerifiedDate": ["20260115"]}  # fmt: skip
    assert not g.decide(REASSIGNED, "mfa", last_verified="2026-04-01").refused
    assert not g.decide(PLAIN, "notify", last_verified="20260115").refused
    outcome = g.notify(REASSIGNED, "your order shipped", from_="+14155550100", last_verified="2026-01-15")
    assert outcome.action is Action.REFUSE and outcome.decision.reasons == ("reassigned_number:yes",)


def test_reassigned_answers_are_cached_per_day_and_only_for_us_numbers(
    sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """The same day again is answered from the cache, for a day (its own TTL); another day is one more Lookup; a
    number outside the US (where Lookup has no reassigned data) is not asked about it; ``flag`` lets the attempt go
    with the reason."""
    g = gate(sandbox_server, sandbox, reassigned="flag")
    flagged = g.decide(REASSIGNED, last_verified="2026-01-15")
    assert not flagged.refused and "reassigned_number:yes" in flagged.reasons
    assert g.decide(REASSIGNED, last_verified="2026-01-15").cache_hit
    g.decide(REASSIGNED, last_verified="2026-02-15")
    assert [q.get("LastVerifiedDate") for q in lookups(sandbox)] == [["20260115"], ["20260215"]]
    g.decide("+447400123456", last_verified="2026-01-15")
    assert len(lookups(sandbox)) == 3 and lookups(sandbox)[-1]["CountryCode"] == ["GB"]
    assert "LastVerifiedDate" not in lookups(sandbox)[-1]
    g.decide(PLAIN)  # the number's answer without a day, held too: no route is kept from it for a dated ask
    g.decide(PLAIN, last_verified="2026-01-15")
    g.clock.advance(86_401)  # reassigned_number's own TTL (1 day) is over
    g.decide(PLAIN, last_verified="2026-01-15")
    dated = [r for r in sandbox.requests(route="lookup") if r.path.endswith(PLAIN) and "LastVerifiedDate" in r.query]
    assert len(dated) == 2  # asked again once its day's answer aged out, though the line type was still fresh
    ignoring = gate(sandbox_server, sandbox, reassigned="ignore")
    assert not ignoring.decide(REASSIGNED, "mfa", last_verified="2026-01-15").refused


def test_last_verified_through_the_drop_in_and_bad_days(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """The drop-in takes ``last_verified=`` for the gate and never sends it to Twilio; a day that is not one, or is
    in the future, is an InvalidArgument before anything is paid for."""
    g = gate(sandbox_server, sandbox)
    gated = GatedClient(sandbox_server.client(), g)
    with pytest.raises(GateRefused) as refused:
        gated.messages.create(to=REASSIGNED, from_="+14155550100", body="hi", last_verified=date(2026, 1, 15))
    assert refused.value.code == 60410 and "reassigned_number:yes" in str(refused.value)
    sent = gated.messages.create(to=PLAIN, from_="+14155550100", body="hi", last_verified="2026-01-15")
    assert sent.sid and "LastVerifiedDate" not in sandbox.requests(route="messages")[-1].form
    for bad in ("2026-13-01", "yesterday", 20260115, date.today() + timedelta(days=3)):
        with pytest.raises(InvalidArgument):
            g.decide(PLAIN, last_verified=bad)  # type: ignore[arg-type]
    assert len(lookups(sandbox)) == 2
