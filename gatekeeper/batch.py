"""Resumable, rate-limited enrichment of a CSV of phone numbers: the engine behind ``gatekeeper enrich``.

Each data row of the CSV becomes one JSON Lines record in the output::

    {"row": 3, "input": "(415) 555-0100", "e164": "+14155550100", "status": "ok", "action": "sms",
     "reasons": [], "twilio_code": null,
     "facts": {"country_code": "US", "line_type": "mobile", "carrier_name": "T-Mobile USA, Inc.", "mcc": "310",
               "mnc": "260", "caller_name": null, "source": "lookup", "fetched_at": 1800000000.0, "valid": true},
     "error": null}

``status`` is ``ok``, ``refused`` (the gate's decision is to refuse) or ``error`` (the row could not be read or
decided; ``error`` says why, and ``action``, ``e164`` and ``facts`` are null). ``facts`` is null when the gate
refused before enrichment (not a number, country, opt-out). ``row`` counts data rows from 1, header and blank
lines excluded. The output is the user's data, so it holds full numbers; logs only ever show masked ones.

* **Every row goes through** :meth:`Gatekeeper.decide`, so the gate's normalizer, suppression, policy and
  Lookup cache apply exactly as for a live send. Duplicate numbers cost one Lookup: a row whose number is
  being decided by another row of the run waits for that answer and reads it from the cache.
* **Rate**: every Lookup request (retries included) first reserves one permit from the gate's
  ``RateLimiter`` (bucket ``"lookup"``, GCRA) and sleeps its wait: the permit hangs on the LookupService
  itself, so exactly the requests that reach Twilio are paced. In Redis the bucket lives on the server's
  clock, so every process and host using the same store and prefix shares one budget (give them the same
  rate). Burst is 1: permits are spaced 1/rate apart, so no 1-second window holds more than ``rate + 1``.
* **Resume**: rows already in the output (same row number and same input value) are skipped, missing rows
  appended. A partial last line left by a crash is cut off and its row done again. An output written for a
  different input raises :class:`BatchError` before any work.
* **Bounded**: at most ``concurrency`` rows are being decided at once and at most ``2 * concurrency`` are
  pending; the CSV is streamed (read once to count and check rows, once to work). The resume index costs
  8 bytes per input row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import re
import threading
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import requests
from twilio.base.exceptions import TwilioException

from gatekeeper.errors import ConfigError, GatekeeperError, StoreUnavailable
from gatekeeper.gate import Gatekeeper
from gatekeeper.models import LOOKUP_FIELDS, PURPOSES, Decision, Phone, Purpose
from gatekeeper.phone import mask, normalize
from gatekeeper.policy import Policy

log = logging.getLogger("gatekeeper.batch")

#: Header names taken as the number column when none is given, in this order (case-insensitive).
NUMBER_COLUMNS: tuple[str, ...] = ("phone", "phone_number", "number", "to", "msisdn")
#: The PhoneFacts written under ``facts`` in each record.
FACTS = ("country_code", "line_type", "carrier_name", "mcc", "mnc", "caller_name", "source", "fetched_at", "valid")
#: An optional column with a per-row ISO 3166 alpha-2 hint for numbers written in national format.
COUNTRY_COLUMN = "country"
#: The rate limiter bucket; every process enriching against one store shares it.
RATE_BUCKET = "lookup"
#: GCRA burst. 1 spaces permits evenly: a batch has no idle time to "save up", and a burst would only
#: make several processes sharing a bucket collide at Twilio's own per-second limit.
BURST = 1
MAX_CONCURRENCY = 256

RowStatus = Literal["ok", "refused", "error", "skipped"]

_WINDOW = 2  # rows pending per worker: enough to keep workers busy, small enough to bound memory
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by errors="surrogateescape"
_COUNTRY = re.compile("[A-Za-z]{2}")


class BatchError(GatekeeperError):
    """The batch cannot start or go on: a missing or unreadable input, an output that does not match it…

    The message says what to fix. Raised before any Lookup is made, except when the rate limiter's store
    becomes unavailable mid-run (the run stops rather than exceed the budget; re-run to resume).
    """


@dataclass(frozen=True)
class EnrichSummary:
    """What a run did, or has done so far. ``rows`` counts rows handled, skipped ones included (at the end:
    every data row); ``looked_up`` counts rows answered by a Lookup request this run (failed requests too);
    ``achieved_rate`` is looked_up per second of ``elapsed_seconds``."""

    rows: int
    ok: int
    looked_up: int
    cached: int
    refused: int
    errors: int
    skipped: int
    elapsed_seconds: float
    achieved_rate: float


@dataclass(frozen=True)
class ProgressEvent:
    """Sent after each row is handled: which row, its status, the input's data rows, and the counts so far."""

    row: int
    status: RowStatus
    total: int
    so_far: EnrichSummary


