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
Reading the input and the output is :mod:`gatekeeper.batch_files`.

* **Every row goes through** :meth:`Gatekeeper.decide`, so the gate's normalizer, suppression, policy and
  Lookup cache apply exactly as for a live send. Duplicate numbers cost one Lookup: a row whose number is
  being decided by another row of the run waits for that answer and reads it from the cache.
* **Rate**: every Lookup request (retries included) first takes a permit of the ``lookups`` budget of its
  account (:class:`~gatekeeper.rates.Budgets`, the very bucket live Lookups draw on), at ``rate_per_second``
  with no burst. In Redis the bucket is on the server's clock, so every process and host using the same
  store and prefix shares one budget (give them the same rate), and live traffic shares it too. Permits are
  spaced so that ``rate`` of them span one second plus :data:`JITTER_MARGIN_SECONDS` (30 ms): what delays a
  request on its way to Twilio (a thread's turn, the connection, the server) may vary by that much and still
  no one-second window there, the first included, holds more than ``rate``. The run so reaches ``rate / 1.03``
  at most (``bench/enrich.py`` measures it). One worker per process at a time asks the store, and takes its
  permit only when it is due (within 5 ms): a permit is stamped when its request goes, never reserved ahead
  and used late. A request that still goes more than half the margin after its permit (a slow store answer,
  a busy host) moves the next permits by the excess, and a process's first request, on cold paths, gets 20 ms
  more. At most three rows per process get ready for a permit at once, so no burst of work delays the
  requests already let through. A 429's ``Retry-After`` pauses the bucket for every process, and the request
  is retried after the pause.
* **Concurrency**: at most ``concurrency`` rows are being decided at once, by default ``ceil(rate)``
  between 8 and 64: enough to keep the rate while each Lookup takes up to a second.
* **Ctrl-C**: the first (SIGINT, when the run is in the main thread under Python's default handler) stops
  the run gently: no new Lookup starts, rows waiting for a permit give it up, and the Lookups already in
  flight (paid for) finish and are written; then ``KeyboardInterrupt`` is raised. A second Ctrl-C leaves at
  once. A ``KeyboardInterrupt`` raised otherwise is handled the same way.
* **Resume**: rows already in the output (same row number and same input value) are skipped, missing rows
  appended. A partial last line left by a crash is cut off and its row done again. A missing row whose
  number's Lookup answer is in the Lookup cache (fresh for the purpose) is decided from it, at no cost: the
  output and the cache both count as done, so a run stopped any way (twice Ctrl-C, a kill, a crash) pays
  for no number twice, given a store that outlives the process (SQLite, Redis) with ``[cache] enabled``.
  An output written for a different input raises :class:`BatchError` before any work.
* **Bounded**: at most ``2 * concurrency`` rows are pending; the CSV is streamed (read once to count and
  check rows, once to work). The resume index costs 8 bytes per input row.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TypeVar

import requests
from twilio.base.exceptions import TwilioException

from gatekeeper.batch_files import (
    COUNTRY_CODE,
    BatchError,
    DoneIndex,
    Row,
    check_paths,
    count_rows,
    cut_partial_tail,
    read_output,
    reading,
)
from gatekeeper.errors import ConfigError, GatekeeperError, StoreUnavailable
from gatekeeper.gate import Gatekeeper
from gatekeeper.models import LOOKUP_FIELDS, PURPOSES, Decision, Phone, Purpose
from gatekeeper.phone import mask, normalize
from gatekeeper.policy import Policy
from gatekeeper.rates import Budgets, LookupGuard
from gatekeeper.stores.base import Steps
from gatekeeper.stores.base import run as run_steps

__all__ = ["BatchError", "EnrichSummary", "ProgressEvent", "default_concurrency", "enrich_file"]

log = logging.getLogger("gatekeeper.batch")

#: The PhoneFacts written under ``facts`` in each record.
FACTS = ("country_code", "line_type", "carrier_name", "mcc", "mnc", "caller_name", "source", "fetched_at", "valid")
#: ``rate`` permits span one second plus this: the slack for the varying delay between a permit and its request
#: reaching Twilio. A request delayed more than the one ``rate`` permits after it would put ``rate + 1`` into one
#: of Twilio's one-second windows. 30 ms, for 3 % of the rate: on the 2-core development host the delay from a
#: permit to the sandbox is 2 ms at the median and 5-20 ms at worst, more for a process's first requests (see
#: _COLD_SECONDS), with four processes sharing a bucket (tests/batch/test_shared_budget.py).
JITTER_MARGIN_SECONDS = 0.03
MAX_CONCURRENCY = 256

RowStatus = Literal["ok", "refused", "error", "skipped"]
T = TypeVar("T")

_WINDOW = 2  # rows pending per worker: enough to keep workers busy, small enough to bound memory
# A permit is taken once due within this; its worker sleeps the rest, the turn passed on. A worker told "not yet"
# naps until half of it before the permit, so it still asks in time when a busy host wakes it that late: one asking
# after the permit was due stamps it then, and moves every later one. One process on Redis, bench/enrich.py's
# measure: 0.953-0.960 of the rate at 5 ms, 0.965-0.967 at 10 ms (memory: 0.968).
_LEAD_SECONDS = 0.010
_READY_ROWS = 3  # rows of a process on their way to a permit at once (see _Pacer)
_LATE_SECONDS = JITTER_MARGIN_SECONDS / 2  # a request later than this after its permit moves the next ones
_COLD_SECONDS = 0.02  # the extra room a process's first request gets (see _Pacer.__call__)
_NAP_SECONDS = 0.25  # a worker waiting for a permit looks this often whether the run is stopping
_PATIENCE_MS = 3_600_000  # a batch waits out any pause Twilio asks for (up to an hour) rather than skip the row


class _Stopped(BatchError):
    """The run is stopping: a row whose Lookup has not begun gives it up, unpaid, and is not written."""


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


def default_concurrency(rate_per_second: float) -> int:
    """Rows decided at once when not given: one per Lookup a second of the rate (a Lookup taking up to a second
    still keeps the rate), at least 8, at most 64 (the Twilio client's connection pool)."""
    return min(64, max(8, math.ceil(rate_per_second)))


def enrich_file(
    gate: Gatekeeper,
    input_path: str | PathLike[str],
    output_path: str | PathLike[str],
    *,
    rate_per_second: float = 50,
    concurrency: int | None = None,
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
    column value (else the gate's default); ``number_column`` names the number column (else auto-detected);
    ``concurrency`` defaults to :func:`default_concurrency`. ``clock``/``sleep`` pace the rate limit and default
    to the gate's. Re-running with the same output resumes. Raises :class:`BatchError` for what the caller must
    fix (a bad row is an error record instead), and ``KeyboardInterrupt`` after Ctrl-C, once the rows in flight
    are written.
    """
    src, out = Path(input_path), Path(output_path)
    check_paths(src, out)
    if not (rate_per_second > 0 and math.isfinite(rate_per_second)):
        raise BatchError(f"rate must be a positive number of Lookups per second, not {rate_per_second!r}")
    if concurrency is None:
        concurrency = default_concurrency(rate_per_second)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise BatchError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, not {concurrency!r}")
    if country is not None and not COUNTRY_CODE.fullmatch(country):
        raise BatchError(f"country must be a two-letter ISO 3166 code such as 'US', not {country!r}")
    clock = clock or gate.clock
    stop, interrupted = threading.Event(), threading.Event()
    pacer = _Pacer(gate, rate_per_second, clock, sleep or gate.sleep, stop)
    view = _gate_for(gate, purpose, fields, pacer, concurrency)
    with reading(src, number_column) as (layout, rows):  # the header is checked before the output is read
        index, complete_bytes = read_output(out, max_row=src.stat().st_size)
        total = count_rows(rows, index, src, out)
    cut_partial_tail(out, complete_bytes)
    log.info("enriching %s (%d rows, numbers in column %r) into %s", src, total, layout.column, out)

    enricher = _Enricher(view, purpose, country.upper() if country else None, pacer)
    counts: Counter[str] = Counter()
    started = clock()
    try:
        sink = out.open("ab", buffering=0)
    except OSError as exc:
        raise BatchError(f"cannot write {out}: {exc.strerror}; check the path and its permissions") from exc
    with sink, reading(src, number_column) as (_, rows), _first_interrupt_stops(stop, interrupted), _heap_frozen():

        def emit(row: Row, status: RowStatus, record: dict[str, Any] | None) -> None:
            if record is not None:
                # One unbuffered write per record: however the run stops, every record written is whole, and a
                # crash mid-write leaves at most one partial last line, which the next run cuts off.
                sink.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            _count(counts, status, record)
            if progress is not None:
                progress(ProgressEvent(row.n, status, total, _summary(counts, clock() - started)))

        _run(rows, index, enricher, concurrency, emit, stop=stop)
    summary = _summary(counts, max(0.0, clock() - started))
    if interrupted.is_set():
        log.info("enrich interrupted, the rows in flight written: %s", summary)
        raise KeyboardInterrupt
    log.info("enrich finished: %s", summary)
    return summary


# -- the run ---------------------------------------------------------------------------------
def _run(
    rows: Iterator[Row], index: DoneIndex, enricher: _Enricher, concurrency: int, emit: _Emit, *, stop: threading.Event
) -> None:
    """Feed rows to ``concurrency`` workers; only this thread writes, so records never interleave."""
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="gatekeeper-enrich")
    pending: set[Future[_Result]] = set()  # submitted, not written yet

    def write(done: Iterable[Future[_Result]]) -> BaseException | None:
        """Write the results among ``done``; return the first failure instead of losing the others."""
        failure: BaseException | None = None
        for future in done:
            pending.discard(future)  # first: an interrupt in emit() must not get the row written twice
            error = None if future.cancelled() else future.exception()
            if error is not None:
                failure = failure or error
            elif not future.cancelled() and not (result := future.result()).stopped:
                emit(result.row, *_record(result))
        return failure

    def drain() -> None:
        """Start nothing new, and write what the rows under way bring: their Lookups are paid for."""
        stop.set()  # rows waiting for a permit give it up
        for future in list(pending):
            future.cancel()
        write(wait(list(pending)).done)

    def settle(keep: int) -> None:
        while len(pending) > keep and not stop.is_set():
            failure = write(wait(list(pending), return_when=FIRST_COMPLETED).done)
            if failure is not None:
                # A fatal error (the rate limiter is gone): start nothing new, keep what is paid for, stop.
                drain()
                raise failure

    try:
        for row in rows:
            if stop.is_set():
                break
            if index.holds(row.n, row.input):
                emit(row, "skipped", None)
            elif row.problem is not None:
                emit(row, *_record(_Result(row, None, None, row.problem)))
            else:
                settle(keep=_WINDOW * concurrency - 1)
                if not stop.is_set():
                    enricher.pacer.take_slot()
                if stop.is_set():
                    break
                pending.add(pool.submit(enricher, row))
        settle(keep=0)
        if stop.is_set():  # the first Ctrl-C
            log.info("stopping: writing the %d rows under way", len(pending))
            drain()
    except KeyboardInterrupt:
        if not stop.is_set():  # raised, not signalled to the run: still write what is paid for
            drain()
        raise
    finally:
        # Every row under way is written by now (the end, the first Ctrl-C, a fatal error) and the idle workers
        # exit; after a second Ctrl-C this leaves at once, and the Lookups in flight still finish into the cache.
        pool.shutdown(wait=False, cancel_futures=True)


_Emit = Callable[[Row, RowStatus, "dict[str, Any] | None"], None]


@contextmanager
def _heap_frozen() -> Iterator[None]:
    """For the run, what the process held before it is left out of the garbage collector's full collections
    (``gc.freeze``), which then look only at what the run allocates. A full collection stops every thread of the
    process; over a heap of imported modules (80,000 objects, the resume index) one took 70-80 ms on a 2-core
    host, and a Lookup that late moves every later permit (0.93 of the rate instead of 0.96, bench/enrich.py). A
    process that froze its own heap already (``gc.get_freeze_count()``) is left as it is."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def _first_interrupt_stops(stop: threading.Event, interrupted: threading.Event) -> Iterator[None]:
    """While the run lasts, the first Ctrl-C (SIGINT) stops it at a safe point instead of raising wherever the
    main thread is; Python's handler is then back, so a second one raises at once. Only in the main thread and
    over Python's default handler: an application's own handler is left alone."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def first(signum: int, frame: FrameType | None) -> None:
        interrupted.set()
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is first:
            signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass(frozen=True)
class _Result:
    row: Row
    phone: Phone | None
    decision: Decision | None
    error: str | None = None
    stopped: bool = False  # the run stopped before its Lookup: nothing to write; the next run does the row


class _Enricher:
    """Decides one row, from worker threads."""

    def __init__(self, gate: Gatekeeper, purpose: Purpose, country: str | None, pacer: _Pacer) -> None:
        self.gate = gate
        self.purpose = purpose
        self.country = country
        self.pacer = pacer
        self._inflight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def __call__(self, row: Row) -> _Result:
        self.pacer.slot_held()  # the run took a ready slot for this row before handing it over
        e164, mine = None, None
        try:
            country = row.country or self.country
            phone = normalize(row.input, country or self.gate.default_country)  # an LRU hit for the gate's parse
            # A number another row of this run is deciding waits for that row and then reads the cache: it
            # must not sit on the Lookup's fill lock, whose wait is sized for a request, not a permit queue.
            e164 = phone.e164
            if e164 is not None:
                with self._lock:
                    running = self._inflight.get(e164)
                    if running is None:
                        mine = self._inflight[e164] = threading.Event()
                if running is not None:
                    self.pacer.give_back()  # waiting on another row is not getting ready for a permit
                    running.wait()
            return self._decide(row, phone, country)
        finally:
            self.pacer.give_back()
            if e164 is not None and mine is not None:
                with self._lock:
                    del self._inflight[e164]
                mine.set()

    def _decide(self, row: Row, phone: Phone, country: str | None) -> _Result:
        try:
            decision = self.gate.decide(row.input, self.purpose, country)
        except _Stopped:
            return _Result(row, phone, None, stopped=True)
        except (BatchError, ConfigError):
            raise  # the rate limiter is gone, or Lookup refuses the credentials: every row would fail; stop
        except (GatekeeperError, TwilioException, requests.RequestException) as exc:
            log.warning("row %d (%s) could not be decided: %s", row.n, mask(phone.e164), type(exc).__name__)
            return _Result(row, phone, None, f"{type(exc).__name__}: {exc}")
        return _Result(row, phone, decision)


class _Pacer:
    """Before every Lookup request of the run (retries too): one permit of the paced ``lookups`` budget.

    One worker of this process at a time asks the store (the others could only be told "not yet"); it takes
    its permit once due within ``_LEAD_SECONDS``, passes the turn on and sleeps the rest: about two store
    calls per permit. A worker waiting naps at most ``_NAP_SECONDS`` at a time and gives up once the run is
    stopping (``_Stopped``): a Lookup not begun is not paid for. At most ``_READY_ROWS`` rows of the process
    are on their way to a permit at once (started, screened, read from the cache, queued here): rows all
    starting together would spend a burst of CPU that delays the requests already let through, and a request
    delayed behind it reaches Twilio bunched up with the next ones (on a 2-core host, four processes starting
    40 rows each delayed the first requests by 40-130 ms, and the strict limit answered 20429).
    """

    def __init__(
        self,
        gate: Gatekeeper,
        rate_per_second: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        stop: threading.Event,
    ) -> None:
        patient = gate.settings.rates.model_copy(update={"max_wait_ms": _PATIENCE_MS})
        spaced = rate_per_second / (1 + JITTER_MARGIN_SECONDS)
        self.budgets = Budgets(gate.stores, patient, clock=clock, paced={"lookups": spaced})
        self.stores = gate.stores
        self.account: str | None = gate.client.account_sid
        self.clock = clock
        self.sleep = sleep
        self.stop = stop
        self._turn = threading.Lock()
        self._cold = True  # no permit taken yet
        self._ready = threading.BoundedSemaphore(_READY_ROWS)
        self._holding = threading.local()  # whether this worker holds a ready slot

    def take_slot(self) -> None:
        """Before a row is handed to a worker (the run's thread waits here): one of the ready slots. Rows start
        only as slots free up, so the pool starts threads only as they are needed, not one per row read."""
        self._ready.acquire()

    def slot_held(self) -> None:
        """In the worker, as the row starts: the slot taken for it is this worker's to give back."""
        self._holding.slot = True

    def give_back(self) -> None:
        """The row has its permit, waits on another row, or is done: the next row may get ready."""
        if getattr(self._holding, "slot", False):
            self._holding.slot = False
            self._ready.release()

    def __call__(self) -> None:
        with self._turn:
            while True:
                self._go_on()
                asked = self.clock()
                taken, wait_seconds = self._store(self.budgets.pace_steps("lookups", self.account, lead=_LEAD_SECONDS))
                if taken:
                    self.give_back()  # the next row may get ready while this one waits out its lead
                    cold, self._cold = self._cold, False
                    break
                self.sleep(min(max(wait_seconds - _LEAD_SECONDS / 2, 0.0), _NAP_SECONDS))
        due, left = asked + wait_seconds, wait_seconds
        while left > 0:  # within the lead; longer only for a store that reserves (no Budget verb)
            nap = min(left, _NAP_SECONDS)
            self.sleep(nap)
            left -= nap
            if left > 0:
                self._go_on()
        # The request goes now, ``clock() - due`` after its permit (at most: the permit may have been due up to the
        # store's answer later) because of a slow store answer or a busy host. The margin absorbs _LATE_SECONDS of
        # that and keeps the rest for the way to Twilio; past it the next permits move by the excess, or the ones
        # after this request, on time, would reach Twilio bunched up with it. A process's first request also takes
        # cold paths (code run the first time, every process starting at once): the next permits leave it
        # _COLD_SECONDS more.
        push = max(0.0, self.clock() - due - _LATE_SECONDS) + (_COLD_SECONDS if cold else 0.0)
        if push > 0:
            self._store(self.budgets.push_steps("lookups", self.account, push))

    def _store(self, steps: Steps[T]) -> T:
        try:
            return run_steps(self.stores, steps)
        except StoreUnavailable as exc:
            # Fail safe: without the shared budget the rate cannot be kept, so stop rather than exceed it.
            raise BatchError(
                f"the rate limiter's store is unavailable ({exc}); stopped so the Lookup budget is not "
                "exceeded. Re-run the same command to resume"
            ) from exc

    def _go_on(self) -> None:
        if self.stop.is_set():
            raise _Stopped("the run is stopping; this Lookup was not made")


def _gate_for(
    gate: Gatekeeper, purpose: str, fields: Sequence[str] | None, pacer: _Pacer, concurrency: int
) -> Gatekeeper:
    """A view of ``gate`` whose Lookups take the pacer's permits, with ``fields`` for ``purpose`` when given.

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
    view = gate.derive(policy=policy, before_lookup=pacer, guarded=False)  # enrichment reaches no one: no velocity
    # The view's Lookup service is its own copy (derive() made it for the hook): its guard takes no second
    # permit for a Lookup (the pacer took one), still writes a 429's pause to the shared bucket, keeps the
    # gate's breaker, and lets the run's ``concurrency`` Lookups be in flight.
    view.lookup.guard = LookupGuard(gate.stores, pacer.budgets, gate.breaker, concurrency)
    return view


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
