"""enrich_file end to end through the real twilio SDK and the sandbox: records, statuses, errors, progress."""

from __future__ import annotations

import gc
import json
from dataclasses import replace
from unittest.mock import ANY

import pytest

from gatekeeper.batch import BatchError, EnrichSummary, ProgressEvent, enrich_file
from gatekeeper.errors import ConfigError, GatekeeperError
from gatekeeper.policy import Policy
from gatekeeper.settings import Settings

MOBILE, LANDLINE, VOIP = "+14155550100", "+14155550101", "+14155550102"
LOOKUP_INVALID = "+15005550001"  # valid to phonenumbers, `valid: false` from Lookup
RECORD_KEYS = ["row", "input", "e164", "status", "action", "reasons", "twilio_code", "facts", "error"]
FACT_KEYS = {"country_code", "line_type", "carrier_name", "mcc", "mnc", "caller_name", "source", "fetched_at", "valid"}


def test_mixed_numbers_get_the_right_statuses_and_one_lookup_per_distinct_number(sandbox_server, make_gate, files):
    """Mobile, landline, invalid, foreign and duplicate rows: right status each, one Lookup per distinct number."""
    gate = make_gate(policy={"notify": Policy(deny_countries=frozenset({"GG"}))})
    src = files.csv(
        "name,Phone,country\n"
        f"ann,{MOBILE},\n"
        "bob,(415) 555-0101,US\n"  # national format with a row hint: the landline
        f"cy,{VOIP},\n"
        "dee,not a number,\n"
        "eve,+1 415 555,\n"
        f"fay,{MOBILE},\n"  # duplicate
        "gus,415.555.0100,US\n"  # the same mobile, written differently
        f"hal,{LOOKUP_INVALID},\n"
        "ivy,+447911123456,\n"  # Guernsey: country denied locally
        f"jon,{LANDLINE},\n"
    )
    summary = enrich_file(gate, src, files.out, concurrency=4, rate_per_second=1000)
    rows = files.by_row()

    assert [list(r) for r in rows.values()] == [RECORD_KEYS] * 10
    status = {n: rows[n]["status"] for n in rows}
    assert status == {
        1: "ok", 2: "ok", 3: "ok", 4: "refused", 5: "refused", 6: "ok", 7: "ok", 8: "refused", 9: "refused", 10: "ok"
    }  # fmt: skip
    assert rows[1]["e164"] == MOBILE and rows[1]["action"] == "sms" and rows[1]["facts"]["line_type"] == "mobile"
    assert set(rows[1]["facts"]) == FACT_KEYS and rows[1]["facts"]["carrier_name"] == "T-Mobile USA, Inc."
    assert rows[2]["input"] == "(415) 555-0101" and rows[2]["e164"] == LANDLINE and rows[2]["action"] == "voice"
    assert rows[4]["facts"] is None and rows[4]["twilio_code"] == 21211 and rows[4]["e164"] is None
    assert rows[8]["reasons"] == ["lookup:invalid"] and rows[8]["facts"]["valid"] is False
    assert any(r.startswith("country:denied") for r in rows[9]["reasons"]) and rows[9]["facts"] is None
    assert all(r["error"] is None for r in rows.values())

    counts = sandbox_server.sandbox.lookup_counts()
    assert counts == {MOBILE: 1, LANDLINE: 1, VOIP: 1, LOOKUP_INVALID: 1}
    sources = sorted(r["facts"]["source"] for r in rows.values() if r["facts"])
    assert sources == ["cache"] * 3 + ["lookup"] * 4
    assert summary == EnrichSummary(
        rows=10,
        ok=6,
        looked_up=4,
        cached=3,
        refused=4,
        errors=0,
        skipped=0,
        elapsed_seconds=summary.elapsed_seconds,
        achieved_rate=summary.achieved_rate,
    )
    assert summary.achieved_rate == pytest.approx(4 / summary.elapsed_seconds)


