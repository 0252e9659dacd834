"""Retry pieces shared by Lookup and the channels, built on tenacity.

Retry only what is safe. A Lookup is a GET: network errors, 5xx and 429 are
retried, honouring ``Retry-After``. A send is a POST and Twilio has no
idempotency header for creates, so it is retried only when Twilio cannot have
acted: the connection was never made, or Twilio answered 429 (20429: "not
processed"). The clock, the sleep and the randomness are injected.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import requests
import tenacity
from twilio.base.exceptions import TwilioException
from urllib3.exceptions import NewConnectionError

from gatekeeper.errors import TransientError

__all__ = [
    "Backoff",
    "TransientError",
    "call_with_retries",
    "call_with_retries_async",
    "network_error",
    "never_connected",
    "parse_retry_after",
    "safe_to_resend",
]

T = TypeVar("T")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form; HTTP dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class Backoff:
    """tenacity wait strategy: ``Retry-After`` when given (capped), else exponential backoff plus jitter."""

    def __init__(
        self,
        *,
        base_ms: float,
        jitter_ms: float,
        max_retry_after_ms: float,
        rng: random.Random | None = None,
    ) -> None:
        self.base_s = base_ms / 1000
        self.jitter_s = jitter_ms / 1000
        self.cap_s = max_retry_after_ms / 1000
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def __call__(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "retry_after_seconds", None)
        if isinstance(hinted, (int, float)):
            return float(min(hinted, self.cap_s))
        exp = self.base_s * (2 ** max(state.attempt_number - 1, 0))
        return float(min(exp + self.rng.uniform(0, self.jitter_s), max(self.cap_s, self.base_s)))


def never_connected(exc: BaseException) -> bool:
    """True when a request failed before any byte reached the server (refused, DNS, connect timeout)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        inner = getattr(reason, "reason", reason)
        return isinstance(inner, (NewConnectionError, ConnectionRefusedError))
    aiohttp = sys.modules.get("aiohttp")  # the SDK's async client; imported only by those who use it
    return aiohttp is not None and isinstance(exc, aiohttp.ClientConnectorError)


def network_error(exc: BaseException) -> bool:
    """A failure of the network under the SDK's async client (aiohttp's, or a timeout), not an answer."""
    aiohttp = sys.modules.get("aiohttp")
    return isinstance(exc, asyncio.TimeoutError) or (aiohttp is not None and isinstance(exc, aiohttp.ClientError))


def safe_to_resend(exc: BaseException) -> bool:
    """A send may be retried: Twilio cannot have acted on it (429 "not processed", or it was never reached).

    Twilio's answer may come as a ``TwilioRestException`` or, for an RFC 9457 problem body, as the
    SDK's ``TwilioServiceException`` (a plain ``TwilioException`` with ``status`` and ``code``).
    """
    if isinstance(exc, TwilioException):
        return getattr(exc, "status", None) == 429 or getattr(exc, "code", None) == 20429
    return never_connected(exc)


def call_with_retries(
    fn: Callable[[], T],
    *,
    retry_if: Callable[[BaseException], bool],
    max_retries: int,
    wait: Backoff,
    sleep: Callable[[float], None],
) -> T:
    """Call ``fn``; retry it up to ``max_retries`` times while ``retry_if`` says the failure is safe.

    The first attempt is a plain call: nearly every send and Lookup succeeds at once, and building
    tenacity's machinery for each would cost a send about 45 Python calls. Only after a failure worth
    retrying does tenacity take over, with that failure replayed as its first attempt, so its stop,
    wait (``Retry-After``) and retry rules see exactly the attempts that were made.
    """
    try:
        return fn()
    except Exception as exc:
        if max_retries <= 0 or not retry_if(exc):
            raise
        replay: list[Exception] = [exc]

    def attempt() -> T:
        if replay:
            raise replay.pop()
        return fn()

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max_retries + 1),
        wait=wait,
        retry=tenacity.retry_if_exception(retry_if),
        sleep=sleep,
        reraise=True,
    )
    return retrying(attempt)


async def call_with_retries_async(
    fn: Callable[[], Awaitable[T]],
    *,
    retry_if: Callable[[BaseException], bool],
    max_retries: int,
    wait: Backoff,
    sleep: Callable[[float], Awaitable[None]],
) -> T:
    """:func:`call_with_retries` for a coroutine: the waits are awaited, never slept on the event loop."""
    try:
        return await fn()
    except Exception as exc:
        if max_retries <= 0 or not retry_if(exc):
            raise
        replay: list[Exception] = [exc]

    async def attempt() -> T:
        if replay:
            raise replay.pop()
        return await fn()

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(max_retries + 1),
        wait=wait,
        retry=tenacity.retry_if_exception(retry_if),
        sleep=sleep,
        reraise=True,
    )
    return await retrying(attempt)