def enrich_file(
    gate: Gatekeeper,
    input_path: str | PathLike[str],
    output_path: str | PathLike[str],
    *,
    rate_per_second: float = 50,
    concurrency: int = 20,
    fields: Sequence[str] | None = None,
    purpose: Purpose = "notify",
    country: str | None = None,
    number_column: str | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> EnrichSummary:
    """Decide every number in the CSV at ``input_path`` and append one JSON record per row to ``output_path``.

    ``fields`` overrides the purpose's Lookup fields; ``country`` is the hint for rows without a ``country``
    column value (else the gate's default); ``number_column`` names the number column (else auto-detected).
    ``clock``/``sleep`` pace the rate limit and default to the gate's. Re-running with the same output
    resumes. Raises :class:`BatchError` for what the caller must fix; a bad row is an error record instead.
    """
    src, out = Path(input_path), Path(output_path)
    _check_paths(src, out)
    if not (rate_per_second > 0 and math.isfinite(rate_per_second)):
        raise BatchError(f"rate must be a positive number of Lookups per second, not {rate_per_second!r}")
    if isinstance(concurrency, bool) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise BatchError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, not {concurrency!r}")
    if country is not None and not _COUNTRY.fullmatch(country):
        raise BatchError(f"country must be a two-letter ISO 3166 code such as 'US', not {country!r}")
    clock = clock or gate.clock
    view = _gate_for(gate, purpose, fields, _Permits(gate, rate_per_second, clock, sleep or gate.sleep))
    with _reading(src, number_column) as (layout, rows):  # the header is checked before the output is read
        index, complete_bytes = _read_output(out, max_row=src.stat().st_size)
        total = _count_rows(rows, index, src, out)
    _cut_partial_tail(out, complete_bytes)
    log.info("enriching %s (%d rows, numbers in column %r) into %s", src, total, layout.column, out)

    enricher = _Enricher(view, purpose, country.upper() if country else None)
    counts: Counter[str] = Counter()
    started = clock()
    try:
        sink = out.open("a", encoding="utf-8", newline="\n")
    except OSError as exc:
        raise BatchError(f"cannot write {out}: {exc.strerror}; check the path and its permissions") from exc
    with sink, _reading(src, number_column) as (_, rows):

        def emit(row: _Row, status: RowStatus, record: dict[str, Any] | None) -> None:
            if record is not None:
                # One write per record, flushed: an interrupted run keeps every record it wrote, and a
                # crash mid-write leaves at most one partial last line, which the next run cuts off.
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
            _count(counts, status, record)
            if progress is not None:
                progress(ProgressEvent(row.n, status, total, _summary(counts, clock() - started)))

        _run(rows, index, enricher, concurrency, emit)
    elapsed = max(0.0, clock() - started)
    summary = _summary(counts, elapsed)
    log.info("enrich finished: %s", summary)
    return summary


# -- the run ---------------------------------------------------------------------------------
def _run(rows: Iterator[_Row], index: _DoneIndex, enricher: _Enricher, concurrency: int, emit: _Emit) -> None:
    """Feed rows to ``concurrency`` workers; only this thread writes, so records never interleave."""
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="gatekeeper-enrich")
    pending: set[Future[_Result]] = set()

    def emit_all(futures: set[Future[_Result]]) -> BaseException | None:
        """Write every result among ``futures``; return the first failure instead of losing the others."""
        failure: BaseException | None = None
        for future in futures:
            error = None if future.cancelled() else future.exception()
            if error is not None:
                failure = failure or error
            elif not future.cancelled():
                result = future.result()
                emit(result.row, *_record(result))
        return failure

    def settle(keep: int) -> None:
        nonlocal pending
        while len(pending) > keep:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            failure = emit_all(finished)
            if failure is not None:
                # A fatal error (the rate limiter is gone): start nothing new, but keep the records of rows
                # already running, whose Lookups are paid for.
                for future in pending:
                    future.cancel()
                emit_all(wait(pending).done)
                pending = set()
                raise failure

    try:
        for row in rows:
            if index.holds(row.n, row.input):
                emit(row, "skipped", None)
            elif row.problem is not None:
                emit(row, *_record(_Result(row, None, None, row.problem)))
            else:
                settle(keep=_WINDOW * concurrency - 1)
                pending.add(pool.submit(enricher, row))
        settle(keep=0)
    except BaseException:
        # Ctrl-C or a fatal error: stop queued rows now; rows already written stay, and a re-run resumes.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


