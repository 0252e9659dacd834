"""``gatekeeper replay`` (gatekeeper/replay.py): the audit trail decided again under other settings. A pumping
attack recorded in observe mode is blocked when replayed in enforce mode, by the rule that would have fired; a
denied country blocks its decisions; consent refusals are kept; the command prints the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from guard_traces import attack, legitimate, run
from support import FakeClock

from gatekeeper import Gatekeeper, Settings, Stores
from gatekeeper.cli import main
from gatekeeper.replay import replay
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.memory import MemoryStore


def recorded(server: SandboxServer, trace: list[Any], **settings: Any) -> list[dict[str, Any]]:
    """The audit records of ``trace`` run through a gate with ``settings``."""
    clock = FakeClock()
    gate = Gatekeeper(server.client(), settings=Settings(**settings), clock=clock,
                      stores=Stores.using(MemoryStore(clock=clock)))  # fmt: skip
    start = clock()
    run(gate, trace, lambda offset: setattr(clock, "now", start + offset))
    return gate.audit(limit=10_000)


def test_an_attack_observed_is_blocked_when_replayed_in_enforce_mode(
    sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    records = recorded(sandbox_server, attack(100), guard={"mode": "observe"})
    report = replay(records, Settings())  # the shipped rules, enforced
    assert report.replayed == 100 and report.moves[("allowed", "blocked")] == 90
    assert report.by_rule[("allowed -> blocked", "velocity:prefix:+4474001:10m")] == 90
    assert report.by_country[("allowed -> blocked", "GB")] == 90
    legit = replay(recorded(sandbox_server, legitimate(100), guard={"mode": "observe"}), Settings())
    assert legit.moves[("allowed", "allowed")] == 100


def test_a_denied_country_and_kept_consent_refusals(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    records = recorded(sandbox_server, legitimate(60))
    report = replay(records, Settings(policy={"deny_countries": ["NG"]}))
    nigeria = sum(1 for r in records if (r.get("facts") or {}).get("country") == "NG")
    assert nigeria > 0 and report.moves[("allowed", "blocked")] == nigeria
    assert report.by_rule[("allowed -> blocked", "country:denied:NG")] == nigeria
    opted_out = {**records[0], "action": "refuse", "enforced": True, "reasons": ["opted_out:account"]}
    kept = replay([opted_out], Settings(policy={"allow_countries": ["ZZ"]}))
    assert kept.kept == 1 and kept.moves == {("blocked", "blocked"): 1}


def test_the_command_prints_what_would_change(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Decisions made by `gatekeeper check` (audited in the settings' store) replayed under a file that denies
    their country: the report says each would be blocked."""
    for number in ("+14155550100", "+14155550101"):
        main(["check", number, "--sandbox"])
    proposed = tmp_path / "new.toml"
    proposed.write_text('[policy]\ndeny_countries = ["US"]\n')
    capsys.readouterr()
    assert main(["replay", "--policy", str(proposed), "--since", "1d"]) == 0
    out = capsys.readouterr().out
    assert "replayed 2 decisions" in out and "allowed -> blocked: 2" in out and "country:denied:US" in out
