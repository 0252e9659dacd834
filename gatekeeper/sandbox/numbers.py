"""Fixture phone numbers for the sandbox: what Lookup answers and how sends to a number end.

Pure: no Flask, no network. Three sources, in order:

1. overrides from config or the control API (``NumberBook.override``),
2. the fixtures in :data:`FIXTURES` (house fixtures plus Twilio's magic test numbers),
3. anything else that parses as a phone number gets a profile derived from a hash of its
   E.164 form, so the same number answers the same way on every run and machine.

Validity of non-fixture numbers is judged with ``phonenumbers``, and the reasons are spelled
as Lookup v2's ``validation_errors`` (``TOO_SHORT``, ``TOO_LONG``, ``INVALID_BUT_POSSIBLE`` ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType, ValidationResult

from gatekeeper.models import LINE_TYPES
from gatekeeper.phone import mask

#: The documented sandbox test account. Not a real Twilio credential; it only opens this emulator.
TEST_ACCOUNT_SID = "AC" + "5a4db0c0ffee5a4db0c0ffee5a4db0c0"
#: Auth token of :data:`TEST_ACCOUNT_SID`.
TEST_AUTH_TOKEN = "sandbox-auth-token-0123456789abcd"  # noqa: S105  (a published test credential)
#: An API key (SID + secret) that belongs to :data:`TEST_ACCOUNT_SID`.
TEST_API_KEY_SID = "SK" + "5a4db0c0ffee5a4db0c0ffee5a4db0c0"
TEST_API_KEY_SECRET = "sandbox-api-key-secret-0123456789"  # noqa: S105  (a published test credential)
#: A subaccount of :data:`TEST_ACCOUNT_SID`: the parent's credentials also act on its paths.
TEST_SUBACCOUNT_SID = "AC" + "5ab0c0ffee5ab0c0ffee5ab0c0ffee5a"
#: Auth token of :data:`TEST_SUBACCOUNT_SID`; its resources' status callbacks are signed with it.
TEST_SUBACCOUNT_AUTH_TOKEN = "sandbox-subaccount-token-0123456"  # noqa: S105  (a published test credential)

Delivery = Literal["delivered", "undelivered", "failed"]
CallOutcome = Literal["completed", "busy", "no-answer", "failed"]

DELIVERIES: frozenset[str] = frozenset({"delivered", "undelivered", "failed"})
CALL_OUTCOMES: frozenset[str] = frozenset({"completed", "busy", "no-answer", "failed"})
#: Line types whose carrier fields Lookup documents as null.
NO_CARRIER_TYPES: frozenset[str] = frozenset(
    {"personal", "tollFree", "premium", "sharedCost", "uan", "voicemail", "pager", "unknown"}
)
_E164_SHAPE = re.compile(r"^\+[0-9]{8,15}$")
_PHONE_CHARS = re.compile(r"^[+0-9 ().\-]+$")


@dataclass(frozen=True)
class NumberProfile:
    """Everything the sandbox knows about one number.

    ``create_error`` is the Twilio code a Messages create to this number answers (HTTP 400);
    ``call_create_error`` is the same for Calls (Twilio uses different codes for voice);
    ``verify_error`` the same for a Verify verification to it (status from ``VERIFY_ERRORS``).
    ``delivery``/``delivery_error_code`` say how an accepted message ends; ``call_outcome``
    how a call ends. ``validation_errors`` is non-empty only when ``valid`` is False.
    """

    e164: str
    valid: bool = True
    line_type: str | None = "mobile"
    carrier_name: str | None = None
    mcc: str | None = None
    mnc: str | None = None
    caller_name: str | None = None
    caller_type: str | None = None
    country_code: str | None = None
    calling_country_code: str | None = None
    national_format: str | None = None
    sms_pumping_risk_score: int = 5
    number_blocked: bool = False  # Lookup's sms_pumping_risk.number_blocked
    sim_swapped: bool = False  # Lookup's sim_swap.last_sim_swap.swapped_in_period
    line_status: str = "active"  # Lookup's line_status.status
    reassigned_on: str | None = None  # YYYYMMDD the number changed hands: reassigned_number says yes before it
    create_error: int | None = None
    delivery: Delivery = "delivered"
    delivery_error_code: int | None = None
    call_create_error: int | None = None
    call_outcome: CallOutcome = "completed"
    call_duration_seconds: int = 17
    validation_errors: tuple[str, ...] = ()
    verify_error: int | None = None

    @property
    def carrier_risk_category(self) -> str:
        """Lookup's coarse bucket for ``sms_pumping_risk_score``."""
        if self.sms_pumping_risk_score >= 75:
            return "high"
        if self.sms_pumping_risk_score >= 40:
            return "moderate"
        return "low"


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(NumberProfile))


