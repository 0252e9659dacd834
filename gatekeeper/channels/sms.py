"""Programmable Messaging: SMS, and the channels Twilio reaches through it (WhatsApp, Messenger, RCS).

One ``messages.create`` serves them all: the channel is in the ``To`` address the gate decided
(``whatsapp:+1…`` keeps its prefix), so SMS, WhatsApp and other messages share this class.
"""

from __future__ import annotations

from twilio.rest import Client

from gatekeeper.channels.base import BaseChannel, Prepared, SendPolicy, account_of, callback_for, sdk_params
from gatekeeper.models import Action, Decision, SendRequest


class MessagingChannel(BaseChannel):
    """``messages.create`` to the decided address, with the caller's sender, body and SDK keywords."""

    def __init__(self, policy: SendPolicy, *, status_callback: str | None = None) -> None:
        self.policy = policy
        self.status_callback = status_callback  # for sends whose caller gave none

    def prepare(self, client: Client, action: Action, decision: Decision, request: SendRequest) -> Prepared:
        kwargs = sdk_params(request, action)
        # Written out rather than looped: this runs on every send.
        if request.body is not None:
            kwargs["body"] = request.body
        if request.from_ is not None:
            kwargs["from_"] = request.from_
        if request.messaging_service_sid is not None:
            kwargs["messaging_service_sid"] = request.messaging_service_sid
        callback = callback_for(request, action, self.status_callback)
        if callback is not None:
            kwargs["status_callback"] = callback
        kwargs["to"] = decision.to
        return Prepared((account_of(client, request) if request.account_sid else client).messages, kwargs)
