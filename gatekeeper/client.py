"""GatedClient: the twilio ``Client`` you already use, with the gate in front of every send.

Adopting it is a one-line change::

    client = GatedClient(Client(sid, token), gate)

``messages.create``, ``calls.create`` and
``verify.v2.services(sid).verifications.create`` are gated; everything else
(``client.lookups``, ``client.api``, ``messages.list``, ``messages(sid).fetch``
…) passes through unchanged. A refused call raises :class:`GateRefused`, a
``TwilioRestException`` with the code Twilio itself would have answered.

Each gated call is the gate's public pair: :meth:`Gatekeeper.check` for the channel the caller
chose, then :meth:`Gatekeeper.act`, which sends through the gate's channels with the wrapped client.
The drop-in never changes channel on its own: ``messages.create`` to a landline raises 21614 unless
``[routing] dropin_reroute = true``, in which case it places a voice call that says the body and
returns the ``CallInstance``.
"""

from __future__ import annotations

from typing import Any

from twilio.base import values
from twilio.rest import Client

from gatekeeper.errors import GateRefused, InvalidArgument
from gatekeeper.gate import Gatekeeper
from gatekeeper.models import Action, Purpose, SendRequest
from gatekeeper.phone import mask_logs
from gatekeeper.router import VERIFY_CHANNELS
from gatekeeper.settings import Settings

_UNSET = values.unset


def _request(asked: Action, kwargs: dict[str, Any], named: tuple[str, ...]) -> SendRequest:
    """A SendRequest from SDK keywords: those ``named`` are SendRequest fields of the same name, the rest params."""
    picked: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for name, value in kwargs.items():
        if value is not _UNSET:
            (picked if name in named else params)[name] = value
    return SendRequest(asked, params=params, **picked)


_MESSAGE_FIELDS = ("body", "from_", "messaging_service_sid", "status_callback")
_CALL_FIELDS = ("from_", "status_callback")


class _Proxy:
    """Everything not defined here is the wrapped object's."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner(*args, **kwargs)


class _Gated(_Proxy):
    def __init__(self, inner: Any, gate: Gatekeeper, client: Client, uri: str) -> None:
        super().__init__(inner)
        self._gate = gate
        self._client = client
        self._uri = uri

    def _send(self, to: Any, request: SendRequest, purpose: Purpose, country: str | None) -> Any:
        """Check, then act with the wrapped client; the SDK resource the send returned."""
        target = to if isinstance(to, str) else "" if to is None else str(to)
        decision = self._gate.check(target, request, purpose=purpose, country=country, uri=self._uri)
        rerouted = decision.enforced and decision.action is Action.VOICE and request.asked is Action.SMS
        if rerouted and (not request.body or not request.from_):  # nothing to say, or no caller ID to say it from
            raise GateRefused(decision, code=21614, uri=self._uri)
        return self._gate.act(decision, request, client=self._client).resource


class GatedMessages(_Gated):
    def create(self, to: str, *, purpose: Purpose = "notify", country: str | None = None, **kwargs: Any) -> Any:
        """Gate, then ``messages.create`` with ``to`` in E.164 (or a voice call with ``dropin_reroute``)."""
        return self._send(to, _request(Action.SMS, kwargs, _MESSAGE_FIELDS), purpose, country)


class GatedCalls(_Gated):
    def create(self, to: str, *, purpose: Purpose = "notify", country: str | None = None, **kwargs: Any) -> Any:
        """Gate, then ``calls.create`` with ``to`` in E.164. Voice reaches mobiles and landlines alike."""
        return self._send(to, _request(Action.VOICE, kwargs, _CALL_FIELDS), purpose, country)


class GatedVerifications(_Gated):
    def __init__(self, inner: Any, gate: Gatekeeper, client: Client, uri: str, service_sid: str) -> None:
        super().__init__(inner, gate, client, uri)
        self._service_sid = service_sid

    def create(self, to: str, channel: str, *, country: str | None = None, **kwargs: Any) -> Any:
        """Gate (purpose ``mfa``), then ``verifications.create``; ``channel="email"`` sends to the address ``to``.

        A channel the gate does not know is refused rather than sent ungated (fail closed).
        """
        known = VERIFY_CHANNELS.get(channel) if isinstance(channel, str) else None
        if known is None:
            names = ", ".join(VERIFY_CHANNELS)
            raise InvalidArgument(f"channel must be one of {names} to pass the gate, not {channel!r}")
        asked = known[1]
        params = {k: v for k, v in kwargs.items() if v is not _UNSET}
        email = to if asked is Action.EMAIL else None
        request = SendRequest(asked, verify_service_sid=self._service_sid, email=email, params=params)
        return self._send(to, request, "mfa", country)


class GatedService(_Proxy):
    def __init__(self, inner: Any, gate: Gatekeeper, client: Client) -> None:
        super().__init__(inner)
        uri = inner._uri + "/Verifications"
        self.verifications = GatedVerifications(inner.verifications, gate, client, uri, inner._solution["sid"])


class GatedServices(_Proxy):
    def __init__(self, inner: Any, gate: Gatekeeper, client: Client) -> None:
        super().__init__(inner)
        self._gate = gate
        self._client = client

    def __call__(self, sid: str) -> GatedService:
        return GatedService(self._inner(sid), self._gate, self._client)

    def get(self, sid: str) -> GatedService:
        return self(sid)


class GatedVerifyV2(_Proxy):
    def __init__(self, inner: Any, gate: Gatekeeper, client: Client) -> None:
        super().__init__(inner)
        self.services = GatedServices(inner.services, gate, client)


class GatedVerify(_Proxy):
    def __init__(self, inner: Any, gate: Gatekeeper, client: Client) -> None:
        super().__init__(inner)
        self.v2 = GatedVerifyV2(inner.v2, gate, client)
        self.services = self.v2.services


class GatedClient:
    """A twilio ``Client`` whose sends pass the gate first. Everything else is the client's own."""

    def __init__(self, twilio_client: Client, gate: Gatekeeper | None = None) -> None:
        self._client = twilio_client
        mask_logs(getattr(getattr(twilio_client, "http_client", None), "logger", None))
        self.gate = gate or Gatekeeper(twilio_client)
        account = twilio_client.api.account
        self.messages = GatedMessages(account.messages, self.gate, twilio_client, account.messages._uri)
        self.calls = GatedCalls(account.calls, self.gate, twilio_client, account.calls._uri)
        self.verify = GatedVerify(twilio_client.verify, self.gate, twilio_client)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> GatedClient:
        gate = Gatekeeper.from_settings(settings)
        return cls(gate.client, gate)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
