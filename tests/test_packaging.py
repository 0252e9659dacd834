"""What the package index sees: one version, the distribution's name, the licence, and both ways to start the CLI."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import PYPROJECT

import gatekeeper

ROOT = Path(__file__).resolve().parent.parent
PROJECT = PYPROJECT["project"]
DISTRIBUTION = "gatekeeper-twilio"


def test_the_version_is_written_once_and_read_back() -> None:
    """pyproject.toml states the version; the installed metadata and gatekeeper.__version__ repeat it."""
    assert PROJECT["name"] == DISTRIBUTION
    assert "version" not in PROJECT.get("dynamic", [])
    assert importlib.metadata.version(DISTRIBUTION) == PROJECT["version"]
    assert gatekeeper.__version__ == PROJECT["version"]
    source = (ROOT / "gatekeeper" / "__init__.py").read_text()
    assert not re.search(r"__version__\s*=\s*[\"']", source), "the version is written only in pyproject.toml"


def test_an_uninstalled_source_tree_reads_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert gatekeeper._version() == PROJECT["version"]


@pytest.mark.parametrize("how", ["module", "script"])
def test_version_from_the_command_line(how: str) -> None:
    """`python -m gatekeeper --version` and the installed `gatekeeper --version` print the same line."""
    if how == "module":
        argv = [sys.executable, "-m", "gatekeeper", "--version"]
    else:
        script = Path(sys.executable).with_name("gatekeeper")
        if not script.exists():
            pytest.skip(f"no console script beside {sys.executable}: the package is not installed there")
        argv = [str(script), "--version"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"gatekeeper {PROJECT['version']}\n", "")


def test_python_dash_m_gatekeeper_is_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert done.stdout.startswith("usage: gatekeeper ")
    for command in ("demo", "check", "enrich", "serve", "sandbox"):
        assert command in done.stdout


def test_licence_and_classifiers() -> None:
    """MIT under PEP 639 (an SPDX expression and the file), which needs setuptools 77; the Python versions listed
    are those requires-python and ./run's pick_python accept."""
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "Copyright (c) the Gatekeeper authors" in licence
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]
    classifiers = PROJECT["classifiers"]
    assert not [c for c in classifiers if c.startswith("License ::")]  # superseded by the expression (PEP 639)
    listed = sorted(
        c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    tried = re.search(r"for py in \$\{PYTHON:-\} (.*?); do", (ROOT / "run").read_text())
    assert tried is not None
    from_run = sorted(p.removeprefix("python") for p in tried.group(1).split() if re.fullmatch(r"python3\.\d+", p))
    assert listed == from_run
    assert PROJECT["requires-python"] == f">={min(listed, key=lambda v: int(v.split('.')[1]))}"
    assert "urls" not in PROJECT  # no hosting yet: see the TODO in pyproject.toml


def test_installed_metadata_carries_the_licence() -> None:
    meta = importlib.metadata.metadata(DISTRIBUTION)
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in (meta.get_all("License-File") or [])