# Runs of 5+ digits may be phone numbers; SIDs lose a few digits too, which is harmless.
_DIGIT_RUN = re.compile(r"\d{5,}")


def mask_path(text: str) -> str:
    """``text`` (a URL path, a request line) with every long digit run's last four digits masked."""
    return _DIGIT_RUN.sub(lambda m: m.group(0)[:-4] + "****", text)


def _us(e164: str, national: str, **fields: Any) -> NumberProfile:
    base: dict[str, Any] = {
        "country_code": "US",
        "calling_country_code": "1",
        "national_format": national,
    }
    base.update(fields)
    return NumberProfile(e164=e164, **base)


_TMO: dict[str, Any] = {"carrier_name": "T-Mobile USA, Inc.", "mcc": "310", "mnc": "260"}
_VZW: dict[str, Any] = {"carrier_name": "Verizon Wireless", "mcc": "311", "mnc": "480"}
_US_MOBILE = _us(
    "+14155550100",
    "(415) 555-0100",
    line_type="mobile",
    caller_name="ALEX SANDBOX",
    caller_type="CONSUMER",
    **_TMO,
)

#: House fixtures and Twilio's test-credential "magic" numbers, keyed by E.164.
FIXTURES: dict[str, NumberProfile] = {
    p.e164: p
    for p in (
        _US_MOBILE,
        _us(
            "+14155550101",
            "(415) 555-0101",
            line_type="landline",
            carrier_name="Pacific Bell",
            mcc="310",
            caller_name="ACME PLUMBING",
            caller_type="BUSINESS",
            delivery="undelivered",
            delivery_error_code=30006,
        ),
        _us(
            "+14155550102",
            "(415) 555-0102",
            line_type="nonFixedVoip",
            carrier_name="Twilio - SMS/MMS-SVR",
            mcc="240",
            mnc="38",
            caller_name="SAM VIRTUAL",
            caller_type="CONSUMER",
            sms_pumping_risk_score=35,
        ),
        _us(
            "+14155550103",
            "(415) 555-0103",
            line_type="fixedVoip",
            carrier_name="Comcast Phone",
            mcc="310",
            caller_name="JO CABLE",
            caller_type="CONSUMER",
        ),
        _us(
            "+18005550199",
            "(800) 555-0199",
            line_type="tollFree",
            caller_name="SANDBOX SUPPORT",
            caller_type="BUSINESS",
        ),
        NumberProfile(
            e164="+447911123456",
            line_type="mobile",
            carrier_name="Sure (Guernsey) Limited",
            mcc="234",
            mnc="55",
            country_code="GG",
            calling_country_code="44",
            national_format="07911 123456",
        ),
        dataclasses.replace(
            _US_MOBILE,
            e164="+14155550104",
            national_format="(415) 555-0104",
            caller_name="UNREACHABLE HANDSET",
            delivery="undelivered",
            delivery_error_code=30003,
            call_outcome="no-answer",
        ),
        dataclasses.replace(
            _US_MOBILE,
            e164="+14155550105",
            national_format="(415) 555-0105",
            caller_name="BUSY LINE",
            call_outcome="busy",
        ),
        dataclasses.replace(
            _US_MOBILE,
            e164="+14155550106",
            national_format="(415) 555-0106",
            caller_name="NO ANSWER",
            call_outcome="no-answer",
        ),
        dataclasses.replace(
            _US_MOBILE,
            e164="+14155550107",
            national_format="(415) 555-0107",
            caller_name="PUMPING RISK",
            sms_pumping_risk_score=92,
            **_VZW,
        ),
        dataclasses.replace(
            _US_MOBILE,
            e164="+14155550108",
            national_format="(415) 555-0108",
            caller_name="FRAUD GUARD",
            verify_error=60410,
        ),
        # Twilio's test-credential "To" numbers: the create call itself fails.
        _us(
            "+15005550001",
            "(500) 555-0001",
            valid=False,
            line_type=None,
            validation_errors=("INVALID_BUT_POSSIBLE",),
            create_error=21211,
            call_create_error=21217,
        ),
        _us("+15005550002", "(500) 555-0002", **_TMO, create_error=21612, call_create_error=21214),
        _us("+15005550003", "(500) 555-0003", **_TMO, create_error=21408, call_create_error=21215),
        _us("+15005550004", "(500) 555-0004", **_TMO, create_error=21610, call_create_error=21216),
        _us(
            "+15005550009",
            "(500) 555-0009",
            line_type="landline",
            carrier_name="Pacific Bell",
            mcc="310",
            create_error=21614,
        ),
        # Sandbox additions in the same range: SMS Pumping Protection blocks at create.
        _us("+15005550010", "(500) 555-0010", **_TMO, create_error=30450),
        _us("+15005550011", "(500) 555-0011", **_TMO, create_error=30453),
        # The magic valid sender; a fine recipient too.
        _us("+15005550006", "(500) 555-0006", **_TMO),
    )
}

