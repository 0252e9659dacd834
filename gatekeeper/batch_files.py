"""The files of ``gatekeeper enrich`` (:mod:`gatekeeper.batch`): the CSV input, read as a stream, and the JSON Lines
output, read back to resume.

The input's header names the number column (``phone``, ``phone_number``, ``number``, ``to`` or ``msisdn``, else
the first) and optionally a ``country`` column; a ``;`` or tab separated export is read too, and a row that cannot
be read becomes an error record rather than a crash. The output is indexed by row number and input value (8 bytes
a row): a row already there is done; an output written for another input is refused before any work.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gatekeeper.errors import GatekeeperError

log = logging.getLogger("gatekeeper.batch")

#: Header names taken as the number column when none is given, in this order (case-insensitive).
NUMBER_COLUMNS: tuple[str, ...] = ("phone", "phone_number", "number", "to", "msisdn")
#: An optional column with a per-row ISO 3166 alpha-2 hint for numbers written in national format.
COUNTRY_COLUMN = "country"
#: An ISO 3166 alpha-2 code, as a hint is written.
COUNTRY_CODE = re.compile("[A-Za-z]{2}")

_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by errors="surrogateescape"


class BatchError(GatekeeperError):
    """The batch cannot start or go on: a missing or unreadable input, an output that does not match it…

    The message says what to fix. Raised before any Lookup is made, except when the rate limiter's store
    becomes unavailable mid-run (the run stops rather than exceed the budget; re-run to resume).
    """


# -- reading the input -----------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where the header puts things: its width, the number column (index and name), the country column."""

    width: int
    number: int
    country: int | None
    column: str


@dataclass(frozen=True)
class Row:
    """One data row, numbered from 1 (header and blank lines excluded)."""

    n: int
    input: str  # the number cell as written (bytes that were not UTF-8 shown as U+FFFD); with n, the resume key
    country: str | None = None
    problem: str | None = None  # why the row cannot be decided; it becomes an error record


def check_paths(src: Path, out: Path) -> None:
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
def reading(src: Path, number_column: str | None) -> Iterator[tuple[Layout, Iterator[Row]]]:
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


def _read_header(reader: Iterator[list[str]], src: Path, number_column: str | None) -> Layout:
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
    return Layout(len(header), number, None if country == number else country, header[number].strip())


def _rows(reader: Iterator[list[str]], layout: Layout) -> Iterator[Row]:
    n = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field past csv's size limit; the reader goes on at the next line
            n += 1
            yield Row(n, "", problem=f"unreadable CSV row: {exc}")
            continue
        if any(c.strip() for c in cells):  # blank lines are not rows
            n += 1
            yield _parse_row(n, cells, layout)


def _parse_row(n: int, cells: list[str], layout: Layout) -> Row:
    raw = cells[layout.number] if layout.number < len(cells) else ""
    text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if any(_UNDECODABLE.search(c) for c in cells):
        return Row(n, text, problem="the row is not UTF-8 text (undecodable bytes); save the file as UTF-8")
    if len(cells) != layout.width:
        return Row(n, text, problem=f"the row has {len(cells)} fields but the header has {layout.width}")
    if not text.strip():
        return Row(n, text, problem=f"empty number in column {layout.column!r}")
    hint = cells[layout.country].strip() if layout.country is not None else ""
    if hint and not COUNTRY_CODE.fullmatch(hint):
        return Row(n, text, problem=f"country {hint!r} is not a two-letter ISO 3166 code such as 'US'")
    return Row(n, text, hint.upper() or None)


def count_rows(rows: Iterator[Row], index: DoneIndex, src: Path, out: Path) -> int:
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
class DoneIndex:
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


def read_output(out: Path, *, max_row: int) -> tuple[DoneIndex, int]:
    """What ``out`` already holds, and the byte length of its complete lines."""
    index = DoneIndex()
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


def cut_partial_tail(out: Path, complete_bytes: int) -> None:
    try:
        if not out.exists() or out.stat().st_size <= complete_bytes:
            return
        log.warning("%s ends in a partial record from an interrupted run; that row is done again", out)
        with out.open("r+b") as handle:
            handle.truncate(complete_bytes)
    except OSError as exc:
        raise BatchError(f"cannot repair {out}: {exc.strerror}; check its permissions") from exc
