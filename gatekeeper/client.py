"""GatedClient: the twilio ``Client`` you already use, with the gate in front of every send.

Adopting it is a one-line change::

    client = GatedClient(Client(sid, token), gate)

Every SDK object reached through it is seen through the gate, wherever it sits in the SDK's
tree (``client.messages``, ``client.api.account.messages``, ``client.api.v2010.accounts(SUB)
.messages``, an ``AccountInstance`` fetched from ``client.api.accounts``, a page of them …):

* **sends are gated**: ``create`` on Messages, Calls, Verify verifications and Studio executions
  (v1 and v2) is :meth:`Gatekeeper.check` for the channel the caller chose, then
  :meth:`Gatekeeper.act`, which sends through the gate's channels with the wrapped client and the
  account the caller used;
* **any other creating call fails closed**: ``create…`` on a resource the gate does not know, a
  ``create_with_http_info``, or a raw ``client.request`` that is not a GET raises
  :class:`~gatekeeper.errors.UngatedCall` naming it, unless ``[routing] passthrough`` lists it;
* **reads pass through unchanged** (``fetch``, ``list``, ``stream``, ``page``, ``update``, ``delete``), and so
  does checking a Verify code (``verification_checks.create``), whose answer is counted for the guard's
  conversion-aware limits (``gate.record_verification``).

A refused call raises :class:`GateRefused`, a ``TwilioRestException`` with the code Twilio itself
would have answered. The drop-in never changes channel on its own: ``messages.create`` to a
landline raises 21614 unless ``[routing] dropin_reroute = true``, in which case it places a voice
call that says the body and returns the ``CallInstance``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from types import AsyncGeneratorType, GeneratorType
from typing import Any

from twilio.base import values
from twilio.base.domain import Domain
from twilio.base.instance_context import InstanceContext
from twilio.base.instance_resource import InstanceResource
from twilio.base.list_resource import ListResource
from twilio.base.page import Page
from twilio.base.version import Version
from twilio.rest import Client

from gatekeeper.aio import AsyncGatekeeper
from gatekeeper.errors import GateRefused, InvalidArgument, UngatedCall
from gatekeeper.gate import Gatekeeper
from gatekeeper.models import Action, Decision, Purpose, SendRequest
from gatekeeper.phone import mask_logs
from gatekeeper.router import VERIFY_CHANNELS
from gatekeeper.settings import Settings

_UNSET = values.unset
_SDK_OBJECTS = (Domain, Version, ListResource, InstanceContext, InstanceResource)
#: Creating calls that send nothing to anyone, passed without being listed: checking a Verify code, and
#: feedback on a message already sent.
NOT_SENDING: frozenset[str] = frozenset(
    {"verify.v2.service.verification_check.create", "api.v2010.account.message.feedback.create"}
)
#: Checking a Verify code: passed through, and an approval counted for the guard (conversion-aware limits).
CHECK_CALL = "verify.v2.service.verification_check.create"
_MESSAGE_FIELDS = ("body", "from_", "messaging_service_sid", "status_callback")
_CALL_FIELDS = ("from_", "status_callback")


def call_name(obj: object, method: str) -> str:
    """How ``[routing] passthrough`` names a call: the SDK module of the resource, then the method
    (``verify.v2.service.create``, ``api.v2010.account.incoming_phone_number.create``)."""
    module = type(obj).__module__.removeprefix("twilio.rest.")
    return f"{module}.{method}"


def _request(asked: Action, kwargs: dict[str, Any], named: tuple[str, ...], **more: Any) -> SendRequest:
    """A SendRequest from SDK keywords: those ``named`` are SendRequest fields of the same name, the rest params."""
    picked: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for name, value in kwargs.items():
        if value is not _UNSET:
            (picked if name in named else params)[name] = value
    return SendRequest(asked, params=params, **picked, **more)


class _Door:
    """What a gated client shares with every object seen through it."""

    def __init__(self, gate: Gatekeeper | AsyncGatekeeper, client: Client) -> None:
        self.gate = gate
        self.client = client
        self.passthrough = NOT_SENDING | frozenset(gate.settings.routing.passthrough)
        self.async_gate = isinstance(gate, AsyncGatekeeper)
        self.async_client = getattr(getattr(client, "http_client", None), "is_async", False) is True

    def wrap(self, value: Any) -> Any:
        if isinstance(value, _SDK_OBJECTS):
            return _Node(value, self)
        if isinstance(value, Page):
            return _Pages(value, self)
        if isinstance(value, list):
            return [self.wrap(v) for v in value]
        if isinstance(value, GeneratorType):
            return (self.wrap(v) for v in value)
        if isinstance(value, AsyncGeneratorType):  # ``stream_async``: its instances are gated too
            return self._wrap_each(value)
        return value

    async def _wrap_each(self, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for value in stream:
            yield self.wrap(value)

    def _cannot(self, asynchronous: bool) -> InvalidArgument:
        """Why a create of this kind cannot be gated here: an AsyncGatekeeper gates only ``create_async``; a
        blocking ``create`` needs a blocking HttpClient, ``create_async`` an async one. Raised before the gate
        decides (and pays for a Lookup)."""
        if self.async_gate and not asynchronous:
            return InvalidArgument("an AsyncGatekeeper gates the *_async calls: use create_async, or wrap a Gatekeeper")
        kind, other = ("create_async", "create") if asynchronous else ("create", "create_async")
        return InvalidArgument(f"this client's http_client cannot make {kind}: use {other}, or wrap another client")

    def send_built(
        self,
        build: Callable[..., _Asked],
        solution: dict[str, Any],
        called: str,
        uri: str,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """A gated ``create``: its arguments turned into what the gate is asked (``build``), then :meth:`send`."""
        return self.send(*build(self, solution, called, *args, **kwargs), uri)

    def send(self, to: Any, request: SendRequest, purpose: Purpose, country: str | None, uri: str) -> Any:
        """Check, then act with the wrapped client; the SDK resource the send returned."""
        if self.async_gate or self.async_client:
            raise self._cannot(asynchronous=False)
        gate: Gatekeeper = self.gate  # type: ignore[assignment]  # not an AsyncGatekeeper: async_gate is False
        request, key, day = _gate_keywords(request) if request.params else (request, None, None)
        target = to if type(to) is str else _text(to)
        decision = gate.check(
            target, request, purpose=purpose, country=country, uri=uri, client_key=key, last_verified=day
        )
        return gate.act(_sayable(decision, request, uri), request, client=self.client).resource

    async def send_async(self, to: Any, request: SendRequest, purpose: Purpose, country: str | None, uri: str) -> Any:
        """Check, then act with the SDK's ``*_async`` calls: awaited on an AsyncGatekeeper; on a Gatekeeper its
        decision runs in a worker thread, so the event loop never waits on a store or a Lookup."""
        gate, target = self.gate, _text(to)
        if not self.async_client:
            raise self._cannot(asynchronous=True)
        request, key, day = _gate_keywords(request)
        asked = {"purpose": purpose, "country": country, "uri": uri, "client_key": key, "last_verified": day}
        if isinstance(gate, AsyncGatekeeper):  # (self.async_gate, spelled so the type checker sees it)
            checked = await gate.check(target, request, **asked)
            return (await gate.act(_sayable(checked, request, uri), request, client=self.client)).resource
        check = partial(gate.check, target, request, **asked)
        decision = _sayable(await asyncio.to_thread(check), request, uri)
        return (await gate.act_async(decision, request, client=self.client)).resource

    def account_sid(self, solution: dict[str, Any]) -> str | None:
        """The subaccount a resource belongs to, None when it is the client's own account."""
        sid = solution.get("account_sid")
        return sid if sid and sid != self.client.account_sid else None