#: Twilio's test-credential "From" numbers that make a create fail (code, as answered).
MAGIC_FROM_ERRORS: dict[str, int] = {
    "+15005550001": 21212,  # invalid From
    "+15005550007": 21606,  # From not owned by the account / not SMS-capable
    "+15005550008": 21611,  # From's message queue is full
}

# (type, weight) for numbers whose type phonenumbers cannot tell (NANP mixes mobile and fixed).
LINE_TYPE_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("mobile", 62),
    ("landline", 20),
    ("nonFixedVoip", 8),
    ("fixedVoip", 7),
    ("unknown", 3),
)

_PN_TYPES: dict[int, str] = {
    PhoneNumberType.FIXED_LINE: "landline",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.TOLL_FREE: "tollFree",
    PhoneNumberType.PREMIUM_RATE: "premium",
    PhoneNumberType.SHARED_COST: "sharedCost",
    PhoneNumberType.VOIP: "nonFixedVoip",
    PhoneNumberType.PERSONAL_NUMBER: "personal",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
}

# Mobile carriers per region: (name, mcc, mnc). MCC 001 is the ITU test network, used elsewhere.
_CARRIERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "US": (
        ("T-Mobile USA, Inc.", "310", "260"),
        ("Verizon Wireless", "311", "480"),
        ("AT&T Wireless", "310", "410"),
    ),
    "CA": (
        ("Rogers Communications", "302", "720"),
        ("Bell Mobility", "302", "610"),
        ("Telus Mobility", "302", "220"),
    ),
    "GB": (
        ("EE Limited", "234", "30"),
        ("Vodafone UK", "234", "15"),
        ("Telefonica UK (O2)", "234", "10"),
        ("Hutchison 3G UK", "234", "20"),
    ),
    "GG": (("Sure (Guernsey) Limited", "234", "55"), ("JT (Guernsey) Limited", "234", "50")),
    "JE": (("JT (Jersey) Limited", "234", "50"), ("Sure (Jersey) Limited", "234", "55")),
    "DE": (
        ("Telekom Deutschland GmbH", "262", "01"),
        ("Vodafone GmbH", "262", "02"),
        ("Telefonica Germany", "262", "03"),
    ),
    "FR": (("Orange", "208", "01"), ("SFR", "208", "10"), ("Bouygues Telecom", "208", "20")),
}
_FIXED_CARRIERS: dict[str, str] = {
    "US": "Pacific Bell",
    "CA": "Bell Canada",
    "GB": "BT Group",
    "DE": "Deutsche Telekom",
}
_VOIP_CARRIERS = (
    "Twilio - SMS/MMS-SVR",
    "Bandwidth/13 - Bandwidth.com - SVR",
    "Google (Grand Central) - SVR",
)
_FIRST_NAMES = ("ALEX", "SAM", "JORDAN", "RILEY", "CASEY", "MORGAN", "TAYLOR", "JAMIE")
_LAST_NAMES = ("RIVERA", "CHEN", "OKAFOR", "NOVAK", "SILVA", "MURPHY", "HANSEN", "KAPOOR")
_BUSINESSES = ("ACME CORP", "BLUE DOOR CAFE", "NORTHWIND LLC", "CONTOSO DENTAL")


def _pick(seed: bytes, index: int, options: tuple[Any, ...]) -> Any:
    return options[seed[index] % len(options)]


