"""The README tells the truth: its API snippet runs, and its quick-start commands are what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_api_snippet_runs() -> None:
    """The Python block under 'The API' runs as written, against the sandbox."""
    section = README.split("## The API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    exec(compile(code.group(1), "README.md", "exec"), {})  # noqa: S102 - our own documentation


def test_quick_start_is_what_ci_runs() -> None:
    """The quick start has exactly two commands, and .ci/run runs the test one."""
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", README, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["./run demo", "./run test"]
    assert "./run test" in (ROOT / ".ci" / "run").read_text()
