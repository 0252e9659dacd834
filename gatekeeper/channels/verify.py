"""Verify v2: one-time codes by SMS, call or email."""

from __future__ import annotations

from typing import Any

from twilio.rest import Client
from twilio.rest.verify.v2.service.verification import VerificationInstance

from gatekeeper.channels.base import SendPolicy


def start(
    client: Client, policy: SendPolicy, *, service_sid: str, to: str, channel: str, **params: Any
) -> VerificationInstance:
    """``verifications.create``: ``channel`` is ``sms``, ``call`` or ``email`` (``to`` then an address)."""
    kwargs = {k: v for k, v in params.items() if v is not None}
    service = client.verify.v2.services(service_sid)
    return policy.send(lambda: service.verifications.create(to=to, channel=channel, **kwargs))
