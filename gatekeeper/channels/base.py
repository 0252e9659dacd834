"""What every channel shares: how a send is retried."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gatekeeper.retries import Backoff, call_with_retries, safe_to_resend

T = TypeVar("T")


@dataclass(frozen=True)
class SendPolicy:
    """How sends are retried: only when Twilio cannot have acted (never connected, or 429)."""

    max_retries: int = 2
    backoff: Backoff = field(
        default_factory=lambda: Backoff(base_ms=250, jitter_ms=250, max_retry_after_ms=5_000, rng=random.Random())  # noqa: S311
    )
    sleep: Callable[[float], None] = time.sleep

    def send(self, fn: Callable[[], T]) -> T:
        return call_with_retries(
            fn, retry_if=safe_to_resend, max_retries=self.max_retries, wait=self.backoff, sleep=self.sleep
        )
