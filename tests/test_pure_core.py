"""House rule 2: the pure core imports no network, Redis or Flask."""

from __future__ import annotations

import subprocess
import sys


def test_pure_modules_import_nothing_heavy() -> None:
    """phone, policy, router and pipeline load in a fresh interpreter without redis, flask, requests or twilio.rest."""
    code = (
        "import sys\n"
        "import gatekeeper.phone, gatekeeper.policy, gatekeeper.router, gatekeeper.pipeline\n"
        "bad = [m for m in ('redis', 'flask', 'requests', 'twilio.rest') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    # Import the submodules without running gatekeeper/__init__ (which wires the whole client).
    code = (
        "import importlib.util, sys, types\n"
        "spec = importlib.util.find_spec('gatekeeper')\n"
        "pkg = types.ModuleType('gatekeeper'); pkg.__path__ = list(spec.submodule_search_locations)\n"
        "sys.modules['gatekeeper'] = pkg\n" + code
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"pure core pulled in: {out.stdout.strip()}"
