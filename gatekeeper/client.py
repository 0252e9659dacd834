"""GatedClient: the twilio ``Client`` you already use, with the gate in front of every send.

Adopting it is a one-line change::

    client = GatedClient(Client(sid, token), gate)

``messages.create``, ``calls.create`` and
``verify.v2.services(sid).verifications.create`` are gated; everything else
(``client.lookups``, ``client.api``, ``messages.list``, ``messages(sid).fetch``
…) passes through unchanged. A refused call raises :class:`GateRefused`, a
``TwilioRestException`` with the code Twilio itself would have answered.

The drop-in never changes channel on its own: ``messages.create`` to a
landline raises 21614 unless ``[routing] dropin_reroute = true``, in which case
it places a voice call that says the body and returns the ``CallInstance``.
"""

from __future__ import annotations

from typing import Any

from twilio.base import values
from twilio.rest import Client

from gatekeeper.channels import voice
from gatekeeper.errors import GateRefused
from gatekeeper.gate import Gatekeeper
from gatekeeper.models import Action, Decision, Purpose
from gatekeeper.router import Channel
from gatekeeper.settings import Settings

_UNSET = values.unset


def _given(value: Any) -> Any:
    return None if value is _UNSET else value


class _Proxy:
    """Everything not defined here is the wrapped object's."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner(*args, **kwargs)


class _Gated(_Proxy):
    def __init__(self, inner: Any, gate: Gatekeeper, uri: str) -> None:
        super().__init__(inner)
        self._gate = gate
        self._uri = uri
        self._dropin_reroute = gate.settings.routing.dropin_reroute

    def _check(
        self, to: Any, purpose: Purpose, channel: Channel, *, sender: Any = None, country: str | None = None
    ) -> Decision:
        """The strict decision for the channel the caller chose; raises GateRefused when it is refused."""
        decision = self._gate._evaluate(
            str(to) if to is not None else "",
            purpose,
            country,
            channel=channel,
            sender=None if sender is _UNSET else sender,
            strict=True,
            reroute_landline=self._dropin_reroute and channel == "sms",
        )
        if decision.enforced and decision.action is Action.REFUSE:
            raise GateRefused(decision, code=decision.twilio_code or 21211, uri=self._uri)
        return decision


class GatedMessages(_Gated):
    def create(self, to: str, *, purpose: Purpose = "notify", country: str | None = None, **kwargs: Any) -> Any:
        """Gate, then ``messages.create`` with ``to`` in E.164 (or a voice call with ``dropin_reroute``)."""
        sender = kwargs.get("from_")
        if not sender or sender is _UNSET:
            sender = kwargs.get("messaging_service_sid")
        decision = self._check(to, purpose, "sms", sender=sender, country=country)
        if decision.enforced and decision.action is Action.VOICE:
            return self._reroute(decision, kwargs)
        return self._inner.create(to=decision.to, **kwargs)

    def _reroute(self, decision: Decision, kwargs: dict[str, Any]) -> Any:
        body, from_ = _given(kwargs.get("body")), _given(kwargs.get("from_"))
        if not body or not from_:
            raise GateRefused(decision, code=21614, uri=self._uri)  # nothing to say, or no caller ID
        gate = self._gate
        return voice.call(
            gate.client,
            gate.send_policy,
            to=decision.to,
            from_=from_,
            twiml=gate._twiml(body),
            status_callback=_given(kwargs.get("status_callback")),
        )


class GatedCalls(_Gated):
    def create(self, to: str, *, purpose: Purpose = "notify", country: str | None = None, **kwargs: Any) -> Any:
        """Gate, then ``calls.create`` with ``to`` in E.164. Voice reaches mobiles and landlines alike."""
        sender = _given(kwargs.get("from_"))
        decision = self._check(to, purpose, "voice", sender=sender, country=country)
        return self._inner.create(to=decision.to, **kwargs)


class GatedVerifications(_Gated):
    def create(self, to: str, channel: str, *, country: str | None = None, **kwargs: Any) -> Any:
        """Gate (purpose ``mfa``), then ``verifications.create``. Email addresses pass ungated."""
        if channel == "email":
            return self._inner.create(to=to, channel=channel, **kwargs)
        wanted: Channel = "voice" if channel == "call" else "sms"
        decision = self._check(to, "mfa", wanted, country=country)
        return self._inner.create(to=decision.to, channel=channel, **kwargs)


class GatedService(_Proxy):
    def __init__(self, inner: Any, gate: Gatekeeper) -> None:
        super().__init__(inner)
        self.verifications = GatedVerifications(inner.verifications, gate, inner._uri + "/Verifications")


class GatedServices(_Proxy):
    def __init__(self, inner: Any, gate: Gatekeeper) -> None:
        super().__init__(inner)
        self._gate = gate

    def __call__(self, sid: str) -> GatedService:
        return GatedService(self._inner(sid), self._gate)

    def get(self, sid: str) -> GatedService:
        return self(sid)


class GatedVerifyV2(_Proxy):
    def __init__(self, inner: Any, gate: Gatekeeper) -> None:
        super().__init__(inner)
        self.services = GatedServices(inner.services, gate)


class GatedVerify(_Proxy):
    def __init__(self, inner: Any, gate: Gatekeeper) -> None:
        super().__init__(inner)
        self.v2 = GatedVerifyV2(inner.v2, gate)
        self.services = self.v2.services


class GatedClient:
    """A twilio ``Client`` whose sends pass the gate first. Everything else is the client's own."""

    def __init__(self, twilio_client: Client, gate: Gatekeeper | None = None) -> None:
        self._client = twilio_client
        self.gate = gate or Gatekeeper(twilio_client)
        account = twilio_client.api.account
        self.messages = GatedMessages(account.messages, self.gate, account.messages._uri)
        self.calls = GatedCalls(account.calls, self.gate, account.calls._uri)
        self.verify = GatedVerify(twilio_client.verify, self.gate)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> GatedClient:
        gate = Gatekeeper.from_settings(settings)
        return cls(gate.client, gate)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
