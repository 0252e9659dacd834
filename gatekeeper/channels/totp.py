"""TOTP (RFC 6238) for numbers that should not get SMS codes, with pyotp.

Defaults are the RFC's and every authenticator app's: SHA-1, 6 digits, 30 s.
Gatekeeper never stores the secret; the application keeps it with the user.
"""

from __future__ import annotations

import datetime as dt

import pyotp
from twilio.rest import Client

from gatekeeper.channels.base import BaseChannel
from gatekeeper.models import Action, Decision, Outcome, SendRequest

DIGITS = 6
INTERVAL_SECONDS = 30


class TotpChannel(BaseChannel):
    """Nothing is sent: the outcome tells the application to ask for a code from the user's authenticator."""

    def prepare(self, client: Client, action: Action, decision: Decision, request: SendRequest) -> Outcome:
        return Outcome(
            action=action,
            decision=decision,
            status="use_totp",
            detail={"digits": DIGITS, "interval_seconds": INTERVAL_SECONDS},
        )


def new_secret() -> str:
    """A fresh random base32 secret (160 bits, as RFC 4226 recommends)."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, *, name: str, issuer: str | None = None) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app scans from a QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL_SECONDS).provisioning_uri(name=name, issuer_name=issuer)


def now(secret: str, *, at: float | dt.datetime | None = None) -> str:
    """The code for ``at`` (default: now)."""
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL_SECONDS)
    return totp.now() if at is None else totp.at(at)


def verify(secret: str, code: str, *, at: float | dt.datetime | None = None, window: int = 1) -> bool:
    """True if ``code`` is valid at ``at`` within ``window`` steps either side. Never raises on bad input."""
    if not isinstance(code, str) or not code.strip().isdigit():
        return False
    try:
        totp = pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL_SECONDS)
        for_time = dt.datetime.now(dt.timezone.utc) if at is None else at
        return bool(totp.verify(code.strip(), for_time=for_time, valid_window=window))
    except (ValueError, TypeError):  # a secret that is not base32
        return False