_Emit = Callable[["_Row", RowStatus, "dict[str, Any] | None"], None]


@dataclass(frozen=True)
class _Result:
    row: _Row
    phone: Phone | None
    decision: Decision | None
    error: str | None = None


class _Enricher:
    """Decides one row, from worker threads."""

    def __init__(self, gate: Gatekeeper, purpose: Purpose, country: str | None) -> None:
        self.gate = gate
        self.purpose = purpose
        self.country = country
        self._inflight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def __call__(self, row: _Row) -> _Result:
        country = row.country or self.country
        phone = normalize(row.input, country or self.gate.default_country)  # an LRU hit for the gate's own parse
        # A number another row of this run is deciding waits for that row and then reads the cache: it
        # must not sit on the Lookup's fill lock, whose wait is sized for a request, not a permit queue.
        e164, mine = phone.e164, None
        if e164 is not None:
            with self._lock:
                running = self._inflight.get(e164)
                if running is None:
                    mine = self._inflight[e164] = threading.Event()
            if running is not None:
                running.wait()
        try:
            return self._decide(row, phone, country)
        finally:
            if e164 is not None and mine is not None:
                with self._lock:
                    del self._inflight[e164]
                mine.set()

    def _decide(self, row: _Row, phone: Phone, country: str | None) -> _Result:
        try:
            decision = self.gate.decide(row.input, self.purpose, country)
        except (BatchError, ConfigError):
            raise  # the rate limiter is gone, or Lookup refuses the credentials: every row would fail; stop
        except (GatekeeperError, TwilioException, requests.RequestException) as exc:
            log.warning("row %d (%s) could not be decided: %s", row.n, mask(phone.e164), type(exc).__name__)
            return _Result(row, phone, None, f"{type(exc).__name__}: {exc}")
        return _Result(row, phone, decision)


