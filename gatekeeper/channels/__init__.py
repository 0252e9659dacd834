"""Step 5, act: the only code that sends. One module per channel, and the registry of them.

A new channel is one module with a class that has the :class:`~gatekeeper.channels.base.Channel`
``send`` method, and one line in :func:`registry`.
"""

from __future__ import annotations

from collections.abc import Mapping

from gatekeeper.channels.base import Channel, SendPolicy, SendUnavailable, nothing_sent
from gatekeeper.channels.sms import SmsChannel
from gatekeeper.channels.totp import TotpChannel
from gatekeeper.channels.verify import VerifyChannel
from gatekeeper.channels.voice import VoiceChannel
from gatekeeper.models import Action

__all__ = ["Channel", "SendPolicy", "SendUnavailable", "nothing_sent", "registry"]


def registry(policy: SendPolicy, *, voice: str | None = None, language: str | None = None) -> Mapping[Action, Channel]:
    """The channel for every action the gate can take (all but ``REFUSE``)."""
    verify = VerifyChannel(policy)
    return {
        Action.SMS: SmsChannel(policy),
        Action.VOICE: VoiceChannel(policy, voice=voice, language=language),
        Action.VERIFY_SMS: verify,
        Action.VERIFY_CALL: verify,
        Action.EMAIL: verify,
        Action.TOTP: TotpChannel(),
    }
