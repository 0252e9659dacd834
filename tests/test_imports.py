"""`import gatekeeper` and `gatekeeper --help` stay cheap: the public names load on first use (PEP 562), the CLI
imports a command's modules only when that command runs. Timings: `python bench/imports.py` (not a test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import gatekeeper

#: What a bare import or the help text must not pull in: each costs tens of milliseconds.
HEAVY = {
    "twilio",
    "pydantic",
    "pydantic_settings",
    "requests",
    "urllib3",
    "flask",
    "werkzeug",
    "redis",
    "phonenumbers",
    "rich",
    "tenacity",
    "prometheus_client",
    "waitress",
    "pyotp",
    "asyncio",
}


def loaded_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code`` (heavy roots and gatekeeper's own)."""
    probe = (
        "import sys\n"
        f"{code}\n"
        f"heavy = {sorted(HEAVY)!r}\n"
        "print(__import__('json').dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in heavy or m.startswith('gatekeeper'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return list(json.loads(done.stdout.splitlines()[-1]))


def test_import_gatekeeper_loads_nothing_else() -> None:
    assert loaded_after("import gatekeeper") == ["gatekeeper"]


@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"], ["--version"]])
def test_the_cli_parses_without_loading_the_gate(argv: list[str]) -> None:
    code = f"from gatekeeper.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert loaded_after(code) == ["gatekeeper", "gatekeeper.cli"]


def test_public_names_resolve_to_their_modules_objects() -> None:
    import importlib

    for name in gatekeeper.__all__:
        value = getattr(gatekeeper, name)
        module = gatekeeper._LAZY.get(name)
        if module is not None:
            assert value is getattr(importlib.import_module(module), name), name
    assert set(gatekeeper.__all__) <= set(dir(gatekeeper))
    with pytest.raises(AttributeError, match="no attribute 'Gatekeepr'"):
        gatekeeper.Gatekeepr  # type: ignore[attr-defined]  # noqa: B018


def test_star_import_gives_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from gatekeeper import *", namespace)  # noqa: S102 - the star import is what is tested
    assert set(gatekeeper.__all__) <= set(namespace)
