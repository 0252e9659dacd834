"""Voice: a call whose TwiML ``<Say>``s the message (the landline fallback), or the caller's own call."""

from __future__ import annotations

import re

from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from gatekeeper.channels.base import BaseChannel, Prepared, SendPolicy, account_of, callback_for, sdk_params
from gatekeeper.errors import InvalidArgument
from gatekeeper.models import Action, Decision, SendRequest

#: Twilio rejects inline TwiML longer than this.
MAX_TWIML_CHARS = 4000
#: What XML 1.0 cannot carry at all, escaped or not: C0 controls but tab, LF and CR; surrogates; U+FFFE, U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
CLEANED = "body:cleaned"


def sayable(text: str) -> tuple[str, bool]:
    """``text`` without the characters XML 1.0 forbids (a TwiML document cannot hold them), and whether any
    were removed. Raises InvalidArgument when nothing is left to say."""
    cleaned = _NOT_XML.sub("", text)
    if not cleaned.strip():
        raise InvalidArgument("the message has nothing to say once the characters XML cannot carry are removed")
    return cleaned, cleaned != text


def twiml(text: str, *, voice: str | None = None, language: str | None = None) -> str:
    """TwiML that says ``text`` (which :func:`sayable` has cleaned). The SDK escapes it, so a message cannot
    inject verbs."""
    response = VoiceResponse()
    response.say(text, voice=voice, language=language)
    xml = str(response)
    if len(xml) > MAX_TWIML_CHARS:
        raise InvalidArgument(
            f"the message is too long to say in one call ({len(xml)} > {MAX_TWIML_CHARS} characters of TwiML)"
        )
    return xml


class VoiceChannel(BaseChannel):
    """``calls.create``: a text said aloud in ``voice`` and ``language``, or the caller's own ``url``/``twiml``."""

    def __init__(
        self,
        policy: SendPolicy,
        *,
        voice: str | None = None,
        language: str | None = None,
        status_callback: str | None = None,
    ) -> None:
        self.policy = policy
        self.voice = voice
        self.language = language
        self.status_callback = status_callback  # for calls whose caller gave none, the landline fallback included

    def prepare(self, client: Client, action: Action, decision: Decision, request: SendRequest) -> Prepared:
        if not request.from_:
            raise InvalidArgument("a voice call needs from_ (a Messaging Service cannot place calls)")
        kwargs = sdk_params(request, action)
        kwargs["from_"] = request.from_
        callback = callback_for(request, action, self.status_callback)
        if callback is not None:
            kwargs["status_callback"] = callback
        notes: tuple[str, ...] = ()
        if request.body is not None:  # a text to say: the landline fallback, or a text rerouted by the drop-in
            text, cleaned = sayable(request.body)
            kwargs["twiml"] = twiml(text, voice=self.voice, language=self.language)
            notes = (CLEANED,) if cleaned else ()
        kwargs["to"] = decision.to
        return Prepared((account_of(client, request) if request.account_sid else client).calls, kwargs, notes)
