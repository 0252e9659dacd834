"""What every channel shares: the Channel protocol, how a send is retried, and how its errors read.

A channel is step 5 for one :class:`~gatekeeper.models.Action`: given the twilio client, the
decision and the caller's request, it sends and reports an :class:`~gatekeeper.models.Outcome`.
Channels are the only code that sends; the gate picks one from its registry
(:func:`gatekeeper.channels.registry`) by the decision's action.

A channel only *prepares* a send (:meth:`BaseChannel.prepare`: which SDK list resource, which
keywords); :class:`BaseChannel` then makes it, blocking (``create``) or awaited (``create_async``),
through the same :class:`SendPolicy`. So a channel is written once for both kinds of gate.

Errors are translated here, at the edge, once the retries are spent: Twilio's own error becomes
:class:`~gatekeeper.errors.SendRejected` (still a ``TwilioRestException`` with Twilio's code), a
network failure :class:`SendUnavailable` (still a ``requests`` ``RequestException``), each chained
``from`` the original.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from gatekeeper import metrics
from gatekeeper.errors import GatekeeperError, RateLimited, SendFailed, SendRejected
from gatekeeper.models import API_OF, Action, Decision, Outcome, SendRequest
from gatekeeper.retries import (
    Backoff,
    call_with_retries,
    call_with_retries_async,
    network_error,
    never_connected,
    parse_retry_after,
    safe_to_resend,
)

T = TypeVar("T")


@runtime_checkable
class Channel(Protocol):
    """Sends what a decision says one way (SMS, a call, Verify, ...)."""

    def send(self, client: Client, action: Action, decision: Decision, request: SendRequest) -> Outcome:
        """Send ``request`` to ``decision.to`` as ``action``; raise a SendFailed when it does not go out.

        ``action`` is the decision's own, or in observe mode the one the caller asked for.
        """

    async def send_async(self, client: Client, action: Action, decision: Decision, request: SendRequest) -> Outcome:
        """The same with the SDK's ``*_async`` calls (the client's HttpClient must be asynchronous)."""


class Prepared(NamedTuple):
    """A send made ready: the SDK list resource to create on, the keywords, and reason codes the preparing
    added (``body:cleaned``), which the Outcome's decision carries."""

    target: Any
    kwargs: dict[str, Any]
    notes: tuple[str, ...] = ()


class BaseChannel:
    """A channel that prepares its send; the send itself, blocking or awaited, is made here."""

    policy: SendPolicy

    def prepare(self, client: Client, action: Action, decision: Decision, request: SendRequest) -> Prepared | Outcome:
        """What to create, or the Outcome itself when nothing is sent (TOTP)."""
        raise NotImplementedError

    def send(self, client: Client, action: Action, decision: Decision, request: SendRequest) -> Outcome:
        prepared = self.prepare(client, action, decision, request)
        if isinstance(prepared, Outcome):
            return prepared
        create = metrics.timed_send(prepared.target.create, API_OF[action])  # each attempt's latency
        budget = self.policy.budget
        if budget is not None and API_OF[action] in BUDGETED:
            api, account = API_OF[action], request.account_sid or client.account_sid
            budget.permit(api, account)
            create = _hinted(create, client, budget, api, account)
        return sent(action, decision, self.policy.send(create, **prepared.kwargs), prepared.notes)

    async def send_async(self, client: Client, action: Action, decision: Decision, request: SendRequest) -> Outcome:
        prepared = self.prepare(client, action, decision, request)
        if isinstance(prepared, Outcome):
            return prepared
        create = metrics.timed_send_async(prepared.target.create_async, API_OF[action])
        budget = self.policy.budget
        if budget is not None and API_OF[action] in BUDGETED:
            api, account = API_OF[action], request.account_sid or client.account_sid
            await budget.permit_async(api, account)
            create = _hinted_async(create, client, budget, api, account)
        resource = await self.policy.send_async(create, **prepared.kwargs)
        return sent(action, decision, resource, prepared.notes)


#: The APIs whose sends take a permit of ``[rates]``' budget.
BUDGETED = frozenset({"messages", "calls", "verify"})


class SendBudget(Protocol):
    """What a channel asks of ``[rates]`` (``gatekeeper.rates``, driven by the gate): a permit before each send,
    and a pause when Twilio answers 429 with ``Retry-After``."""

    max_wait: float

    def permit(self, api: str, account: str | None) -> None:
        """Wait for this send's permit; RateLimited when none is due within ``max_wait``."""

    async def permit_async(self, api: str, account: str | None) -> None:
        """The same, awaited."""

    def paused(self, api: str, account: str | None, seconds: float) -> None:
        """Twilio said to wait ``seconds``: no permit of the bucket before then."""


def retry_after(client: Client) -> float | None:
    """``Retry-After`` of the 429 the client's HttpClient last received, if it said one (the SDK's exception
    carries no headers; with several sends in flight on one client this may be another send's 429, which is
    the same account's throttling)."""
    response = getattr(getattr(client, "http_client", None), "_test_only_last_response", None)
    if getattr(response, "status_code", None) != 429:
        return None
    headers = getattr(response, "headers", None) or {}
    return parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))


def _throttled(exc: BaseException, client: Client, budget: SendBudget, api: str, account: str | None) -> None:
    """A 429 with ``Retry-After``: the bucket pauses for it; a wait past ``max_wait`` is RateLimited, a shorter
    one is what the retry waits (the backoff reads ``retry_after_seconds``)."""
    seconds = retry_after(client) if isinstance(exc, TwilioException) and safe_to_resend(exc) else None
    if seconds:
        budget.paused(api, account, seconds)
        if seconds > budget.max_wait:
            raise RateLimited(api, seconds) from exc
        exc.retry_after_seconds = seconds  # type: ignore[attr-defined]