#: Keywords a create may carry for the gate, never sent to Twilio: who asks (the guard's client rules), and when the
#: caller last confirmed the number was the person's (Lookup's reassigned_number).
GATE_KEYWORDS = ("client_key", "last_verified")


def _gate_keywords(request: SendRequest) -> tuple[SendRequest, str | None, Any]:
    """``request`` without :data:`GATE_KEYWORDS`, and their values (``client_key`` as text)."""
    if not any(name in request.params for name in GATE_KEYWORDS):
        return request, None, None
    params = {name: value for name, value in request.params.items() if name not in GATE_KEYWORDS}
    key = request.params.get("client_key")
    return request._replace(params=params), None if key is None else str(key), request.params.get("last_verified")


def _text(to: Any) -> str:
    return to if isinstance(to, str) else "" if to is None else str(to)


def _sayable(decision: Decision, request: SendRequest, uri: str) -> Decision:
    """A text the drop-in may reroute to a call needs a body to say and a caller ID to say it from."""
    rerouted = decision.enforced and decision.action is Action.VOICE and request.asked is Action.SMS
    if rerouted and (not request.body or not request.from_):
        raise GateRefused(decision, code=21614, uri=uri)
    return decision


class _Node:
    """An SDK object seen through the gate: sends gated, other creating calls refused, the rest its own."""

    def __init__(self, inner: Any, door: _Door) -> None:
        self._inner = inner
        self._door = door

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name.startswith("create") and callable(value):
            return _creator(self._inner, name, self._door) or _refuser(self._inner, name, value, self._door)
        if callable(value) and not isinstance(value, _SDK_OBJECTS):
            return _through(value, self._door)  # a read (fetch, list …): what it returns is seen through the gate
        return self._door.wrap(value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._door.wrap(self._inner(*args, **kwargs))

    def __repr__(self) -> str:
        return f"<gated {self._inner!r}>"


class _Pages:
    """A page of results whose instances are seen through the gate."""

    def __init__(self, page: Page, door: _Door) -> None:
        self._page = page
        self._door = door

    def __iter__(self) -> Iterator[Any]:
        return (self._door.wrap(item) for item in self._page)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._page, name)
        if callable(value):  # next_page, previous_page and their _async: the page they fetch is seen through the gate
            return _through(value, self._door)
        return self._door.wrap(value)


