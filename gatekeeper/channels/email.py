"""Email codes through Verify's email channel (the service needs an email integration)."""

from __future__ import annotations

import re
from typing import Any

from twilio.rest import Client
from twilio.rest.verify.v2.service.verification import VerificationInstance

from gatekeeper.channels import verify
from gatekeeper.channels.base import SendPolicy

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def looks_like_email(value: str) -> bool:
    return bool(_EMAIL.fullmatch(value.strip()))


def start(client: Client, policy: SendPolicy, *, service_sid: str, email: str, **params: Any) -> VerificationInstance:
    if not looks_like_email(email):
        raise ValueError("email must be an address like name@example.com")
    return verify.start(client, policy, service_sid=service_sid, to=email.strip(), channel="email", **params)
