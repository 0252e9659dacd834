"""The one run-once routine: a send under an idempotency key, a webhook event under its event key.

A caller claims the key in the :class:`~gatekeeper.stores.base.IdempotencyStore` with a short lease,
does the work, then completes the claim with the work's result, kept for ``keep_seconds``:

* a repeat of a completed key does nothing and gets the stored result back;
* a repeat while the first is still pending waits up to ``wait_seconds`` for it, then raises
  :class:`~gatekeeper.errors.IdempotencyConflict` (``in_progress``);
* the same key with another fingerprint (a different request) raises ``payload_mismatch``;
* work that fails frees the key for a retry when the failure shows nothing happened, and otherwise
  marks it ``outcome_unknown``, so a send that may have gone out is never repeated blindly. Work
  that is safe to redo (a webhook's writes are each idempotent) frees the key on every failure.

A pending claim is only a lease: a process that dies mid-way frees the key when the lease ends.

The routine is written once, as steps (:func:`once` yields what it needs: a claim, a sleep, the
work, a settlement), and carried out by :class:`Once` with blocking calls or by the async gate
with awaits.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Generator
from contextlib import suppress
from typing import Any, NamedTuple

from gatekeeper.errors import IdempotencyConflict, InvalidArgument, StoreUnavailable
from gatekeeper.stores.base import Call, Claim, Stores

#: How often a repeat polls a pending claim while it waits for the first caller.
POLL_SECONDS = 0.05
MAX_KEY_CHARS = 255


class Ran(NamedTuple):
    """What :meth:`Once.run` did: ``ran`` is False for a repeat, which gets the first run's ``result``."""

    ran: bool
    result: bytes | None


def fingerprint_of(*parts: Any) -> str:
    """A stable digest of a request, so a key reused for another request is told apart."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def check_key(key: object) -> str:
    """A caller's idempotency key, checked: a non-empty string of at most 255 characters."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise InvalidArgument(f"idempotency_key must be a non-empty string of at most {MAX_KEY_CHARS} characters")
    return key


class SleepStep(NamedTuple):
    """Wait before claiming again (answer: nothing)."""

    seconds: float


class WorkStep(NamedTuple):
    """Run the work (answer: its result; a failure is thrown back in)."""


#: A step of the routine: an idempotency-store verb (``claim``, then ``complete``, ``abandon`` or
#: ``mark_unknown``; a StoreUnavailable is thrown back in), a wait, or the work.
Step = Call | SleepStep | WorkStep


def _settle(verb: str, key: str, token: str, result: bytes | None, keep_seconds: float) -> Call:
    """The store call that settles a claim ``complete`` (with ``result``), ``abandon`` or ``mark_unknown``."""
    if verb == "abandon":
        return Call("idempotency", "abandon", (key, token))
    args = (key, token, result) if verb == "complete" else (key, token)
    return Call("idempotency", verb, args, {"ttl_seconds": keep_seconds})


def once(
    key: str,
    fingerprint: str,
    *,
    lease_seconds: float,
    keep_seconds: float,
    wait_seconds: float,
    nothing_happened: Callable[[BaseException], bool] | None,
    clock: Callable[[], float],
) -> Generator[Step, Any, Ran]:
    """The run-once routine as steps, for a blocking or an async driver to carry out (see the module docstring)."""
    deadline = clock() + wait_seconds
    while True:
        claim: Claim = yield Call("idempotency", "claim", (key, fingerprint), {"ttl_seconds": lease_seconds})
        # Waiting helps only a repeat of the same request whose first run is still going.
        if claim.won or claim.state != "pending" or claim.fingerprint != fingerprint or clock() >= deadline:
            break
        yield SleepStep(POLL_SECONDS)
    if not claim.won:
        if claim.fingerprint != fingerprint:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was first used for a different request; use a new key",
                key=key,
                reason="payload_mismatch",
            )
        if claim.state == "done":
            return Ran(False, claim.result)
        if claim.state == "unknown":
            raise IdempotencyConflict(
                f"the first call with key {key!r} failed after it may have sent; "
                "check its status before retrying with a new key",
                key=key,
                reason="outcome_unknown",
            )
        raise IdempotencyConflict(
            f"a call with key {key!r} is still in progress; retry later", key=key, reason="in_progress"
        )
    token = claim.token
    assert token is not None
    try:
        result: bytes = yield WorkStep()
    except BaseException as failed:
        freed = nothing_happened is None or nothing_happened(failed)
        with suppress(StoreUnavailable):  # the store is down too: the lease frees the key
            yield _settle("abandon" if freed else "mark_unknown", key, token, None, keep_seconds)
        raise
    try:
        yield _settle("complete", key, token, result, keep_seconds)
    except StoreUnavailable:
        # The work is done but its result could not be kept: work safe to redo frees the key; a send that
        # went out is marked unknown if the store lets us, else the lease runs out on it.
        with suppress(StoreUnavailable):
            yield _settle("abandon" if nothing_happened is None else "mark_unknown", key, token, None, keep_seconds)
        raise
    return Ran(True, result)


class Once:
    """Runs work once per key, through the gate's idempotency store (read on each use, as ``Stores`` asks)."""

    def __init__(
        self,
        stores: Stores,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._stores = stores
        self._clock = clock
        self._sleep = sleep

    def run(
        self,
        key: str,
        work: Callable[[], bytes],
        *,
        fingerprint: str | None = None,
        lease_seconds: float,
        keep_seconds: float,
        wait_seconds: float = 0.0,
        nothing_happened: Callable[[BaseException], bool] | None = None,
    ) -> Ran:
        """Run ``work`` unless ``key`` already ran; see the module docstring for every other answer.

        ``fingerprint`` defaults to the key itself (events, whose key is their identity).
        ``nothing_happened(exc)`` says whether a failure of ``work`` left nothing done; None means
        the work is safe to redo, so any failure frees the key.
        """
        steps = once(
            key,
            key if fingerprint is None else fingerprint,
            lease_seconds=lease_seconds,
            keep_seconds=keep_seconds,
            wait_seconds=wait_seconds,
            nothing_happened=nothing_happened,
            clock=self._clock,
        )
        answer: Any = None
        failure: BaseException | None = None
        while True:
            try:
                step = steps.send(answer) if failure is None else steps.throw(failure)
            except StopIteration as end:
                ran: Ran = end.value
                return ran
            answer, failure = None, None
            try:
                if isinstance(step, Call):
                    answer = getattr(self._stores.idempotency, step.verb)(*step.args, **step.kwargs)
                elif isinstance(step, SleepStep):
                    self._sleep(step.seconds)
                else:
                    answer = work()
            except BaseException as exc:
                failure = exc
