"""Step 1, normalize: the local verdict on a phone number, free and pure.

``phonenumbers`` parses, validates and formats (about 70 µs a number); a
bounded LRU in front of it makes a repeated number nearly free, which is what
keeps the gate's hot path cheap. Also here: ``mask`` and ``digest``, the only
ways a number (or an email address) may appear in logs and audit records.
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import replace
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberType

from gatekeeper.errors import InvalidArgumentType, InvalidNumber
from gatekeeper.masking import mask as mask  # noqa: PLC0414 - re-exported; the rule lives in masking.py
from gatekeeper.masking import mask_text as mask_text  # noqa: PLC0414
from gatekeeper.models import Phone

_MAX_INPUT = 64  # longer input is not a phone number; refuse before paying for a parse
_SHORT_CODE = re.compile(r"\d{3,6}")
_ALPHANUMERIC = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 \-_.&+]{1,11}")
_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")

# phonenumbers' types in Lookup v2's words; ambiguous types (FIXED_LINE_OR_MOBILE,
# the whole of North America) stay None so only Lookup answers them.
_LOCAL_LINE_TYPES: dict[int, str] = {
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE: "landline",
    PhoneNumberType.VOIP: "nonFixedVoip",
    PhoneNumberType.TOLL_FREE: "tollFree",
    PhoneNumberType.PREMIUM_RATE: "premium",
    PhoneNumberType.SHARED_COST: "sharedCost",
    PhoneNumberType.PERSONAL_NUMBER: "personal",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
}


def normalize(raw: str, country: str | None = None) -> Phone:
    """Parse ``raw`` with ``country`` (ISO-2) as the hint for national formats.

    Never raises: a string that is not a reachable number comes back with
    ``problem`` set (``not_a_number``, ``impossible``, ``invalid``,
    ``short_code``, ``alphanumeric``, ``address``). Results are cached (bounded LRU).

    Channel addresses keep their channel: ``whatsapp:`` and ``rcs:`` have the number behind them
    parsed like any number; ``messenger:<id>``, ``sip:user@host`` and ``client:<identity>`` are
    checked for shape only (``problem="address"`` when the shape is wrong).
    """
    if country is not None and not isinstance(country, str):
        kind = type(country).__name__
        raise InvalidArgumentType(f"country must be an ISO 3166 alpha-2 code such as 'US', not {kind}")
    if not isinstance(raw, str):
        return Phone(raw=repr(raw)[:_MAX_INPUT], kind="invalid", problem="not_a_number")
    return _normalize(raw, country.upper() if country else None)


@lru_cache(maxsize=65_536)
def _normalize(raw: str, country: str | None) -> Phone:
    text = raw.strip()
    scheme, colon, rest = text.partition(":")
    if colon and scheme.lower() in _ADDRESS_SHAPES:
        return _address(text, scheme.lower(), rest.strip(), country)
    if not text or len(text) > _MAX_INPUT:
        return Phone(raw=text[:_MAX_INPUT], kind="invalid", problem="not_a_number")
    if _SHORT_CODE.fullmatch(text):
        return Phone(raw=text, kind="short_code", region=country, problem="short_code")
    if _ALPHANUMERIC.fullmatch(text) and not any(c.isdigit() for c in text[:1]) and "+" not in text[:1]:
        return Phone(raw=text, kind="alphanumeric", problem="alphanumeric")
    try:
        parsed = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        return Phone(raw=text, kind="invalid", problem="not_a_number")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    calling_code = parsed.country_code
    if not phonenumbers.is_possible_number(parsed):
        return Phone(raw=text, kind="invalid", e164=e164, calling_code=calling_code, problem="impossible")
    if not phonenumbers.is_valid_number(parsed):
        return Phone(raw=text, kind="invalid", e164=e164, calling_code=calling_code, problem="invalid")
    region = phonenumbers.region_code_for_number(parsed)
    return Phone(
        raw=text,
        kind="e164",
        e164=e164,
        region=region if region and region != "001" else None,
        calling_code=calling_code,
        local_line_type=_LOCAL_LINE_TYPES.get(phonenumbers.number_type(parsed)),
    )


# sip: a user part and a host, then URI parameters; client: Twilio's identity characters; messenger: a page-scoped id.
_ADDRESS_SHAPES: dict[str, re.Pattern[str] | None] = {
    "whatsapp": None,  # a number: parsed as one
    "rcs": None,
    "messenger": re.compile(r"[A-Za-z0-9_.\-]{1,128}"),
    "sip": re.compile(r"[^\s@:;]+@[A-Za-z0-9.\-\[\]:]+(;[^\s]*)?"),
    "client": re.compile(r"[A-Za-z0-9_.\-]{1,121}"),
}


def _address(text: str, channel: str, rest: str, country: str | None) -> Phone:
    shape = _ADDRESS_SHAPES[channel]
    if shape is None:  # a number behind the channel's prefix
        inner = _normalize(rest, country)
        if not inner.ok or inner.e164 is None:
            return replace(inner, raw=text[:_MAX_INPUT], channel=channel)
        return replace(inner, raw=text, channel=channel, address=f"{channel}:{inner.e164}")
    if len(rest) > 2 * _MAX_INPUT or not shape.fullmatch(rest):
        return Phone(raw=text[: 2 * _MAX_INPUT], kind="invalid", channel=channel, problem="address")
    return Phone(raw=text, kind="address", channel=channel, address=f"{channel}:{rest}")


def to_e164(raw: str, country: str | None = None) -> str:
    """The E.164 form of a reachable number, or :class:`InvalidNumber` saying why not."""
    phone = normalize(raw, country)
    if not phone.ok or phone.e164 is None:
        shown = mask(phone.e164) if phone.e164 else "the input"
        raise InvalidNumber(f"{shown} is not a reachable phone number ({phone.problem})", reason=phone.problem or "")
    return phone.e164


def sender_scope(value: str, country: str | None = None) -> str:
    """The opt-out scope of a sender: a Messaging Service SID, an E.164 number, a short code or an alphanumeric ID."""
    text = value.strip()
    if _SERVICE_SID.fullmatch(text):
        return text
    phone = normalize(text, country)
    if phone.ok and phone.to is not None and phone.kind in ("e164", "address"):
        return phone.to  # a WhatsApp sender is its own scope: whatsapp:+1…, apart from SMS from +1…
    if phone.kind in ("short_code", "alphanumeric"):
        return phone.raw
    raise InvalidNumber(
        "the sender is not a number, short code, alphanumeric ID or Messaging Service SID", reason="invalid_sender"
    )


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def is_email(value: str) -> bool:
    """Shaped like an email address (``name@example.com``): what Verify's email channel can send to."""
    return bool(_EMAIL.fullmatch(value.strip()))


