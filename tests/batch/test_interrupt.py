"""Ctrl-C and resuming after it: the Lookups in flight are written, and no number is paid for twice."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.batch import ProgressEvent, enrich_file
from gatekeeper.cli import main

NUMBERS = [f"+1415555{3000 + i}" for i in range(16)]
SLOW_SECONDS = 0.3  # each Lookup's latency: long enough that Lookups are in flight when Ctrl-C comes


def _input(files: Any, numbers: list[str] = NUMBERS) -> Path:
    path: Path = files.csv("phone\n" + "".join(f"{n}\n" for n in numbers))
    return path


def served(sandbox_server: Any) -> dict[str, int]:
    """Lookups the sandbox answered (paid for), per number."""
    counts: dict[str, int] = {}
    for request in sandbox_server.sandbox.requests("lookup"):
        if request.status == 200:
            counts[request.number] = counts.get(request.number, 0) + 1
    return counts


def join_workers() -> None:
    """Wait for the worker threads a run left behind (a second Ctrl-C does not wait for them)."""
    for thread in threading.enumerate():
        if thread.name.startswith("gatekeeper-enrich"):
            thread.join(timeout=10)


def ctrl_c(times: int = 1) -> None:
    for _ in range(times):
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_writes_the_lookups_in_flight_and_a_resume_pays_for_none_twice(sandbox_server, make_gate, files):
    """The first Ctrl-C stops the run: no new Lookup, the ones under way finish and are written, then
    KeyboardInterrupt; every Lookup Twilio answered is in the output. The resume completes it, each number
    looked up once over both runs, and Python's own SIGINT handler is back."""
    sandbox_server.sandbox.add_fault("latency", route="lookup", latency_seconds=SLOW_SECONDS)
    gate = make_gate()
    src = _input(files)

    def on_progress(event: ProgressEvent) -> None:
        if event.so_far.rows == 1:
            ctrl_c()

    with pytest.raises(KeyboardInterrupt):
        enrich_file(gate, src, files.out, concurrency=4, rate_per_second=1000, progress=on_progress)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    written = {r["e164"] for r in files.by_row().values()}
    paid = served(sandbox_server)
    assert written == set(paid) and 1 < len(written) < len(NUMBERS)  # stopped, with the ones in flight
    assert all(r["status"] == "ok" and r["facts"]["source"] == "lookup" for r in files.records())
    assert files.out.read_bytes().endswith(b"\n")

    summary = enrich_file(gate, src, files.out, concurrency=4, rate_per_second=1000)
    assert summary.skipped == len(written) and summary.looked_up == len(NUMBERS) - len(written)
    assert sorted(files.by_row()) == list(range(1, len(NUMBERS) + 1))
    assert served(sandbox_server) == dict.fromkeys(NUMBERS, 1)


def test_a_second_ctrl_c_leaves_at_once_and_the_cache_keeps_what_it_paid_for(sandbox_server, make_gate, files):
    """Ctrl-C twice leaves without waiting for the Lookups in flight: their rows are missing from the output but
    their answers reach the Lookup cache, so the resume decides those rows from it, with no Lookup."""
    sandbox_server.sandbox.add_fault("latency", route="lookup", latency_seconds=SLOW_SECONDS)
    gate = make_gate()
    src = _input(files)

    def on_progress(event: ProgressEvent) -> None:
        if event.so_far.rows == 1:
            ctrl_c(times=2)

    with pytest.raises(KeyboardInterrupt):
        enrich_file(gate, src, files.out, concurrency=4, rate_per_second=1000, progress=on_progress)
    join_workers()
    written = {r["e164"] for r in files.by_row().values()}
    paid = set(served(sandbox_server))
    assert written < paid  # answered but never written: only the cache has them

    summary = enrich_file(gate, src, files.out, concurrency=4, rate_per_second=1000)
    rows = files.by_row()
    assert sorted(rows) == list(range(1, len(NUMBERS) + 1))
    assert {r["e164"] for r in rows.values() if r["facts"]["source"] == "cache"} == paid - written
    assert summary.cached == len(paid - written)
    assert served(sandbox_server) == dict.fromkeys(NUMBERS, 1)


def test_a_number_in_the_lookup_cache_is_not_looked_up_again_on_resume(sandbox_server, make_gate, files):
    """Rows missing from the output (a kill after their Lookups were paid) cost nothing when their answers are in
    the cache: the output and the cache both count as done."""
    gate = make_gate()
    src = _input(files)
    enrich_file(gate, src, files.out, concurrency=4, rate_per_second=1000)
    lines = files.out.read_bytes().splitlines(keepends=True)
    files.out.write_bytes(b"".join(lines[:5]))
    sandbox_server.sandbox.reset()

    summary = enrich_file(make_gate(stores=gate.stores), src, files.out, concurrency=4, rate_per_second=1000)
    assert summary.skipped == 5 and summary.looked_up == 0 and summary.cached == len(NUMBERS) - 5
    assert sandbox_server.sandbox.lookup_counts() == {}
    assert sorted(files.by_row()) == list(range(1, len(NUMBERS) + 1))


def test_a_keyboard_interrupt_raised_in_the_run_still_writes_the_rows_in_flight(sandbox_server, make_gate, files):
    """A KeyboardInterrupt not signalled to the run (another SIGINT handler, a callback) is handled the same way:
    nothing new starts, the rows under way are written whole, each once."""
    sandbox_server.sandbox.add_fault("latency", route="lookup", latency_seconds=SLOW_SECONDS)

    def on_progress(event: ProgressEvent) -> None:
        if event.so_far.rows == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        enrich_file(make_gate(), _input(files), files.out, concurrency=4, rate_per_second=1000, progress=on_progress)
    rows = files.by_row()
    assert {r["e164"] for r in rows.values()} == set(served(sandbox_server))
    assert 2 < len(rows) < len(NUMBERS)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, root_logging_restored: None) -> None:
    """The CLI's settings from defaults only, and the root logger given back after main() installed its own."""
    for name in ("GATEKEEPER_CONFIG", "GATEKEEPER_REDIS_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_enrich_command_exits_130_with_one_line_and_resumes(sandbox_server, files, monkeypatch, capsys, cli_env):
    """`gatekeeper enrich`, interrupted: exit 130, one line on stderr saying how to resume, the Lookups in flight
    in the output; the same command again finishes, each number looked up once (the cache is in the SQLite
    store, which outlives the process)."""
    sandbox_server.sandbox.add_fault("latency", route="lookup", latency_seconds=SLOW_SECONDS)
    monkeypatch.setenv("GATEKEEPER_SANDBOX_URL", sandbox_server.url)
    src = _input(files)
    command = ["enrich", str(src), "-o", str(files.out), "--concurrency", "4", "--rate", "1000"]

    def interrupt_after_the_first_record() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (files.out.exists() and files.out.read_bytes().count(b"\n")):
            time.sleep(0.01)
        ctrl_c()

    watcher = threading.Thread(target=interrupt_after_the_first_record)
    watcher.start()
    try:
        assert main(command) == 130
    finally:
        watcher.join()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gatekeeper: interrupted with ") and "run the same command again to resume" in err[-1]
    assert [line for line in err if line.startswith("gatekeeper:")] == [err[-1]]
    assert {json.loads(line)["e164"] for line in files.out.read_text().splitlines()} == set(served(sandbox_server))

    assert main(command) == 0
    assert sorted(files.by_row()) == list(range(1, len(NUMBERS) + 1))
    assert served(sandbox_server) == dict.fromkeys(NUMBERS, 1)
