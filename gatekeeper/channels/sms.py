"""SMS through Programmable Messaging."""

from __future__ import annotations

from twilio.rest import Client

from gatekeeper.channels.base import SendPolicy, sdk_params
from gatekeeper.models import Action, Decision, Outcome, SendRequest


class SmsChannel:
    """``messages.create`` to the decided number, with the caller's sender, body and SDK keywords."""

    def __init__(self, policy: SendPolicy) -> None:
        self.policy = policy

    def send(self, client: Client, action: Action, decision: Decision, request: SendRequest) -> Outcome:
        kwargs = sdk_params(request, action)
        # Written out rather than looped: this runs on every send.
        if request.body is not None:
            kwargs["body"] = request.body
        if request.from_ is not None:
            kwargs["from_"] = request.from_
        if request.messaging_service_sid is not None:
            kwargs["messaging_service_sid"] = request.messaging_service_sid
        if request.status_callback is not None:
            kwargs["status_callback"] = request.status_callback
        message = self.policy.send(client.messages.create, to=decision.to, **kwargs)
        return Outcome(action, decision, message.sid, message.status, resource=message)