def test_malformed_rows_become_error_records_and_the_run_goes_on(sandbox_server, make_gate, files):
    """Wrong field counts, bytes that are not UTF-8, empty numbers and bad country hints are error records."""
    src = files.csv(
        b"phone,country\n"
        b"+14155550100,US\n"
        b"+14155550101,US,extra\n"
        b"+1415555\xff0102,US\n"
        b",US\n"
        b"+14155550103,USA\n"
        b"\n"  # blank lines are not rows
        b"+14155550105\n"
        b'"' + b"9" * 200_000 + b'",US\n'  # past csv's field size limit
        b"+14155550106,US\n"
    )
    summary = enrich_file(make_gate(), src, files.out, rate_per_second=1000)
    rows = files.by_row()

    assert sorted(rows) == list(range(1, 9))
    assert [rows[n]["status"] for n in range(1, 9)] == ["ok"] + ["error"] * 6 + ["ok"]
    assert "3 fields" in rows[2]["error"] and rows[2]["input"] == "+14155550101"
    assert "UTF-8" in rows[3]["error"] and rows[3]["input"] == "+1415555\ufffd0102"
    assert "empty number" in rows[4]["error"]
    assert "two-letter" in rows[5]["error"]
    assert "1 fields" in rows[6]["error"]
    assert "unreadable CSV row" in rows[7]["error"] and rows[7]["input"] == ""
    assert rows[8]["e164"] == "+14155550106"  # the reader goes on at the next line
    for n in range(2, 8):
        assert rows[n]["action"] is None and rows[n]["facts"] is None and rows[n]["reasons"] == []
    assert summary.errors == 6 and summary.ok == 2
    assert sandbox_server.sandbox.lookup_counts() == {"+14155550100": 1, "+14155550106": 1}


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (None, {}, "does not exist"),
        ("", {}, "is empty"),
        ("\n\n", {}, "is empty"),
        ("phone\n+14155550100\n", {"number_column": "mobile"}, "no column 'mobile'"),
        ("+14155550100\n+14155550101\n", {}, "looks like a phone number"),
        (",country\n+14155550100,US\n", {}, "no usable number column"),
        (b"\xff\xfe\x00p\x00h\x00o\x00n\x00e\n", {}, "not UTF-8"),
        ("phone\n", {"rate_per_second": 0}, "rate must be"),
        ("phone\n", {"concurrency": 0}, "concurrency must be"),
        ("phone\n", {"fields": ("line_type_intelligence", "line_type")}, "unknown Lookup field"),
        ("phone\n", {"purpose": "marketing"}, "purpose must be"),
        ("phone\n", {"country": "USA"}, "two-letter"),
    ],
)
def test_unusable_input_raises_batch_error_before_any_work(sandbox_server, make_gate, files, content, kwargs, message):
    """A missing, empty or header-less input, a bad column or a bad option is a BatchError saying what to fix."""
    src = files.root / "missing.csv" if content is None else files.csv(content)
    with pytest.raises(BatchError, match=message) as caught:
        enrich_file(make_gate(), src, files.out, **kwargs)
    assert isinstance(caught.value, GatekeeperError)
    assert not files.out.exists()
    assert sandbox_server.sandbox.lookup_counts() == {}


def test_paths_that_cannot_work_raise_batch_error(make_gate, files):
    """A directory as input or output, a missing output folder, or output == input is a BatchError."""
    src = files.csv("phone\n+14155550100\n")
    gate = make_gate()
    with pytest.raises(BatchError, match="is a directory"):
        enrich_file(gate, files.root, files.out)
    with pytest.raises(BatchError, match="is a directory"):
        enrich_file(gate, src, files.root)
    with pytest.raises(BatchError, match="does not exist"):
        enrich_file(gate, src, files.root / "nope" / "out.jsonl")
    with pytest.raises(BatchError, match="is the input file"):
        enrich_file(gate, src, src)