def _through(method: Callable[..., Any], door: _Door) -> Callable[..., Any]:
    """``method`` as it is, its result (awaited, for a coroutine) seen through the gate."""
    if inspect.iscoroutinefunction(method):

        async def awaited(*args: Any, **kwargs: Any) -> Any:
            return door.wrap(await method(*args, **kwargs))

        return awaited
    return lambda *args, **kwargs: door.wrap(method(*args, **kwargs))


def _refuser(inner: Any, name: str, method: Callable[..., Any], door: _Door) -> Callable[..., Any]:
    """A creating call the gate does not know: passed through when listed in ``[routing] passthrough`` (or one
    of the few known to send nothing, :data:`NOT_SENDING`, in either its blocking or async form)."""
    called = call_name(inner, name)
    if call_name(inner, name.removesuffix("_async")) == CHECK_CALL:
        return _counted(method, door)
    if called in door.passthrough or call_name(inner, name.removesuffix("_async")) in door.passthrough:
        return _through(method, door)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise UngatedCall(called)

    return refuse


def _counted(method: Callable[..., Any], door: _Door) -> Callable[..., Any]:
    """``verification_checks.create`` (or ``_async``) as it is, Twilio's answer counted for the guard's
    conversion-aware limits (``gate.record_verification``: an approval, once per verification)."""

    def fields(checked: Any) -> tuple[str, str, str]:
        return str(getattr(checked, "to", "") or ""), str(getattr(checked, "sid", "") or ""), str(checked.status)

    if inspect.iscoroutinefunction(method):

        async def checked_async(*args: Any, **kwargs: Any) -> Any:
            checked = await method(*args, **kwargs)
            gate = door.gate
            if isinstance(gate, AsyncGatekeeper):
                await gate.record_verification(*fields(checked))
            else:  # a blocking gate's stores, off the event loop
                await asyncio.to_thread(gate.record_verification, *fields(checked))
            return door.wrap(checked)

        return checked_async

    def checked(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        if isinstance(door.gate, Gatekeeper):
            door.gate.record_verification(*fields(result))
        return door.wrap(result)

    return checked


_Asked = tuple[Any, SendRequest, Purpose, "str | None"]


# How each sending resource the gate knows turns its create's arguments into what the gate is asked:
# ``(door, the resource's path solution, the call's name, *the create's arguments)`` → (to, request, purpose, country).
def _on_the_account(asked: Action, fields: tuple[str, ...]) -> Callable[..., _Asked]:
    """Messages and Calls: ``to`` a number or an address, sent on the account of the resource's path."""

    def build(
        door: _Door,
        solution: dict[str, Any],
        called: str,
        to: str,
        *,
        purpose: Purpose = "notify",
        country: str | None = None,
        **kwargs: Any,
    ) -> _Asked:
        return to, _request(asked, kwargs, fields, account_sid=door.account_sid(solution)), purpose, country

    return build


def _verifications(
    door: _Door,
    solution: dict[str, Any],
    called: str,
    to: str,
    channel: str,
    *,
    country: str | None = None,
    **kwargs: Any,
) -> _Asked:
    known = VERIFY_CHANNELS.get(channel) if isinstance(channel, str) else None
    if known is None:
        names = ", ".join(VERIFY_CHANNELS)
        raise InvalidArgument(f"channel must be one of {names} to pass the gate, not {channel!r}")
    asked = known[1]
    email = to if asked is Action.EMAIL else None
    return to, _request(asked, kwargs, (), verify_service_sid=solution["service_sid"], email=email), "mfa", country


def _executions(
    door: _Door,
    solution: dict[str, Any],
    called: str,
    to: str,
    from_: str,
    *,
    purpose: Purpose = "notify",
    country: str | None = None,
    **kwargs: Any,
) -> _Asked:
    version = called.split(".")[1]  # studio.v1… or studio.v2…: created on the version the caller used
    request = _request(Action.STUDIO, kwargs, (), from_=from_, flow_sid=solution["flow_sid"], studio_version=version)
    return to, request, purpose, country


_SENDING: dict[str, Callable[..., _Asked]] = {
    "api.v2010.account.message.create": _on_the_account(Action.SMS, _MESSAGE_FIELDS),
    "api.v2010.account.call.create": _on_the_account(Action.VOICE, _CALL_FIELDS),
    "verify.v2.service.verification.create": _verifications,
    "studio.v2.flow.execution.create": _executions,
    "studio.v1.flow.execution.create": _executions,
}


def _creator(inner: Any, name: str, door: _Door) -> Callable[..., Any] | None:
    """The gated ``create`` or ``create_async`` of a sending resource the gate knows, or None (then refused)."""
    if name not in ("create", "create_async"):
        return None
    called = call_name(inner, "create")
    build = _SENDING.get(called)
    if build is None:
        return None
    solution: dict[str, Any] = getattr(inner, "_solution", {})
    uri: str = getattr(inner, "_uri", "")
    if name == "create":
        return partial(door.send_built, build, solution, called, uri)  # a partial: one frame fewer per send

    async def create_async(*args: Any, **kwargs: Any) -> Any:
        return await door.send_async(*build(door, solution, called, *args, **kwargs), uri)

    return create_async


class GatedClient:
    """A twilio ``Client`` whose sends pass the gate first. Everything else is the client's own.

    Without ``gate``, one with built-in defaults over ``twilio_client``: a ``Gatekeeper``, or an
    ``AsyncGatekeeper`` when the client's ``http_client`` is async (then only ``create_async`` sends).
    """

    def __init__(self, twilio_client: Client, gate: Gatekeeper | AsyncGatekeeper | None = None) -> None:
        self._client = twilio_client
        http = getattr(twilio_client, "http_client", None)
        mask_logs(getattr(http, "logger", None))
        if gate is None:
            gate = (
                AsyncGatekeeper(twilio_client)
                if getattr(http, "is_async", False) is True
                else Gatekeeper(twilio_client)
            )
        self.gate = gate
        self._door = _Door(gate, twilio_client)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> GatedClient:
        gate = Gatekeeper.from_settings(settings)
        return cls(gate.client, gate)

    def request(self, method: str, uri: str, *args: Any, **kwargs: Any) -> Any:
        """Twilio's raw request: a GET passes; anything else could send around the gate, so it is refused
        unless ``[routing] passthrough`` lists ``request``."""
        if str(method).upper() != "GET" and "request" not in self._door.passthrough:
            raise UngatedCall(f"request {str(method).upper()}")
        return self._client.request(method, uri, *args, **kwargs)

    async def request_async(self, method: str, uri: str, *args: Any, **kwargs: Any) -> Any:
        """The async raw request, under the same rule as :meth:`request`."""
        if str(method).upper() != "GET" and "request" not in self._door.passthrough:
            raise UngatedCall(f"request_async {str(method).upper()}")
        return await self._client.request_async(method, uri, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return self._door.wrap(getattr(self._client, name))