class MaskNumbers(logging.Filter):
    """A log filter that masks every phone number in a record's message, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


#: Loggers that print request URLs and parameters (a Lookup URL holds the number in its path).
HTTP_LOGGERS = ("twilio.http_client", "twilio.async_http_client", "urllib3.connectionpool")
_MASK = MaskNumbers()


def mask_logs(*extra: object) -> None:
    """Mask numbers in the records of twilio's and urllib3's HTTP loggers, and of any ``extra`` logger given
    (a twilio client's own ``http_client.logger``). Idempotent: each logger gets the filter once."""
    loggers = [logging.getLogger(name) for name in HTTP_LOGGERS]
    loggers += [x for x in extra if isinstance(x, logging.Logger)]
    for logger in loggers:
        if _MASK not in logger.filters:
            logger.addFilter(_MASK)


@lru_cache(maxsize=8_192)
def digest(e164: str, key: bytes = b"") -> str:
    """A stable pseudonym for a number (keyed HMAC-SHA256 when a key is configured), for audit records."""
    return hmac.digest(key, e164.encode(), "sha256").hex()[:32]  # one C call: the hot path meets new numbers


@lru_cache(maxsize=8_192)
def pseudonyms(e164: str, key: bytes = b"") -> tuple[str, str]:
    """``(mask(e164), digest(e164, key))`` in one cached call, for the audit on every decision."""
    return mask(e164), digest(e164, key)