def test_number_column_is_found_by_name_or_given(make_gate, files):
    """`MSISDN` is auto-detected; `number_column` picks another; without either the first column is used."""
    gate = make_gate()
    src = files.csv("id,MSISDN,alt\n7,+14155550100,+14155550101\n")
    enrich_file(gate, src, files.out, rate_per_second=1000)
    enrich_file(gate, src, files.root / "alt.jsonl", number_column="ALT", rate_per_second=1000)
    first = files.csv("mobile,name\n+14155550102,ann\n", name="first.csv")
    enrich_file(gate, first, files.root / "first.jsonl", rate_per_second=1000)
    assert files.records()[0]["e164"] == "+14155550100"
    assert files.records(files.root / "alt.jsonl")[0]["e164"] == "+14155550101"
    assert files.records(files.root / "first.jsonl")[0]["e164"] == "+14155550102"


def test_semicolon_separated_files_with_a_bom_are_read(make_gate, files):
    """A spreadsheet export with a byte-order mark and ";" between fields is read like a comma-separated one."""
    src = files.csv("\ufeffName;Phone;Country\r\nann;0 79 11 12 34 56;GG\r\nbob;(415) 555-0100;US\r\n")
    enrich_file(make_gate(), src, files.out, rate_per_second=1000)
    rows = files.by_row()
    assert rows[1]["e164"] == "+447911123456" and rows[2]["e164"] == "+14155550100"


def test_country_option_is_the_hint_for_national_numbers(make_gate, files):
    """`country` applies to rows without their own hint; a row's `country` value wins."""
    src = files.csv("phone,country\n07911 123456,\n(415) 555-0100,US\n")
    enrich_file(make_gate(), src, files.out, country="gg", rate_per_second=1000)
    rows = files.by_row()
    assert rows[1]["e164"] == "+447911123456" and rows[2]["e164"] == "+14155550100"


def test_fields_override_the_policy_and_reach_lookup(sandbox_server, make_gate, files):
    """`fields` asks Lookup for exactly those packages and fills their facts; the caller's gate is unchanged."""
    gate = make_gate()
    src = files.csv("phone\n+14155550100\n")
    enrich_file(gate, src, files.out, fields=("caller_name", "line_type_intelligence"), rate_per_second=1000)
    (request,) = sandbox_server.sandbox.requests("lookup")
    assert request.query["Fields"] == ["caller_name,line_type_intelligence"]
    assert files.records()[0]["facts"]["caller_name"] == "ALEX SANDBOX"
    assert gate.policies["notify"].fields == ("line_type_intelligence",)


def test_lookup_failures_follow_the_policy_and_count_as_lookups(sandbox_server, make_gate, files):
    """A Lookup that keeps failing is decided on local facts (notify) with the reason, not an error record."""
    sandbox_server.sandbox.add_fault("error", route="lookup", status=503, code=20503)
    gate = make_gate(settings=Settings(lookup={"max_retries": 0}))
    src = files.csv("phone\n+14155550100\n")
    summary = enrich_file(gate, src, files.out, rate_per_second=1000)
    (record,) = files.records()
    assert record["status"] == "ok" and record["facts"]["source"] == "local"
    assert "lookup:unavailable:http_503" in record["reasons"]
    assert summary.looked_up == 1 and summary.cached == 0


def test_progress_reports_every_row_with_running_counts(make_gate, files):
    """progress() is called once per row, with the total known up front and counts matching the summary."""
    src = files.csv("phone\n+14155550100\nnope\n+14155550100\n+14155550101,extra\n")
    events: list[ProgressEvent] = []
    summary = enrich_file(make_gate(), src, files.out, progress=events.append, rate_per_second=1000)
    assert [e.so_far.rows for e in events] == [1, 2, 3, 4]
    assert {e.total for e in events} == {4}
    assert sorted(e.row for e in events) == [1, 2, 3, 4]
    assert sorted(e.status for e in events) == ["error", "ok", "ok", "refused"]
    assert events[-1].so_far == replace(summary, elapsed_seconds=events[-1].so_far.elapsed_seconds, achieved_rate=ANY)


