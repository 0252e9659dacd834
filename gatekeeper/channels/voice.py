"""Voice: a call whose TwiML ``<Say>``s the message (the landline fallback)."""

from __future__ import annotations

from typing import Any

from twilio.rest import Client
from twilio.rest.api.v2010.account.call import CallInstance
from twilio.twiml.voice_response import VoiceResponse

from gatekeeper.channels.base import SendPolicy

#: Twilio rejects inline TwiML longer than this.
MAX_TWIML_CHARS = 4000


def twiml(text: str, *, voice: str | None = None, language: str | None = None) -> str:
    """TwiML that says ``text``. The SDK escapes it, so a message cannot inject verbs."""
    response = VoiceResponse()
    response.say(text, voice=voice, language=language)
    xml = str(response)
    if len(xml) > MAX_TWIML_CHARS:
        raise ValueError(
            f"the message is too long to say in one call ({len(xml)} > {MAX_TWIML_CHARS} characters of TwiML)"
        )
    return xml


def call(client: Client, policy: SendPolicy, *, to: str, **params: Any) -> CallInstance:
    """``calls.create`` with ``to`` in E.164; ``params`` carry ``from_`` and ``twiml`` or ``url``."""
    kwargs = {k: v for k, v in params.items() if v is not None}
    return policy.send(lambda: client.calls.create(to=to, **kwargs))
