"""Twilio-shaped API errors: ``{"code", "message", "more_info", "status"}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class TwilioApiError(Exception):
    """An answer the emulator gives as a Twilio error body with an HTTP status.

    Raised by request handlers; the app's error handler turns it into JSON.
    ``headers`` carries extras such as ``Retry-After``.
    """

    def __init__(self, status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body Twilio sends for this error."""
        return error_body(self.status, self.code, self.message)


def error_body(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's error JSON for ``code``."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def not_found(path: str) -> TwilioApiError:
    """Twilio's 404 for an unknown resource or route."""
    return TwilioApiError(404, 20404, f"The requested resource {path} was not found")


def unauthorized() -> TwilioApiError:
    """Twilio's 401 for missing or wrong credentials."""
    return TwilioApiError(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})


def invalid_parameter(name: str, detail: str = "") -> TwilioApiError:
    """Verify/Lookup's 400 60200 for a bad parameter."""
    suffix = f": {detail}" if detail else ""
    return TwilioApiError(400, 60200, f"Invalid parameter `{name}`{suffix}")


#: Messages for the create-time codes the fixtures and magic numbers answer.
CREATE_ERROR_MESSAGES: dict[int, str] = {
    21211: "The 'To' number {to} is not a valid phone number.",
    21212: "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric sender ID.",
    21214: "'To' phone number cannot be reached",
    21215: "Account not authorized to call {to}. Perhaps you need to enable some international permissions.",
    21216: "Account not allowed to call {to}",
    21217: "Phone number does not appear to be valid",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    21606: "The 'From' phone number provided ({from_}) is not a valid message-capable Twilio phone number "
    "for this destination/account.",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages",
    21612: "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number: {from_} via SMS.",
    21614: "'To' number is not a valid mobile number",
    21910: "Invalid From and To pair. From and To should be of the same channel.",
    30450: "Message delivery blocked: SMS Pumping Protection has temporarily blocked messages to {to}.",
    30453: "Message couldn't be delivered: SMS Pumping Protection flagged traffic to {to} as suspicious.",
}

#: Messages for asynchronous delivery failures (Message resource ``error_message``).
DELIVERY_ERROR_MESSAGES: dict[int, str] = {
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}


def create_error(code: int, to: str, from_: str) -> TwilioApiError:
    """The HTTP 400 a Messages/Calls create answers with ``code``."""
    template = CREATE_ERROR_MESSAGES.get(code, "The request could not be completed (error {code}).")
    return TwilioApiError(400, code, template.format(to=to, from_=from_, code=code))


#: Verify create errors a number's ``verify_error`` can name: code → (HTTP status, message).
VERIFY_ERRORS: dict[int, tuple[int, str]] = {
    60205: (403, "SMS is not supported by landline phone number"),
    60410: (403, "Verification delivery attempt blocked"),
    60605: (403, "Verification delivery attempt blocked"),
    60238: (403, "Verification creation attempt is blocked by Twilio"),
}


def verify_error(code: int) -> TwilioApiError:
    """The answer a Verify create gives with ``code`` (HTTP 400 for codes not in :data:`VERIFY_ERRORS`)."""
    status, message = VERIFY_ERRORS.get(code, (400, f"The verification could not be created (error {code})."))
    return TwilioApiError(status, code, message)
