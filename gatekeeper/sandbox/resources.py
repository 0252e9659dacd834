"""Twilio JSON shapes: Lookup v2 answers, Message, Call, Verification and VerificationCheck.

Pure functions of their inputs (plus a timestamp); the field sets and formats follow the
resources in Twilio's OpenAPI specs (``tests/data/twilio-oai``), which the schema tests check.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

from gatekeeper.models import LOOKUP_PACKAGES
from gatekeeper.sandbox.config import Account
from gatekeeper.sandbox.numbers import NO_CARRIER_TYPES, NumberProfile

API_VERSION = "2010-04-01"
LOOKUP_BASE = "https://lookups.twilio.com"
VERIFY_BASE = "https://verify.twilio.com"
_PACKAGES = LOOKUP_PACKAGES
_CNAM_COUNTRIES = frozenset({"US", "CA"})


def new_sid(prefix: str) -> str:
    """A Twilio-style SID: two-letter prefix and 32 lower-case hex digits."""
    return prefix + secrets.token_hex(16)


def rfc2822(timestamp: float) -> str:
    """``Thu, 24 Aug 2023 05:01:45 +0000``, as the 2010 API writes dates."""
    return format_datetime(datetime.fromtimestamp(timestamp, timezone.utc))


def iso8601(timestamp: float) -> str:
    """``2015-07-30T20:00:00Z``, as Verify writes dates."""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# GSM 03.38 basic set; the extension set costs two septets per character.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


def count_segments(body: str) -> int:
    """SMS segments for ``body``: GSM-7 (160/153 per part) or UCS-2 (70/67 per part)."""
    if not body:
        return 1
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in body):
        septets = sum(2 if ch in _GSM_EXTENDED else 1 for ch in body)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


# -- Lookup v2 --------------------------------------------------------------------------------


def lookup_json(profile: NumberProfile, fields: Sequence[str], query: Mapping[str, str]) -> dict[str, Any]:
    """Lookup v2's answer for ``profile``; packages not in ``fields`` are ``null``."""
    body: dict[str, Any] = {
        "calling_country_code": profile.calling_country_code if profile.valid else None,
        "country_code": profile.country_code if profile.valid else None,
        # Input with no digits at all has no E.164 form to echo.
        "phone_number": profile.e164 if profile.e164.startswith("+") else None,
        "national_format": profile.national_format if profile.valid else None,
        "valid": profile.valid,
        "validation_errors": list(profile.validation_errors),
    }
    for package in _PACKAGES:
        body[package] = _package(package, profile, query) if profile.valid and package in fields else None
    body["url"] = f"{LOOKUP_BASE}/v2/PhoneNumbers/{quote(profile.e164, safe='+')}"
    return body


def _carrier_fields(profile: NumberProfile) -> tuple[str | None, str | None, str | None]:
    if profile.line_type in NO_CARRIER_TYPES:
        return None, None, None
    return profile.carrier_name, profile.mcc, profile.mnc


def _package(name: str, profile: NumberProfile, query: Mapping[str, str]) -> dict[str, Any]:
    return _PACKAGE_BUILDERS[name](profile, query)


def _line_type_intelligence(profile: NumberProfile, query: Mapping[str, str]) -> dict[str, Any]:
    carrier, mcc, mnc = _carrier_fields(profile)
    return {
        "mobile_country_code": mcc,
        "mobile_network_code": mnc,
        "carrier_name": carrier,
        "type": profile.line_type,
        "error_code": None,
    }


def _caller_name(profile: NumberProfile, query: Mapping[str, str]) -> dict[str, Any]:
    if profile.country_code not in _CNAM_COUNTRIES:  # CNAM exists only in North America
        return {"caller_name": None, "caller_type": None, "error_code": 60607}
    return {"caller_name": profile.caller_name, "caller_type": profile.caller_type, "error_code": None}


def _sms_pumping_risk(profile: NumberProfile, query: Mapping[str, str]) -> dict[str, Any]:
    return {
        "carrier_risk_category": profile.carrier_risk_category,
        "number_blocked": profile.number_blocked,
        "number_blocked_date": None,
        "number_blocked_last_3_months": False,
        "sms_pumping_risk_score": profile.sms_pumping_risk_score,
        "error_code": None,
    }


def _sim_swap(profile: NumberProfile, query: Mapping[str, str]) -> dict[str, Any]:
    carrier, mcc, mnc = _carrier_fields(profile)
    swapped = "2026-01-01T00:00:00Z" if profile.sim_swapped else None
    last = {"last_sim_swap_date": swapped, "swapped_period": "PT24H", "swapped_in_period": profile.sim_swapped}
    return {
        "last_sim_swap": last,
        "carrier_name": carrier,
        "mobile_country_code": mcc,
        "mobile_network_code": mnc,
        "error_code": None,
    }