def derive_profile(parsed: phonenumbers.PhoneNumber) -> NumberProfile:
    """A stable profile for a valid number outside the fixtures, drawn from a hash of its E.164."""
    e164 = phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
    seed = hashlib.sha256(e164.encode()).digest()
    region = phonenumbers.region_code_for_number(parsed)
    line_type = _PN_TYPES.get(phonenumbers.number_type(parsed))
    if line_type is None:  # FIXED_LINE_OR_MOBILE / UNKNOWN: draw from the weighted table
        roll = int.from_bytes(seed[0:2], "big") % sum(w for _, w in LINE_TYPE_WEIGHTS)
        for candidate, weight in LINE_TYPE_WEIGHTS:
            if roll < weight:
                line_type = candidate
                break
            roll -= weight
    carrier: str | None = None
    mcc: str | None = None
    mnc: str | None = None
    if line_type == "mobile":
        carrier, mcc, mnc = _pick(seed, 2, _CARRIERS.get(region or "", (("Sandbox Mobile", "001", "01"),)))
    elif line_type == "landline":
        carrier = _FIXED_CARRIERS.get(region or "", "Sandbox Fixed")
        mcc = _CARRIERS[region][0][1] if region in _CARRIERS else "001"
    elif line_type in ("fixedVoip", "nonFixedVoip"):
        carrier = _pick(seed, 3, _VOIP_CARRIERS)
        mcc = "313" if region == "US" else "001"
    business = seed[4] % 5 == 0
    if business:
        caller_name, caller_type = _pick(seed, 5, _BUSINESSES), "BUSINESS"
    else:
        caller_name = f"{_pick(seed, 5, _FIRST_NAMES)} {_pick(seed, 6, _LAST_NAMES)}"
        caller_type = "CONSUMER"
    # Mostly low risk, a thin tail of high scores, as real traffic looks.
    risk = min(100, (seed[7] % 40) + (60 if seed[8] % 20 == 0 else 0))
    delivery: Delivery = "delivered"
    delivery_error: int | None = None
    if line_type == "landline":
        delivery, delivery_error = "undelivered", 30006
    elif line_type in ("unknown", "pager", "voicemail", "premium", "sharedCost", "uan"):
        delivery, delivery_error = "undelivered", 30005
    return NumberProfile(
        e164=e164,
        valid=True,
        line_type=line_type,
        carrier_name=carrier,
        mcc=mcc,
        mnc=mnc,
        caller_name=caller_name,
        caller_type=caller_type,
        country_code=region,
        calling_country_code=str(parsed.country_code),
        national_format=phonenumbers.format_number(parsed, PhoneNumberFormat.NATIONAL),
        sms_pumping_risk_score=risk,
        delivery=delivery,
        delivery_error_code=delivery_error,
        call_duration_seconds=5 + seed[9] % 90,
    )


_PARSE_ERRORS: dict[int, str] = {
    NumberParseException.INVALID_COUNTRY_CODE: "INVALID_COUNTRY_CODE",
    NumberParseException.NOT_A_NUMBER: "NOT_A_NUMBER",
    NumberParseException.TOO_SHORT_AFTER_IDD: "TOO_SHORT",
    NumberParseException.TOO_SHORT_NSN: "TOO_SHORT",
    NumberParseException.TOO_LONG: "TOO_LONG",
}
_POSSIBILITY_ERRORS: dict[int, str] = {
    ValidationResult.INVALID_COUNTRY_CODE: "INVALID_COUNTRY_CODE",
    ValidationResult.TOO_SHORT: "TOO_SHORT",
    ValidationResult.TOO_LONG: "TOO_LONG",
    ValidationResult.INVALID_LENGTH: "INVALID_LENGTH",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "INVALID_LENGTH",
}


def _invalid(raw: str, reason: str) -> NumberProfile:
    # Phone-shaped input is keyed as +digits (so "+1 415 555" and "+1415555" count as one);
    # anything else (an email, "abc123") keeps its own text and never passes for a number.
    digits = "".join(ch for ch in raw if ch.isdigit())
    e164 = "+" + digits if digits and _PHONE_CHARS.match(raw) else raw
    return NumberProfile(
        e164=e164,
        valid=False,
        line_type=None,
        validation_errors=(reason,),
        create_error=21211,
        call_create_error=21211,
        sms_pumping_risk_score=0,
    )


def looks_like_e164(value: str) -> bool:
    """True for ``+`` followed by 8 to 15 digits (the shape, not a validity verdict)."""
    return bool(_E164_SHAPE.match(value))


