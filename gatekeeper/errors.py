"""Gatekeeper's exceptions: one root, a subclass per failure kind, each carrying data.

::

    GatekeeperError
    ├── InvalidArgument             an argument that cannot be used; the message names it  (also ValueError)
    │   └── InvalidNumber           a number that cannot be parsed or reached              (also ValueError)
    ├── InvalidArgumentType         an argument of the wrong type                          (also TypeError)
    ├── ConfigError                 bad settings; the message names the key                (also ValueError)
    ├── LookupUnavailable           Lookup could not be had (network, 5xx, 429 after retries)
    ├── TransientError              a failure worth retrying (inside the retry loops; never escapes them)
    ├── StoreUnavailable            a store could not be read or written
    ├── IdempotencyConflict         a key reused with another payload, still in flight, or unknown
    ├── SendFailed                  a send that did not go out as asked
    │   ├── RateLimited             the API's budget (or Twilio's Retry-After) allowed no send in time
    │   ├── SendRejected            Twilio answered with an error; its code is kept  (also TwilioRestException)
    │   └── SendUnavailable         Twilio could not be reached           (also requests' RequestException;
    │                               defined in gatekeeper.channels.base, which is where sends happen)
    ├── WebhookError                a webhook request that cannot be processed
    │   ├── InvalidSignature        its X-Twilio-Signature does not verify (403)
    │   ├── MalformedEvent          its fields cannot be used (400)                         (also ValueError)
    │   └── BodyTooLarge            its body is over the limit (413)
    ├── BatchError                  an enrich input or output that cannot be used (gatekeeper.batch)
    ├── UngatedCall                 a creating SDK call the gate does not know (the drop-in fails closed)
    └── GateRefused                 a call the gate refused                   (also TwilioRestException)

The dual inheritance is only there so ``except`` clauses written before Gatekeeper keep working:
``except TwilioRestException`` for Twilio's own 21211/21610/21614 answers, ``except ValueError``
for bad arguments, ``except requests.RequestException`` for the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from twilio.base.exceptions import TwilioRestException

if TYPE_CHECKING:
    from gatekeeper.models import Decision


class GatekeeperError(Exception):
    """Root of every error Gatekeeper raises."""


class InvalidArgument(GatekeeperError, ValueError):
    """An argument that cannot be used; the message says which and what to pass instead."""


class InvalidNumber(InvalidArgument):
    """An input that is not a reachable phone number. ``reason`` says why."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidArgumentType(GatekeeperError, TypeError):
    """An argument of the wrong type; the message names the argument and the type wanted."""


class ConfigError(GatekeeperError, ValueError):
    """Settings that cannot be used. ``key`` names the offending setting, dotted."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class LookupUnavailable(GatekeeperError):
    """Lookup v2 could not answer (after retries). ``reason`` is a short code."""

    def __init__(self, message: str, *, reason: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class TransientError(GatekeeperError):
    """A failure worth retrying; ``retry_after_seconds`` comes from the server when it said.

    Raised and caught inside the retry loops (:mod:`gatekeeper.retries`); what is still failing when
    the retries run out is raised as the caller's own kind (:class:`LookupUnavailable`).
    """

    def __init__(self, reason: str, *, status: int | None = None, retry_after_seconds: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after_seconds = retry_after_seconds


#: Why a store failed: the ``<reason>`` of the gate's reason code ``store:<reason>``.
StoreFailure = Literal["unavailable", "pool_exhausted"]


class StoreUnavailable(GatekeeperError):
    """A store could not be read or written; the gate fails safe when this happens.

    ``reason`` says why, as the gate's reason code ``store:<reason>`` reports it: ``"unavailable"`` (the store
    did not answer, or answered with an error) or ``"pool_exhausted"`` (every connection of the process's pool
    stayed busy for the pool's whole wait: the store itself may be fine, this process asks more of it at once
    than ``[redis] max_connections`` allows).
    """

    def __init__(self, message: str, *, reason: StoreFailure = "unavailable") -> None:
        super().__init__(message)
        self.reason: StoreFailure = reason

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only ``reason`` survives a pickle (multiprocessing)
        return (_store_unavailable, (str(self), self.reason))


def _store_unavailable(message: str, reason: StoreFailure) -> StoreUnavailable:
    return StoreUnavailable(message, reason=reason)


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


class SendFailed(GatekeeperError):
    """A send that did not go out as asked. ``may_have_sent`` is True when Twilio may have acted anyway."""

    may_have_sent: bool = False


class RateLimited(SendFailed):
    """No send went out: ``[rates]``' budget for ``api``, or a pause after Twilio's ``Retry-After``, allowed none
    within ``[rates] max_wait_ms``. ``retry_after_seconds`` says when a permit would have been due."""

    may_have_sent = False

    def __init__(self, api: str, retry_after_seconds: float) -> None:
        super().__init__(f"the {api} budget allows no send for {retry_after_seconds:.1f} s; retry later")
        self.api = api
        self.retry_after_seconds = retry_after_seconds


class SendRejected(SendFailed, TwilioRestException):
    """Twilio answered a send with an error: ``status``, ``code`` and ``msg`` are Twilio's own.

    Nothing was sent. The original exception is chained as ``__cause__``.
    """

    def __init__(
        self,
        status: int,
        uri: str,
        msg: str = "",
        code: int | None = None,
        *,
        method: str = "POST",
        details: object = None,
    ) -> None:
        TwilioRestException.__init__(self, status, uri, msg=msg, code=code, method=method, details=details)

    def __str__(self) -> str:  # twilio's __str__ prints colour codes for terminals; keep ours plain
        return f"HTTP {self.status} error {self.code}: {self.msg}"

    def __reduce__(self) -> tuple[object, ...]:
        fields = {"msg": self.msg, "code": self.code, "method": self.method, "details": self.details}
        return (_rebuild_rejected, (self.status, self.uri, fields))


class WebhookError(GatekeeperError):
    """A webhook request that cannot be processed; nothing was stored for it."""


class InvalidSignature(WebhookError):
    """A webhook request whose ``X-Twilio-Signature`` does not verify. ``reason`` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid Twilio signature: {reason}")
        self.reason = reason


class MalformedEvent(WebhookError, ValueError):
    """A signed webhook request whose fields cannot be used; the message says which and why (HTTP 400)."""


class BodyTooLarge(WebhookError):
    """A webhook request body over ``[webhooks] max_body_bytes`` (HTTP 413)."""


class UngatedCall(GatekeeperError):
    """A call through the drop-in that could send or create around the gate, refused. ``call`` names it."""

    def __init__(self, call: str) -> None:
        super().__init__(
            f"GatedClient refused {call}: it could send around the gate. If it sends nothing, list "
            f"{call!r} in [routing] passthrough"
        )
        self.call = call


class GateRefused(GatekeeperError, TwilioRestException):
    """A call the gate refused, shaped like Twilio's own rejection.

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


def _rebuild_rejected(status: int, uri: str, fields: dict[str, Any]) -> SendRejected:
    return SendRejected(status, uri, **fields)


def _rebuild_refused(decision: Decision, code: int, uri: str, method: str) -> GateRefused:
    return GateRefused(decision, code=code, uri=uri, method=method)
