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


def test_every_test_the_readme_cites_exists() -> None:
    """Each `tests/<file>.py::test_name` (or `::test_name` after one) in the README names a test function that
    exists in that file, so the table of doors cannot point at a test that was renamed or removed."""
    cited: list[tuple[str, str]] = []
    for cell in re.findall(r"`(tests/[\w/]+\.py)?::(test_\w+)[^`]*`", README):
        cited.append(cell)
    current = ""
    resolved = []
    for path, name in cited:
        current = path or current
        assert current, f"{name} cited before any file"
        resolved.append((current, name))
    assert len(resolved) >= 20
    for path, name in resolved:
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"README cites {path}::{name}, which does not exist"
