"""Every example runs, offline against the sandbox, and does what its docstring says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPECTED = {
    "quickstart.py": ["sent SM", "refused 21614"],
    "notification_service.py": [
        "order 1001: sms",
        "order 1002: voice",
        "order 1003: refuse  code 21211",
        "replayed=True",
        "messages sent: 1 calls placed: 1",
    ],
    "mfa_enrollment.py": [
        "alex@example.com: verify_sms",
        "code checked: approved",
        "sam@example.com: totp",
        "otpauth://totp/",
        "the app's code verifies: True",
    ],
    "async_service.py": [
        "sent 20 texts; Lookups paid: 1",
        "refused 21614",
        "notify a landline: voice CA",
        "after STOP: refuse 21610",
    ],
    "flask_app.py": [
        "callbacks answered: [200, 200]",
        "stored status: delivered",
        "STOP answered 200",
        "next send: refuse 21610",
    ],
}


def test_every_example_is_covered() -> None:
    """No example goes untested."""
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    """The example exits 0 and prints what it promises."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(EXAMPLES.parent)}  # no Twilio credentials in reach
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    for text in EXPECTED[name]:
        assert text in out.stdout, f"{text!r} not in:\n{out.stdout}"
    assert "+14155550100" not in out.stderr  # nothing logged a full number