class _Permits:
    """One rate-limit permit per Lookup request, reserved from the gate's (possibly shared) limiter."""

    def __init__(
        self, gate: Gatekeeper, rate_per_second: float, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.limiter = gate.stores.rate_limits
        self.rate_per_second = rate_per_second
        self.clock = clock
        self.sleep = sleep

    def __call__(self) -> None:
        try:
            wait_seconds = self.limiter.reserve(
                RATE_BUCKET, rate_per_second=self.rate_per_second, burst=BURST, now=self.clock()
            )
        except StoreUnavailable as exc:
            # Fail safe: without the shared limiter the budget cannot be kept, so stop rather than exceed it.
            raise BatchError(
                f"the rate limiter's store is unavailable ({exc}); stopped so the Lookup budget is not exceeded. "
                "Re-run the same command to resume"
            ) from exc
        if wait_seconds > 0:
            self.sleep(wait_seconds)


def _gate_for(gate: Gatekeeper, purpose: str, fields: Sequence[str] | None, permits: _Permits) -> Gatekeeper:
    """A view of ``gate`` whose Lookups take permits, with ``fields`` for ``purpose`` when given.

    The derived gate shares the client, the stores and the Lookup cache and its single-flight lock,
    leaving the caller's gate untouched.
    """
    if purpose not in PURPOSES:
        raise BatchError(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
    policy: dict[str, Policy] | None = None
    if fields is not None:
        wanted = [f.strip() for f in (fields.split(",") if isinstance(fields, str) else fields) if f.strip()]
        unknown = sorted(set(wanted) - LOOKUP_FIELDS)
        if unknown:
            raise BatchError(f"unknown Lookup field(s) {unknown}; use any of {', '.join(sorted(LOOKUP_FIELDS))}")
        policy = {purpose: replace(gate.policies[purpose], fields=tuple(dict.fromkeys(wanted)))}
    return gate.derive(policy=policy, before_lookup=permits)


# -- records and counts ----------------------------------------------------------------------
def _record(result: _Result) -> tuple[RowStatus, dict[str, Any]]:
    decision = result.decision
    facts = decision.facts if decision is not None else None
    status: RowStatus = "error" if decision is None else "refused" if decision.refused else "ok"
    record = {
        "row": result.row.n,
        "input": result.row.input,
        "e164": result.phone.e164 if result.phone is not None and decision is not None else None,
        "status": status,
        "action": decision.action.value if decision is not None else None,
        "reasons": list(decision.reasons) if decision is not None else [],
        "twilio_code": decision.twilio_code if decision is not None else None,
        "facts": None if facts is None else {name: getattr(facts, name) for name in FACTS},
        "error": result.error,
    }
    return status, record


def _count(counts: Counter[str], status: RowStatus, record: dict[str, Any] | None) -> None:
    """Count one handled row: ``rows``, its status, and where its facts came from (``lookup``/``cache``)."""
    counts.update(("rows", status))
    facts = record["facts"] if record is not None else None
    if facts is not None and facts["source"] != "local":
        counts[facts["source"]] += 1
    elif record is not None and any(r.startswith("lookup:unavailable") for r in record["reasons"]):
        counts["lookup"] += 1  # asked and failed: the request still counted against Twilio


def _summary(counts: Counter[str], elapsed: float) -> EnrichSummary:
    return EnrichSummary(
        rows=counts["rows"],
        ok=counts["ok"],
        looked_up=counts["lookup"],
        cached=counts["cache"],
        refused=counts["refused"],
        errors=counts["error"],
        skipped=counts["skipped"],
        elapsed_seconds=elapsed,
        achieved_rate=counts["lookup"] / elapsed if elapsed > 0 else 0.0,
    )


# -- reading the input -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    width: int
    number: int
    country: int | None
    column: str


@dataclass(frozen=True)
class _Row:
    n: int
    input: str  # the number cell as written (bytes that were not UTF-8 shown as U+FFFD); with n, the resume key
    country: str | None = None
    problem: str | None = None  # why the row cannot be decided; it becomes an error record


def _check_paths(src: Path, out: Path) -> None:
    if not src.exists():
        raise BatchError(f"input file {src} does not exist; pass the path of a CSV file with a header line")
    if src.is_dir():
        raise BatchError(f"{src} is a directory; pass the path of a CSV file")
    if out.is_dir():
        raise BatchError(f"output {out} is a directory; pass a file path such as {out / 'enriched.jsonl'}")
    if not out.parent.is_dir():
        raise BatchError(f"the folder of output {out} does not exist; create it or choose another path")
    if out.exists() and src.samefile(out):
        raise BatchError(f"the output {out} is the input file; choose another output path")


@contextmanager
def _reading(src: Path, number_column: str | None) -> Iterator[tuple[_Layout, Iterator[_Row]]]:
    """The header's layout and the data rows, streamed."""
    try:
        # surrogateescape keeps bytes that are not UTF-8, so one bad row becomes an error record, not a crash.
        handle = src.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise BatchError(f"cannot read {src}: {exc.strerror}; check the path and its permissions") from exc
    with handle:
        # Spreadsheets in many locales export ";"-separated "CSV": use the delimiter the header line has most of.
        first = next((line for line in iter(lambda: handle.readline(65_536), "") if line.strip()), "")
        handle.seek(0)
        reader = csv.reader(handle, delimiter=max(",;\t", key=first.count) if first.strip() else ",")
        layout = _read_header(reader, src, number_column)
        yield layout, _rows(reader, layout)


def _read_header(reader: Iterator[list[str]], src: Path, number_column: str | None) -> _Layout:
    try:
        header = next((cells for cells in reader if any(c.strip() for c in cells)), None)
    except csv.Error as exc:
        raise BatchError(f"the header line of {src} is not readable CSV ({exc})") from exc
    if header is None:
        raise BatchError(f"{src} is empty; it needs a header line (e.g. 'phone') and then one number per row")
    if any(_UNDECODABLE.search(c) for c in header):
        raise BatchError(f"the header line of {src} is not UTF-8 text; save the file as UTF-8 CSV")
    names = [c.strip().lower() for c in header]
    if number_column is not None:
        if number_column.strip().lower() not in names:
            shown = ", ".join(repr(c.strip()) for c in header)
            raise BatchError(f"{src} has no column {number_column!r}; its columns are {shown}")
        number = names.index(number_column.strip().lower())
    else:
        number = next((names.index(n) for n in NUMBER_COLUMNS if n in names), 0)
        first = header[0]
        if number == 0 and sum(ch.isdigit() for ch in first) >= 5 and not any(ch.isalpha() for ch in first):
            raise BatchError(
                f"the first line of {src} looks like a phone number, not a header; add a header line such as 'phone'"
            )
        if not names[number]:
            raise BatchError(
                f"{src} has no usable number column: none is named {', '.join(NUMBER_COLUMNS)} and the first "
                "has no name; name it in the header or pass the column name"
            )
    country = names.index(COUNTRY_COLUMN) if COUNTRY_COLUMN in names else None
    return _Layout(len(header), number, None if country == number else country, header[number].strip())


def _rows(reader: Iterator[list[str]], layout: _Layout) -> Iterator[_Row]:
    n = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field past csv's size limit; the reader goes on at the next line
            n += 1
            yield _Row(n, "", problem=f"unreadable CSV row: {exc}")
            continue
        if any(c.strip() for c in cells):  # blank lines are not rows
            n += 1
            yield _parse_row(n, cells, layout)


def _parse_row(n: int, cells: list[str], layout: _Layout) -> _Row:
    raw = cells[layout.number] if layout.number < len(cells) else ""
    text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if any(_UNDECODABLE.search(c) for c in cells):
        return _Row(n, text, problem="the row is not UTF-8 text (undecodable bytes); save the file as UTF-8")
    if len(cells) != layout.width:
        return _Row(n, text, problem=f"the row has {len(cells)} fields but the header has {layout.width}")
    if not text.strip():
        return _Row(n, text, problem=f"empty number in column {layout.column!r}")
    hint = cells[layout.country].strip() if layout.country is not None else ""
    if hint and not _COUNTRY.fullmatch(hint):
        return _Row(n, text, problem=f"country {hint!r} is not a two-letter ISO 3166 code such as 'US'")
    return _Row(n, text, hint.upper() or None)


def _count_rows(rows: Iterator[_Row], index: _DoneIndex, src: Path, out: Path) -> int:
    """The input's data rows; checks on the way that every row already in ``out`` was written for this input."""
    total = 0
    for row in rows:
        total = row.n
        if index.count and index.conflicts(row.n, row.input):
            raise BatchError(
                f"{out} was written for a different input: row {row.n} of {src} has changed since. "
                f"Write to a new output file, or delete {out} to start over"
            )
    if index.max_row > total:
        raise BatchError(
            f"{out} holds row {index.max_row} but {src} has only {total} rows, so it was written for a different "
            f"input. Write to a new output file, or delete {out} to start over"
        )
    return total


# -- resuming from the output ----------------------------------------------------------------
class _DoneIndex:
    """Rows already in the output: row number → a 56-bit digest of its input (+1, so 0 means absent)."""

    def __init__(self) -> None:
        self._digests = array("Q")  # 8 bytes a row, not a dict entry: resuming a 10M-row file stays cheap
        self.count = 0
        self.max_row = 0

    @staticmethod
    def _digest(text: str) -> int:
        raw = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=7).digest()
        return int.from_bytes(raw, "big") + 1

    def _at(self, row: int) -> int:
        return self._digests[row] if row < len(self._digests) else 0

    def add(self, row: int, text: str) -> bool:
        """Remember ``row``; False if it is already there with another input."""
        digest, size = self._digest(text), len(self._digests)
        if row >= size:
            self._digests.frombytes(bytes(8 * (max(row + 1, 2 * size) - size)))
        if self._digests[row]:
            return self._digests[row] == digest
        self._digests[row] = digest
        self.count += 1
        self.max_row = max(self.max_row, row)
        return True

    def holds(self, row: int, text: str) -> bool:
        return self._at(row) == self._digest(text) if self.count else False

    def conflicts(self, row: int, text: str) -> bool:
        stored = self._at(row)
        return stored != 0 and stored != self._digest(text)


def _read_output(out: Path, *, max_row: int) -> tuple[_DoneIndex, int]:
    """What ``out`` already holds, and the byte length of its complete lines."""
    index = _DoneIndex()
    complete = 0
    try:
        handle = out.open("rb")
    except FileNotFoundError:
        return index, 0
    except OSError as exc:
        raise BatchError(f"cannot read {out} to resume: {exc.strerror}") from exc
    with handle:
        for lineno, line in enumerate(handle, 1):
            if not line.endswith(b"\n"):
                break  # a crash mid-write; cut off, and the row is done again
            complete += len(line)
            if not line.strip():
                continue
            parsed = _parse_record(line)
            if parsed is None:
                raise BatchError(
                    f"line {lineno} of {out} is not a record written by gatekeeper enrich; "
                    "choose another output file, or remove that line"
                )
            row, text = parsed
            if row > max_row:  # more rows than the input has bytes: not this input's output
                raise BatchError(
                    f"{out} holds row {row}, more rows than the input can have, so it was written for a different "
                    f"input. Write to a new output file, or delete {out} to start over"
                )
            if not index.add(row, text):
                raise BatchError(f"{out} holds row {row} twice with different inputs; use a new output file")
    return index, complete


def _parse_record(line: bytes) -> tuple[int, str] | None:
    try:
        record = json.loads(line)
        row, text = record["row"], record["input"]
    except (ValueError, TypeError, KeyError):  # not JSON (or not UTF-8), not an object, not ours
        return None
    return (row, text) if type(row) is int and row >= 1 and isinstance(text, str) else None


def _cut_partial_tail(out: Path, complete_bytes: int) -> None:
    try:
        if not out.exists() or out.stat().st_size <= complete_bytes:
            return
        log.warning("%s ends in a partial record from an interrupted run; that row is done again", out)
        with out.open("r+b") as handle:
            handle.truncate(complete_bytes)
    except OSError as exc:
        raise BatchError(f"cannot repair {out}: {exc.strerror}; check its permissions") from exc
