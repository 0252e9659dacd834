"""Where a message or call goes: a phone number, a channel address, a SIP URI or a Client identity.

Pure: no Flask. Twilio takes more than phone numbers in ``To``/``From``:

* ``whatsapp:+14155550100`` (and ``rcs:``): a channel address resolved by its phone number,
  answered with the prefix kept; line type does not matter on these channels;
* ``messenger:<page-scoped id>``: Facebook Messenger, letters and digits, no phone number at all;
* ``sip:user@host[;params][?headers]`` (or ``sips:``) and ``client:<identity>``: Voice only.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from gatekeeper.sandbox.numbers import NumberProfile

AddressKind = Literal["number", "whatsapp", "rcs", "messenger", "sip", "client"]

_PREFIXES: dict[str, AddressKind] = {
    "whatsapp": "whatsapp",
    "rcs": "rcs",
    "messenger": "messenger",
    "sip": "sip",
    "sips": "sip",
    "client": "client",
}
# RFC 3261 in brief: a user part (unreserved, escapes, user-unreserved), a host name, IPv4 or
# [IPv6], an optional port, then ;params and ?headers. Twilio wants the user part (error 32223).
_SIP = re.compile(
    r"^sips?:[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+(?::[^@\s]*)?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?(?:;[^\s?]*)?(?:\?\S*)?$",
    re.IGNORECASE,
)
_CLIENT = re.compile(r"^client:[A-Za-z0-9_.@+\-]{1,256}$", re.IGNORECASE)
_MESSENGER = re.compile(r"^messenger:[A-Za-z0-9]{1,64}$", re.IGNORECASE)
#: Channels that carry no phone number: nothing to look up, no number profile.
ENDPOINT_KINDS: frozenset[str] = frozenset({"messenger", "sip", "client"})
#: Create-time codes that only SMS knows (line type, SMS Pumping Protection): not on WhatsApp/RCS.
SMS_ONLY_CREATE_ERRORS: frozenset[int] = frozenset({21614, 30450, 30453})
#: Delivery failures that only SMS knows: 30006 is the landline answer.
SMS_ONLY_DELIVERY_ERRORS: frozenset[int] = frozenset({30006})


@dataclass(frozen=True)
class Address:
    """``value`` as given (stripped) and its kind; ``valid`` says whether its shape is right.

    Numbers and phone-based channels are always "valid" here: the number book judges them.
    """

    value: str
    kind: AddressKind
    valid: bool = True

    @property
    def endpoint(self) -> bool:
        """True for addresses with no phone number behind them (Messenger, SIP, Client)."""
        return self.kind in ENDPOINT_KINDS


def parse_address(value: str) -> Address:
    """Classify a ``To``/``From`` value."""
    text = value.strip()
    prefix, sep, _ = text.partition(":")
    kind = _PREFIXES.get(prefix.lower()) if sep else None
    if kind is None:
        return Address(text, "number")
    if kind == "sip":
        return Address(text, kind, bool(_SIP.match(text)))
    if kind == "client":
        return Address(text, kind, bool(_CLIENT.match(text)))
    if kind == "messenger":
        return Address(text, kind, bool(_MESSENGER.match(text)))
    return Address(text, kind)


def channel_address(given: str, e164: str) -> str:
    """The ``to`` a message answers: ``e164``, with a phone-based channel's prefix kept."""
    prefix, sep, _ = given.strip().partition(":")
    return f"{prefix}:{e164}" if sep and prefix.lower() in ("whatsapp", "messenger", "rcs") else e164


def endpoint_profile(address: str) -> NumberProfile:
    """The profile of a Messenger, SIP or Client endpoint: delivered, answered, no number facts."""
    return NumberProfile(e164=address, line_type=None, sms_pumping_risk_score=0)


def channel_profile(profile: NumberProfile, kind: AddressKind) -> NumberProfile:
    """``profile`` as a message on channel ``kind`` sees it: WhatsApp and RCS ignore SMS-only rules."""
    if kind not in ("whatsapp", "rcs"):
        return profile
    create_error = None if profile.create_error in SMS_ONLY_CREATE_ERRORS else profile.create_error
    if profile.delivery_error_code in SMS_ONLY_DELIVERY_ERRORS:
        return dataclasses.replace(profile, create_error=create_error, delivery="delivered", delivery_error_code=None)
    return dataclasses.replace(profile, create_error=create_error)
