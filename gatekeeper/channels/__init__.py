"""Step 5, act: the only code that sends. One module per channel, and the registry of them.

A new channel is one module with a class that has the :class:`~gatekeeper.channels.base.Channel`
``send`` method, and one line in :func:`registry`.
"""

from __future__ import annotations

from collections.abc import Mapping

from gatekeeper.channels.base import Channel, SendPolicy, SendUnavailable, nothing_sent
from gatekeeper.channels.sms import MessagingChannel
from gatekeeper.channels.studio import StudioChannel
from gatekeeper.channels.totp import TotpChannel
from gatekeeper.channels.verify import VerifyChannel
from gatekeeper.channels.voice import VoiceChannel
from gatekeeper.models import Action

__all__ = ["Channel", "SendPolicy", "SendUnavailable", "nothing_sent", "registry"]


def registry(
    policy: SendPolicy,
    *,
    voice: str | None = None,
    language: str | None = None,
    status_callback: str | None = None,
    call_status_callback: str | None = None,
) -> Mapping[Action, Channel]:
    """The channel for every action the gate can take (all but ``REFUSE``); the callbacks are the defaults
    for messages and calls whose caller gave none."""
    messaging, verify = MessagingChannel(policy, status_callback=status_callback), VerifyChannel(policy)
    return {
        Action.SMS: messaging,
        Action.WHATSAPP: messaging,
        Action.MESSAGE: messaging,
        Action.VOICE: VoiceChannel(policy, voice=voice, language=language, status_callback=call_status_callback),
        Action.VERIFY_SMS: verify,
        Action.VERIFY_CALL: verify,
        Action.VERIFY_WHATSAPP: verify,
        Action.VERIFY_SNA: verify,
        Action.VERIFY_AUTO: verify,
        Action.EMAIL: verify,
        Action.STUDIO: StudioChannel(policy),
        Action.TOTP: TotpChannel(),
    }