def _reassigned_number(profile: NumberProfile, query: Mapping[str, str]) -> dict[str, Any]:
    """Reassigned since ``LastVerifiedDate``: yes when the profile's ``reassigned_on`` is later; US numbers only."""
    date = query.get("LastVerifiedDate") or None
    if profile.country_code != "US":
        return {"last_verified_date": date, "is_number_reassigned": None, "error_code": "60607"}  # a string here
    if date is None:
        answer = "no_data_available"
    else:
        answer = "yes" if profile.reassigned_on is not None and date < profile.reassigned_on else "no"
    return {"last_verified_date": date, "is_number_reassigned": answer, "error_code": None}


def _identity_match(profile: NumberProfile, query: Mapping[str, str]) -> dict[str, Any]:
    keys = (
        "first_name",
        "last_name",
        "address_lines",
        "city",
        "state",
        "postal_code",
        "address_country",
        "national_id",
        "date_of_birth",
    )
    return {
        **{f"{key}_match": "no_data_available" for key in keys},
        "summary_score": 0,
        "error_code": None,
        "error_message": None,
    }


def _quality_score(profile: NumberProfile, query: Mapping[str, str]) -> dict[str, Any]:
    risk = profile.sms_pumping_risk_score
    return {
        "carrier_risk_score": risk,
        "carrier_risk_category": profile.carrier_risk_category,
        "quality_score": 100 - risk,
        "quality_category": "high" if risk < 40 else "low",
        "error_code": None,
    }


def _pre_fill(profile: NumberProfile, query: Mapping[str, str]) -> dict[str, Any]:
    # The sandbox holds no identity data.
    return {
        "first_name": None,
        "last_name": None,
        "address_line": None,
        "country_code": profile.country_code,
        "state": None,
        "postal_code": None,
        "error_code": None,
    }


_PACKAGE_BUILDERS: dict[str, Callable[[NumberProfile, Mapping[str, str]], dict[str, Any]]] = {
    "line_type_intelligence": _line_type_intelligence,
    "caller_name": _caller_name,
    "sms_pumping_risk": _sms_pumping_risk,
    "line_status": lambda profile, query: {"status": profile.line_status, "error_code": None},
    "sim_swap": _sim_swap,
    "call_forwarding": lambda profile, query: {"call_forwarding_enabled": False, "error_code": None},
    "reassigned_number": _reassigned_number,
    "identity_match": _identity_match,
    "phone_number_quality_score": _quality_score,
    "pre_fill": _pre_fill,
}


# -- Messages and Calls -------------------------------------------------------------------------


def message_json(
    *,
    sid: str,
    account_sid: str,
    to: str,
    from_: str | None,
    body: str,
    num_media: int,
    messaging_service_sid: str | None,
    now: float,
) -> dict[str, Any]:
    """A new Message resource as the create call answers it."""
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": rfc2822(now),
        "date_sent": None,
        "date_updated": rfc2822(now),
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": from_,
        "messaging_service_sid": messaging_service_sid,
        "num_media": str(num_media),
        "num_segments": str(count_segments(body)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "accepted" if messaging_service_sid else "queued",
        "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        "to": to,
        "uri": uri,
    }


def call_json(
    *, sid: str, account_sid: str, to: str, from_: str, to_profile: NumberProfile, now: float
) -> dict[str, Any]:
    """A new Call resource as the create call answers it."""
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Calls/{sid}.json"
    subresources = (
        "notifications",
        "recordings",
        "payments",
        "events",
        "siprec",
        "streams",
        "transcriptions",
        "user_defined_message_subscriptions",
        "user_defined_messages",
    )
    names = {
        "user_defined_message_subscriptions": "UserDefinedMessageSubscriptions",
        "user_defined_messages": "UserDefinedMessages",
    }
    return {
        "account_sid": account_sid,
        "answered_by": None,
        "api_version": API_VERSION,
        "caller_name": None,
        "date_created": rfc2822(now),
        "date_updated": rfc2822(now),
        "direction": "outbound-api",
        "duration": None,
        "end_time": None,
        "forwarded_from": None,
        "from": from_,
        "from_formatted": from_,
        "group_sid": None,
        "parent_call_sid": None,
        "phone_number_sid": None,
        "price": None,
        "price_unit": "USD",
        "queue_time": "0",
        "sid": sid,
        "start_time": None,
        "status": "queued",
        "subresource_uris": {
            key: uri.replace(".json", f"/{names.get(key, key.capitalize())}.json") for key in subresources
        },
        "to": to,
        "to_formatted": to_profile.national_format or to,
        "trunk_sid": None,
        "uri": uri,
    }


