"""Resuming enrich_file from its own output: skipped rows, partial lines, and outputs of another input."""

from __future__ import annotations

import json

import pytest

from gatekeeper.batch import BatchError, enrich_file

NUMBERS = [f"+1415555{2000 + i}" for i in range(24)]


def _input(files, numbers=NUMBERS):
    """The input CSV: a header and one number per row."""
    return files.csv("phone\n" + "".join(f"{n}\n" for n in numbers))


def test_resume_appends_only_missing_rows_after_lines_were_lost(sandbox_server, make_gate, files):
    """Deleted lines and a half-written last line are redone; done rows are skipped and cost no Lookup."""
    src = _input(files)
    enrich_file(make_gate(), src, files.out, concurrency=6, rate_per_second=1000)
    lines = files.out.read_bytes().splitlines(keepends=True)
    assert len(lines) == 24
    kept = [line for i, line in enumerate(lines) if i not in (2, 9, 15)]
    partial = kept.pop()[:25]  # a crash mid-write: no newline, not JSON
    files.out.write_bytes(b"".join(kept) + partial)
    missing = {json.loads(lines[i])["row"] for i in (2, 9, 15, 23)}
    sandbox_server.sandbox.reset()

    # A fresh gate (empty cache): any row not skipped would cost a Lookup.
    summary = enrich_file(make_gate(), src, files.out, concurrency=6, rate_per_second=1000)

    rows = files.by_row()
    assert sorted(rows) == list(range(1, 25))
    assert all(rows[n]["e164"] == NUMBERS[n - 1] and rows[n]["status"] == "ok" for n in rows)
    assert summary.skipped == 20 and summary.rows == 24 and summary.looked_up == 4
    assert set(sandbox_server.sandbox.lookup_counts()) == {NUMBERS[n - 1] for n in missing}
    assert sum(sandbox_server.sandbox.lookup_counts().values()) == 4
    assert files.out.read_bytes().endswith(b"\n")


def test_resume_of_a_complete_output_does_nothing(sandbox_server, make_gate, files):
    """Re-running a finished job writes nothing and makes no Lookup."""
    src = _input(files)
    enrich_file(make_gate(), src, files.out, rate_per_second=1000)
    before = files.out.read_bytes()
    sandbox_server.sandbox.reset()
    summary = enrich_file(make_gate(), src, files.out, rate_per_second=1000)
    assert files.out.read_bytes() == before
    assert summary.skipped == 24 and summary.looked_up == 0
    assert sandbox_server.sandbox.lookup_counts() == {}


def test_error_records_count_as_done(make_gate, files):
    """A malformed row's error record is kept on resume, not written again."""
    src = files.csv("phone,country\n+14155550100,US\n+14155550101,US,extra\n")
    enrich_file(make_gate(), src, files.out, rate_per_second=1000)
    summary = enrich_file(make_gate(), src, files.out, rate_per_second=1000)
    assert summary.skipped == 2 and len(files.records()) == 2


def test_a_changed_input_is_refused_before_any_work(sandbox_server, make_gate, files):
    """If a row's input differs from the one in the output, BatchError names the row; nothing is touched."""
    enrich_file(make_gate(), _input(files, NUMBERS[:10]), files.out, rate_per_second=1000)
    lines = files.out.read_bytes().splitlines(keepends=True)
    files.out.write_bytes(b"".join(line for line in lines if json.loads(line)["row"] != 7))  # row 7 still to do
    before = files.out.read_bytes()
    changed = [*NUMBERS[:10]]
    changed[3] = "+14155559999"
    sandbox_server.sandbox.reset()

    with pytest.raises(BatchError, match=r"row 4 of .* has changed"):
        enrich_file(make_gate(), _input(files, changed), files.out, rate_per_second=1000)
    assert files.out.read_bytes() == before
    assert sandbox_server.sandbox.lookup_counts() == {}


def test_a_shorter_input_is_refused(make_gate, files):
    """An output holding rows beyond the input's end was written for another input."""
    enrich_file(make_gate(), _input(files, NUMBERS[:6]), files.out, rate_per_second=1000)
    with pytest.raises(BatchError, match="only 4 rows"):
        enrich_file(make_gate(), _input(files, NUMBERS[:4]), files.out, rate_per_second=1000)


def test_rows_appended_to_the_input_are_enriched_on_resume(make_gate, files):
    """Growing the input and re-running enriches only the new rows."""
    enrich_file(make_gate(), _input(files, NUMBERS[:5]), files.out, rate_per_second=1000)
    summary = enrich_file(make_gate(), _input(files, NUMBERS[:8]), files.out, rate_per_second=1000)
    assert summary.skipped == 5 and summary.looked_up == 3
    assert sorted(files.by_row()) == list(range(1, 9))


@pytest.mark.parametrize(
    "garbage",
    [b"not json\n", b"[1, 2]\n", b'{"row": "3", "input": "x"}\n', b'{"row": 0, "input": "x"}\n', b"\xff\xfe\n"],
)
def test_an_output_that_is_not_ours_is_refused(make_gate, files, garbage):
    """A complete line that is not an enrich record is a BatchError naming the line, not silently dropped."""
    src = _input(files, NUMBERS[:3])
    enrich_file(make_gate(), src, files.out, rate_per_second=1000)
    files.out.write_bytes(files.out.read_bytes() + garbage)
    with pytest.raises(BatchError, match="line 4 of"):
        enrich_file(make_gate(), src, files.out, rate_per_second=1000)


def test_the_same_row_twice_with_different_inputs_is_refused(make_gate, files):
    """An output contradicting itself cannot be resumed from."""
    src = _input(files, NUMBERS[:3])
    files.out.write_text(json.dumps({"row": 1, "input": "a"}) + "\n" + json.dumps({"row": 1, "input": "b"}) + "\n")
    with pytest.raises(BatchError, match="twice"):
        enrich_file(make_gate(), src, files.out, rate_per_second=1000)


def test_a_partial_line_alone_is_rewritten(make_gate, files):
    """An output holding only the start of its first record is cut back and written whole."""
    src = _input(files, NUMBERS[:2])
    files.out.write_bytes(b'{"row": 1, "input": "+14155552000", "e16')
    summary = enrich_file(make_gate(), src, files.out, concurrency=1, rate_per_second=1000)
    assert summary.skipped == 0 and sorted(files.by_row()) == [1, 2]
