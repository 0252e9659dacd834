"""Gatekeeper's exceptions: one root, a subclass per failure kind, each carrying data.

::

    GatekeeperError
    ├── ConfigError                 bad settings; the message names the key   (also ValueError)
    ├── InvalidNumber               a number that cannot be parsed or reached (also ValueError)
    ├── LookupUnavailable           Lookup could not be had (network, 5xx, 429 after retries)
    ├── StoreUnavailable            a store could not be read or written
    ├── IdempotencyConflict         a key reused with another payload, still in flight, or unknown
    ├── InvalidSignature            a webhook whose X-Twilio-Signature does not verify
    ├── BatchError                  an enrich input or output that cannot be used (gatekeeper.batch)
    └── GateRefused                 a drop-in call the gate refused           (also TwilioRestException)

``GateRefused`` inherits twilio's ``TwilioRestException`` so ``except
TwilioRestException`` clauses written for Twilio's own 21211/21610/21614
answers keep working unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twilio.base.exceptions import TwilioRestException

if TYPE_CHECKING:
    from gatekeeper.models import Decision


class GatekeeperError(Exception):
    """Root of every error Gatekeeper raises."""


class ConfigError(GatekeeperError, ValueError):
    """Settings that cannot be used. ``key`` names the offending setting, dotted."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class InvalidNumber(GatekeeperError, ValueError):
    """An input that is not a reachable phone number. ``reason`` says why."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class LookupUnavailable(GatekeeperError):
    """Lookup v2 could not answer (after retries). ``reason`` is a short code."""

    def __init__(self, message: str, *, reason: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class StoreUnavailable(GatekeeperError):
    """A store could not be read or written; the gate fails safe when this happens."""


class IdempotencyConflict(GatekeeperError):
    """An idempotency key that cannot be honoured.

    ``reason`` is ``"payload_mismatch"`` (same key, different request),
    ``"in_progress"`` (the first call has not finished) or ``"outcome_unknown"``
    (the first call failed in a way that may have sent; do not retry blindly).
    """

    def __init__(self, message: str, *, key: str, reason: str) -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason


class InvalidSignature(GatekeeperError):
    """A webhook request whose ``X-Twilio-Signature`` does not verify. ``reason`` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid Twilio signature: {reason}")
        self.reason = reason


class GateRefused(GatekeeperError, TwilioRestException):
    """A drop-in call the gate refused, shaped like Twilio's own rejection.

    ``code`` is the code Twilio would have answered (21211, 21610, 21614,
    21408, 60205, 60605, 20503 …), ``status`` is 400 and ``decision`` holds
    the full :class:`~gatekeeper.models.Decision`.
    """

    def __init__(self, decision: Decision, *, code: int, uri: str = "", method: str = "POST") -> None:
        reasons = ", ".join(decision.reasons) or "refused"
        msg = f"Gatekeeper refused the request ({reasons})"
        TwilioRestException.__init__(self, 400, uri, msg=msg, code=code, method=method)
        self.decision = decision

    def __str__(self) -> str:  # twilio's __str__ prints colour codes for terminals; keep ours plain
        return f"HTTP {self.status} error {self.code}: {self.msg}"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_refused, (self.decision, self.code, self.uri, self.method))


def _rebuild_refused(decision: Decision, code: int, uri: str, method: str) -> GateRefused:
    return GateRefused(decision, code=code, uri=uri, method=method)
