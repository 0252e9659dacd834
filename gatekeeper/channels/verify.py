"""Verify v2: one-time codes by SMS, call or email."""

from __future__ import annotations

from twilio.rest import Client

from gatekeeper.channels.base import BaseChannel, Prepared, SendPolicy, sdk_params
from gatekeeper.errors import InvalidArgument
from gatekeeper.models import Action, Decision, SendRequest
from gatekeeper.phone import is_email

#: Verify's own channel name for each action.
VERIFY_CHANNEL: dict[Action, str] = {
    Action.VERIFY_SMS: "sms",
    Action.VERIFY_CALL: "call",
    Action.VERIFY_WHATSAPP: "whatsapp",
    Action.VERIFY_SNA: "sna",
    Action.VERIFY_AUTO: "auto",
    Action.EMAIL: "email",
}


class VerifyChannel(BaseChannel):
    """``verify.v2.services(sid).verifications.create``: a code by SMS, call, WhatsApp, SNA or Verify's own
    choice (``auto``) to the decided number, or by email to the request's address."""

    def __init__(self, policy: SendPolicy) -> None:
        self.policy = policy

    def prepare(self, client: Client, action: Action, decision: Decision, request: SendRequest) -> Prepared:
        service_sid = request.verify_service_sid
        if not service_sid:
            raise InvalidArgument("verify_service_sid is required for Verify SMS, call and email")
        to = decision.to
        if action is Action.EMAIL:
            if request.email is None or not is_email(request.email):
                raise InvalidArgument("the email channel needs email= an address like name@example.com")
            to = request.email.strip()
        params = sdk_params(request, action)
        params.update(to=to, channel=VERIFY_CHANNEL[action])
        return Prepared(client.verify.v2.services(service_sid).verifications, params)