def _hinted(
    create: Callable[..., T], client: Client, budget: SendBudget, api: str, account: str | None
) -> Callable[..., T]:
    def call(**kwargs: Any) -> T:
        try:
            return create(**kwargs)
        except Exception as exc:
            _throttled(exc, client, budget, api, account)
            raise

    return call


def _hinted_async(
    create: Callable[..., Awaitable[T]], client: Client, budget: SendBudget, api: str, account: str | None
) -> Callable[..., Awaitable[T]]:
    async def call(**kwargs: Any) -> T:
        try:
            return await create(**kwargs)
        except Exception as exc:
            _throttled(exc, client, budget, api, account)
            raise

    return call


def sent(action: Action, decision: Decision, resource: Any, notes: tuple[str, ...] = ()) -> Outcome:
    """The Outcome of a send that went out: Twilio's SID and status, the SDK's resource, and the decision with
    the reason codes its preparing added."""
    if notes:
        decision = replace(decision, reasons=(*decision.reasons, *notes))
    return Outcome(action, decision, resource.sid, resource.status, resource=resource)


class SendUnavailable(SendFailed, requests.RequestException):
    """Twilio could not be reached for a send (after the retries that were safe).

    ``may_have_sent`` is False only when the request never left (the connection was refused): a
    timeout or a dropped connection may have reached Twilio, which then sent.
    """

    def __init__(self, message: str, *, may_have_sent: bool) -> None:
        requests.RequestException.__init__(self, message)
        self.may_have_sent = may_have_sent

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_unavailable, (str(self), self.may_have_sent))


def _rebuild_unavailable(message: str, may_have_sent: bool) -> SendUnavailable:
    return SendUnavailable(message, may_have_sent=may_have_sent)


def translated(exc: Exception) -> Exception:
    """Gatekeeper's error for one twilio or requests exception, to be raised ``from`` it; others as they are."""
    if isinstance(exc, TwilioRestException):
        return SendRejected(exc.status, exc.uri, msg=exc.msg, code=exc.code, method=exc.method, details=exc.details)
    status: object = getattr(exc, "status", None)
    if isinstance(exc, TwilioException) and isinstance(status, int):  # an RFC 9457 answer from Twilio
        message = getattr(exc, "detail", None) or getattr(exc, "title", None) or str(exc)
        uri = str(getattr(exc, "uri", "") or "")
        method = str(getattr(exc, "method", None) or "POST")
        return SendRejected(status, uri, msg=str(message), code=getattr(exc, "code", None), method=method)
    if isinstance(exc, requests.RequestException) or network_error(exc):
        reached = not never_connected(exc)
        return SendUnavailable(f"Twilio unreachable: {type(exc).__name__}", may_have_sent=reached)
    return exc


@dataclass(frozen=True)
class SendPolicy:
    """How sends are retried: only when Twilio cannot have acted (never connected, or 429)."""

    max_retries: int = 2
    backoff: Backoff = field(
        default_factory=lambda: Backoff(base_ms=250, jitter_ms=250, max_retry_after_ms=5_000, rng=random.Random())  # noqa: S311
    )
    sleep: Callable[[float], None] = time.sleep
    sleep_async: Callable[[float], Awaitable[None]] = asyncio.sleep
    budget: SendBudget | None = None  # [rates]: a permit per send (None: no budget)

    def send(self, create: Callable[..., T], /, **kwargs: Any) -> T:
        """``create(**kwargs)`` (one SDK create), retrying what is safe; failures raised as Gatekeeper's errors."""
        try:
            return call_with_retries(
                partial(create, **kwargs),
                retry_if=safe_to_resend,
                max_retries=self.max_retries,
                wait=self.backoff,
                sleep=self.sleep,
            )
        except Exception as exc:
            ours = translated(exc)
            if ours is exc:
                raise
            raise ours from exc

    async def send_async(self, create: Callable[..., Awaitable[T]], /, **kwargs: Any) -> T:
        """``await create(**kwargs)`` (one SDK ``create_async``), under the same rules as :meth:`send`."""
        try:
            return await call_with_retries_async(
                partial(create, **kwargs),
                retry_if=safe_to_resend,
                max_retries=self.max_retries,
                wait=self.backoff,
                sleep=self.sleep_async,
            )
        except Exception as exc:
            ours = translated(exc)
            if ours is exc:
                raise
            raise ours from exc


def nothing_sent(exc: BaseException) -> bool:
    """Whether a failed send surely sent nothing, so the same request may be made again.

    Gatekeeper's own errors say so (``may_have_sent``); the SDK's argument errors come before any request.
    Anything else (an interrupt, a bug) may have struck after Twilio accepted the message.
    """
    if isinstance(exc, GatekeeperError):
        return not getattr(exc, "may_have_sent", False)
    return isinstance(exc, (ValueError, TypeError))


def sdk_params(request: SendRequest, action: Action) -> dict[str, Any]:
    """The caller's SDK keywords that go with ``action`` (see ``SendRequest.params_for``), None values left out."""
    params = request.params_for(action)
    return {k: v for k, v in params.items() if v is not None} if params else {}


def callback_for(request: SendRequest, action: Action, default: str | None) -> str | None:
    """The status callback of a send: the caller's when it was written for this API (a text's callback does
    not follow it onto the call it fell back to), else the configured ``default``."""
    if API_OF[action] == API_OF[request.asked]:
        given = request.status_callback
    else:
        given = request.call_status_callback if API_OF[action] == "calls" else None
    return given or default


def account_of(client: Client, request: SendRequest) -> Any:
    """The API account a send is made on: the subaccount the caller used, else the client's own."""
    api = client.api.v2010
    return api.accounts(request.account_sid) if request.account_sid else api.account