def test_the_run_leaves_the_heap_held_before_it_out_of_full_collections(make_gate, files):
    """During a run, what the process held before it is frozen (a full collection stops every thread, and a Lookup
    that late moves every later permit); afterwards it is unfrozen, after a failed run too."""
    assert gc.get_freeze_count() == 0, "an earlier test left the heap frozen"
    src = files.csv("phone\n+14155550100\n+14155550101\n")
    during: list[int] = []
    enrich_file(make_gate(), src, files.out, progress=lambda _: during.append(gc.get_freeze_count()))
    assert len(during) == 2 and min(during) > 0
    assert gc.get_freeze_count() == 0

    def fail(_: ProgressEvent) -> None:
        raise KeyboardInterrupt

    again = files.csv("phone\n+14155550102\n", "again.csv")
    with pytest.raises(KeyboardInterrupt):
        enrich_file(make_gate(), again, again.with_suffix(".jsonl"), progress=fail)
    assert gc.get_freeze_count() == 0


def test_a_process_that_froze_its_own_heap_keeps_it_frozen(make_gate, files):
    """A process that froze its heap itself (a pre-fork server) finds it as it left it after a run."""
    gc.freeze()
    try:
        enrich_file(make_gate(), files.csv("phone\n+14155550100\n"), files.out)
        assert gc.get_freeze_count() > 0  # frozen objects freed since leave the count; an unfreeze empties it
    finally:
        gc.unfreeze()


def test_an_interrupted_run_keeps_every_record_it_wrote(make_gate, files):
    """Records are written whole as they come: a run stopped by Ctrl-C leaves complete JSON lines behind, the
    rows that were under way included, each once (tests/batch/test_interrupt.py has the rest)."""
    src = files.csv("phone\n" + "".join(f"+1415555{2000 + i}\n" for i in range(30)))

    def interrupt(event: ProgressEvent) -> None:
        if event.so_far.rows == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        enrich_file(make_gate(), src, files.out, progress=interrupt, concurrency=3, rate_per_second=1000)
    raw = files.out.read_bytes()
    lines = raw.decode("utf-8").splitlines()
    assert raw.endswith(b"\n") and 5 <= len(lines) <= 5 + 2 * 3
    assert all(json.loads(line)["status"] == "ok" for line in lines)
    assert len(files.by_row()) == len(lines)


def test_logs_never_show_a_full_number(sandbox_server, make_gate, files, caplog):
    """Warnings about rows mask the number; the output file is the only place full numbers go."""
    sandbox_server.sandbox.add_fault("error", route="lookup", status=500, code=20500)
    src = files.csv("phone\n+14155550100\n")
    with caplog.at_level("DEBUG", logger="gatekeeper"):
        enrich_file(make_gate(), src, files.out, rate_per_second=1000)
    assert "+14155550100" not in caplog.text
    assert "+1415555" in caplog.text  # the masked form
    assert files.records()[0]["e164"] == "+14155550100"


def test_lookup_refusing_the_credentials_stops_the_run(sandbox_server, make_gate, files):
    """A 401 from Lookup is a configuration error: the run stops with ConfigError instead of failing every row."""
    sandbox_server.sandbox.add_fault("error", route="lookup", status=401, code=20003)
    src = files.csv("phone\n+14155550100\n+14155550102\n")
    with pytest.raises(ConfigError, match="credentials"):
        enrich_file(make_gate(), src, files.out, rate_per_second=1000, concurrency=1)
    counts = sandbox_server.sandbox.lookup_counts()
    assert set(counts.values()) == {1}  # never retried; at most the rows already under way were asked


def test_output_lines_are_one_json_object_each(make_gate, files):
    """Every output line parses alone (no pretty printing, no partial lines); non-ASCII input is kept."""
    src = files.csv("phone\n+1 415 555 0100 ☎\n")
    enrich_file(make_gate(), src, files.out, rate_per_second=1000)
    raw = files.out.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert json.loads(raw)["input"] == "+1 415 555 0100 ☎"
