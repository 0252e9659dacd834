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
* **reads pass through unchanged** (``fetch``, ``list``, ``stream``, ``page``, ``update``, ``delete``).

A refused call raises :class:`GateRefused`, a ``TwilioRestException`` with the code Twilio itself
would have answered. The drop-in never changes channel on its own: ``messages.create`` to a
landline raises 21614 unless ``[routing] dropin_reroute = true``, in which case it places a voice
call that says the body and returns the ``CallInstance``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from types import GeneratorType
from typing import Any

from twilio.base import values
from twilio.base.domain import Domain
from twilio.base.instance_context import InstanceContext
from twilio.base.instance_resource import InstanceResource
from twilio.base.list_resource import ListResource
from twilio.base.page import Page
from twilio.base.version import Version
from twilio.rest import Client

from gatekeeper.errors import GateRefused, InvalidArgument, UngatedCall
from gatekeeper.gate import Gatekeeper
from gatekeeper.models import Action, Purpose, SendRequest
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

    def __init__(self, gate: Gatekeeper, client: Client) -> None:
        self.gate = gate
        self.client = client
        self.passthrough = NOT_SENDING | frozenset(gate.settings.routing.passthrough)

    def wrap(self, value: Any) -> Any:
        if isinstance(value, _SDK_OBJECTS):
            return _Node(value, self)
        if isinstance(value, Page):
            return _Pages(value, self)
        if isinstance(value, list):
            return [self.wrap(v) for v in value]
        if isinstance(value, GeneratorType):
            return (self.wrap(v) for v in value)
        return value

    def send(self, to: Any, request: SendRequest, purpose: Purpose, country: str | None, uri: str) -> Any:
        """Check, then act with the wrapped client; the SDK resource the send returned."""
        target = to if isinstance(to, str) else "" if to is None else str(to)
        decision = self.gate.check(target, request, purpose=purpose, country=country, uri=uri)
        rerouted = decision.enforced and decision.action is Action.VOICE and request.asked is Action.SMS
        if rerouted and (not request.body or not request.from_):  # nothing to say, or no caller ID to say it from
            raise GateRefused(decision, code=21614, uri=uri)
        return self.gate.act(decision, request, client=self.client).resource

    def account_sid(self, solution: dict[str, Any]) -> str | None:
        """The subaccount a resource belongs to, None when it is the client's own account."""
        sid = solution.get("account_sid")
        return sid if sid and sid != self.client.account_sid else None


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
        return self._door.wrap(getattr(self._page, name))


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
    if called in door.passthrough or call_name(inner, name.removesuffix("_async")) in door.passthrough:
        return _through(method, door)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise UngatedCall(called)

    return refuse


def _creator(inner: Any, name: str, door: _Door) -> Callable[..., Any] | None:
    """The gated ``create`` of a sending resource the gate knows, or None."""
    if name != "create":
        return None  # create_async and create_with_http_info: not through the gate here, so refused
    called = call_name(inner, name)
    uri: str = getattr(inner, "_uri", "")
    solution: dict[str, Any] = getattr(inner, "_solution", {})
    if called == "api.v2010.account.message.create":

        def messages(to: str, *, purpose: Purpose = "notify", country: str | None = None, **kwargs: Any) -> Any:
            request = _request(Action.SMS, kwargs, _MESSAGE_FIELDS, account_sid=door.account_sid(solution))
            return door.send(to, request, purpose, country, uri)

        return messages
    if called == "api.v2010.account.call.create":

        def calls(to: str, *, purpose: Purpose = "notify", country: str | None = None, **kwargs: Any) -> Any:
            request = _request(Action.VOICE, kwargs, _CALL_FIELDS, account_sid=door.account_sid(solution))
            return door.send(to, request, purpose, country, uri)

        return calls
    if called == "verify.v2.service.verification.create":

        def verifications(to: str, channel: str, *, country: str | None = None, **kwargs: Any) -> Any:
            known = VERIFY_CHANNELS.get(channel) if isinstance(channel, str) else None
            if known is None:
                names = ", ".join(VERIFY_CHANNELS)
                raise InvalidArgument(f"channel must be one of {names} to pass the gate, not {channel!r}")
            asked = known[1]
            email = to if asked is Action.EMAIL else None
            request = _request(asked, kwargs, (), verify_service_sid=solution["service_sid"], email=email)
            return door.send(to, request, "mfa", country, uri)

        return verifications
    if called in ("studio.v2.flow.execution.create", "studio.v1.flow.execution.create"):

        def executions(
            to: str, from_: str, *, purpose: Purpose = "notify", country: str | None = None, **kwargs: Any
        ) -> Any:
            request = _request(Action.STUDIO, kwargs, (), from_=from_, flow_sid=solution["flow_sid"])
            return door.send(to, request, purpose, country, uri)

        return executions
    return None


class GatedClient:
    """A twilio ``Client`` whose sends pass the gate first. Everything else is the client's own."""

    def __init__(self, twilio_client: Client, gate: Gatekeeper | None = None) -> None:
        self._client = twilio_client
        mask_logs(getattr(getattr(twilio_client, "http_client", None), "logger", None))
        self.gate = gate or Gatekeeper(twilio_client)
        self._door = _Door(self.gate, twilio_client)

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
