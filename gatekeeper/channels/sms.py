"""SMS through Programmable Messaging."""

from __future__ import annotations

from typing import Any

from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance

from gatekeeper.channels.base import SendPolicy


def send(client: Client, policy: SendPolicy, *, to: str, body: str, **params: Any) -> MessageInstance:
    """``messages.create`` with ``to`` in E.164; ``params`` are the SDK's keywords (``from_``, …)."""
    kwargs = {k: v for k, v in params.items() if v is not None}
    return policy.send(lambda: client.messages.create(to=to, body=body, **kwargs))