class NumberBook:
    """Fixtures plus overrides; answers :meth:`profile` for any input.

    ``overrides`` maps an E.164 number to a partial dict of :class:`NumberProfile` fields;
    the dict is laid over the fixture (or the derived profile) for that number.
    """

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._lock = threading.Lock()
        self._overrides: dict[str, dict[str, Any]] = {}
        if overrides:
            self.override(overrides)

    def override(self, overrides: Mapping[str, Mapping[str, Any]]) -> None:
        """Add or change fixtures. Raises ``ValueError`` for unknown fields or bad values."""
        checked = {_check_key(number): _check_fields(fields) for number, fields in overrides.items()}
        with self._lock:
            for number, fields in checked.items():
                self._overrides.setdefault(number, {}).update(fields)

    def clear_overrides(self) -> None:
        """Forget every override; fixtures and derived profiles remain."""
        with self._lock:
            self._overrides.clear()

    def profile(self, number: str, country: str | None = None) -> NumberProfile:
        """The profile for ``number`` (E.164, or national format read with ISO-2 ``country``)."""
        raw = number.strip()
        for prefix in ("whatsapp:", "sms:", "tel:"):
            if raw.lower().startswith(prefix):
                raw = raw[len(prefix) :]
        base = self._resolve(raw, country)
        with self._lock:
            extra = dict(self._overrides.get(base.e164, {}))
        if not extra:
            return base
        merged = dataclasses.replace(base, **extra)
        if merged.valid and merged.validation_errors:
            merged = dataclasses.replace(merged, validation_errors=())
        elif not merged.valid and not merged.validation_errors:
            merged = dataclasses.replace(merged, validation_errors=("INVALID_BUT_POSSIBLE",))
        return merged

    def _resolve(self, raw: str, country: str | None) -> NumberProfile:
        known = self._known(raw)
        if known is not None:
            return known
        if "@" in raw:  # phonenumbers would dig digits out of "user1@example.com"
            return _invalid(raw, "NOT_A_NUMBER")
        try:
            parsed = phonenumbers.parse(raw, None if raw.startswith("+") else (country or "US").upper())
        except NumberParseException as exc:
            return _invalid(raw, _PARSE_ERRORS.get(exc.error_type, "NOT_A_NUMBER"))
        e164 = phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
        return self._known(e164) or _judge(parsed, e164)

    def _known(self, e164: str) -> NumberProfile | None:
        """The fixture for ``e164``, or a base for its override, or None."""
        if e164 in FIXTURES:
            return FIXTURES[e164]
        return _default_for_override(e164) if e164 in self._overrides else None


def _judge(parsed: phonenumbers.PhoneNumber, e164: str) -> NumberProfile:
    """Lookup's verdict on a parsed number outside the fixtures: a reason, or a derived profile."""
    possible = phonenumbers.is_possible_number_with_reason(parsed)
    if possible != ValidationResult.IS_POSSIBLE:
        return _invalid(e164, _POSSIBILITY_ERRORS.get(possible, "INVALID_LENGTH"))
    if not phonenumbers.is_valid_number(parsed):
        return _invalid(e164, "INVALID_BUT_POSSIBLE")
    return derive_profile(parsed)


def _default_for_override(e164: str) -> NumberProfile:
    """Base for an override on a number with no fixture: its derived profile if it has one."""
    try:
        parsed = phonenumbers.parse(e164, None)
        if phonenumbers.is_valid_number(parsed):
            return derive_profile(parsed)
    except NumberParseException:
        pass
    # An override may invent a number phonenumbers rejects; trust the override to say valid.
    return NumberProfile(e164=e164)


def _check_key(number: str) -> str:
    if not isinstance(number, str) or not looks_like_e164(number):
        raise ValueError(f"override keys must be E.164 numbers, got {mask(str(number))!r}")
    return number


def _check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(fields, Mapping):
        raise ValueError("each override must be a mapping of NumberProfile fields")
    unknown = set(fields) - _FIELD_NAMES - {"e164"}
    if unknown:
        raise ValueError(f"unknown NumberProfile fields: {', '.join(sorted(unknown))}")
    out = {k: v for k, v in fields.items() if k != "e164"}
    if "line_type" in out and out["line_type"] is not None and out["line_type"] not in LINE_TYPES:
        raise ValueError(f"line_type must be one of {sorted(LINE_TYPES)}")
    if "delivery" in out and out["delivery"] not in DELIVERIES:
        raise ValueError(f"delivery must be one of {sorted(DELIVERIES)}")
    if "call_outcome" in out and out["call_outcome"] not in CALL_OUTCOMES:
        raise ValueError(f"call_outcome must be one of {sorted(CALL_OUTCOMES)}")
    if "validation_errors" in out:
        out["validation_errors"] = tuple(out["validation_errors"])
    for key in ("create_error", "call_create_error", "delivery_error_code", "verify_error"):
        if out.get(key) is not None and not isinstance(out[key], int):
            raise ValueError(f"{key} must be an integer Twilio error code or null")
    if "sms_pumping_risk_score" in out:
        score = out["sms_pumping_risk_score"]
        if not isinstance(score, int) or not 0 <= score <= 100:
            raise ValueError("sms_pumping_risk_score must be an integer 0..100")
    return out