def message_plan(profile: NumberProfile, via_service: bool) -> list[tuple[str, int | None]]:
    """The statuses an accepted message goes through after create, with error codes.

    No callback is sent for the initial status; with a Messaging Service the initial status
    is ``accepted``, so ``queued`` is reported too (Twilio's documented lifecycle).
    """
    plan: list[tuple[str, int | None]] = [("queued", None)] if via_service else []
    if profile.delivery == "failed":
        return [*plan, ("failed", profile.delivery_error_code or 30008)]
    plan.append(("sent", None))
    if profile.delivery == "undelivered":
        return [*plan, ("undelivered", profile.delivery_error_code or 30008)]
    return [*plan, ("delivered", None)]


#: StatusCallbackEvent names, in lifecycle order, and the CallStatus each reports.
CALL_EVENTS: tuple[str, ...] = ("initiated", "ringing", "answered", "completed")


def call_plan(profile: NumberProfile) -> list[tuple[str, str]]:
    """``(event, CallStatus)`` pairs a placed call goes through, ending in the profile's outcome."""
    outcome = profile.call_outcome
    if outcome == "failed":
        return [("initiated", "initiated"), ("completed", "failed")]
    if outcome in ("busy", "no-answer"):
        return [("initiated", "initiated"), ("ringing", "ringing"), ("completed", outcome)]
    return [
        ("initiated", "initiated"),
        ("ringing", "ringing"),
        ("answered", "in-progress"),
        ("completed", "completed"),
    ]


# -- Verify ---------------------------------------------------------------------------------


@dataclass
class Verification:
    """One Verify verification; ``code`` is what a check must present."""

    sid: str
    service_sid: str
    account_sid: str
    to: str
    channel: str
    code: str
    created: float
    updated: float
    lookup: dict[str, Any]
    amount: str | None = None
    payee: str | None = None
    status: str = "pending"
    checks: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def url(self) -> str:
        """The absolute URL Twilio gives the resource."""
        return f"{VERIFY_BASE}/v2/Services/{self.service_sid}/Verifications/{self.sid}"

    def to_json(self) -> dict[str, Any]:
        """The Verification resource."""
        return {
            "sid": self.sid,
            "service_sid": self.service_sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "channel": self.channel,
            "status": self.status,
            "valid": self.status == "approved",
            "lookup": self.lookup,
            "amount": self.amount,
            "payee": self.payee,
            "send_code_attempts": [dict(a) for a in self.attempts],
            "date_created": iso8601(self.created),
            "date_updated": iso8601(self.updated),
            "sna": None,
            "url": self.url(),
        }

    def check_json(self) -> dict[str, Any]:
        """The VerificationCheck resource for the current state."""
        return {
            "sid": self.sid,
            "service_sid": self.service_sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "channel": self.channel,
            "status": self.status,
            "valid": self.status == "approved",
            "amount": self.amount,
            "payee": self.payee,
            "date_created": iso8601(self.created),
            "date_updated": iso8601(self.updated),
            "sna_attempts_error_codes": [],
        }


def verify_lookup(profile: NumberProfile | None) -> dict[str, Any]:
    """The ``lookup`` object of a Verification (empty for email)."""
    if profile is None:
        return {}
    carrier, mcc, mnc = _carrier_fields(profile)
    return {
        "carrier": {
            "error_code": None,
            "name": carrier,
            "mobile_country_code": mcc,
            "mobile_network_code": mnc,
            "type": profile.line_type,
        }
    }


def attempt_channel(channel: str) -> str:
    """How ``send_code_attempts`` spells a channel (``SMS``, ``CALL``, ``EMAIL``, ``whatsapp``)."""
    return channel.upper() if channel in ("sms", "call", "email") else channel


def account_json(account: Account, *, now: float) -> dict[str, Any]:
    """An Account resource as a fetch answers it; the sandbox shows no token (Twilio would show the real one)."""
    base = f"/{API_VERSION}/Accounts/{account.sid}"
    return {
        "auth_token": "*" * 32,
        "date_created": rfc2822(now),
        "date_updated": rfc2822(now),
        "friendly_name": "Sandbox subaccount" if account.parent_sid else "Sandbox account",
        "owner_account_sid": account.parent_sid or account.sid,
        "sid": account.sid,
        "status": "active",
        "subresource_uris": {"messages": f"{base}/Messages.json", "calls": f"{base}/Calls.json"},
        "type": "Full",
        "uri": f"{base}.json",
    }
