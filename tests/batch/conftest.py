"""Fixtures for the batch tests: a live sandbox, gates wired to it, CSV and JSON Lines helpers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.gate import Gatekeeper
from gatekeeper.sandbox import SandboxServer
from gatekeeper.stores.base import Stores
from gatekeeper.stores.memory import MemoryStore

MakeGate = Callable[..., Gatekeeper]


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer() as running:
        yield running


@pytest.fixture
def sandbox_server(server: SandboxServer) -> SandboxServer:
    """The module's sandbox, with no requests, faults or overrides left by an earlier test."""
    server.sandbox.reset()
    return server


@pytest.fixture
def make_gate(sandbox_server: SandboxServer) -> MakeGate:
    """A Gatekeeper on the sandbox with a fresh memory store (empty cache) unless ``stores`` is given."""

    def make(**kwargs: Any) -> Gatekeeper:
        kwargs.setdefault("stores", Stores.using(MemoryStore()))
        return Gatekeeper(sandbox_server.client(), **kwargs)

    return make


class Files:
    """Writes input CSVs and reads JSON Lines outputs under one test's ``tmp_path``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "out.jsonl"

    def csv(self, text: str | bytes, name: str = "in.csv") -> Path:
        path = self.root / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def records(self, path: Path | None = None) -> list[dict[str, Any]]:
        """Every record of an output; fails the test on a line that is not JSON."""
        text = (path or self.out).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def by_row(self, path: Path | None = None) -> dict[int, dict[str, Any]]:
        """Records keyed by row; fails the test when a row appears twice."""
        records = self.records(path)
        rows = [r["row"] for r in records]
        assert len(rows) == len(set(rows)), "a row was written twice"
        return {r["row"]: r for r in records}


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)
