"""Voice: a call whose TwiML ``<Say>``s the message (the landline fallback), or the caller's own call."""

from __future__ import annotations

from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from gatekeeper.channels.base import BaseChannel, Prepared, SendPolicy, account_of, callback_for, sdk_params
from gatekeeper.errors import InvalidArgument
from gatekeeper.models import Action, Decision, SendRequest

#: Twilio rejects inline TwiML longer than this.
MAX_TWIML_CHARS = 4000


def twiml(text: str, *, voice: str | None = None, language: str | None = None) -> str:
    """TwiML that says ``text``. The SDK escapes it, so a message cannot inject verbs."""
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
        if request.body is not None:  # a text to say: the landline fallback, or a text rerouted by the drop-in
            kwargs["twiml"] = twiml(request.body, voice=self.voice, language=self.language)
        kwargs["to"] = decision.to
        return Prepared((account_of(client, request) if request.account_sid else client).calls, kwargs)
