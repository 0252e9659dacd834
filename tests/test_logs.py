"""No full phone number in any log record: twilio's and urllib3's HTTP logs are masked once a client is wrapped."""

from __future__ import annotations

import logging
import re

import pytest
from twilio.rest import Client

from gatekeeper import GatedClient, Gatekeeper
from gatekeeper.sandbox import Sandbox, SandboxServer

MOBILE, LANDLINE = "+14155550100", "+14155550101"
FROM = "+15005550006"
VA = "VA" + "0" * 32
FULL_NUMBER = re.compile(r"(\+|%2B)\d{10,15}(?!\d)")


def full_numbers(records: list[logging.LogRecord]) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in records if FULL_NUMBER.search(r.getMessage())]


def test_an_unwrapped_client_logs_full_numbers(
    sandbox_server: SandboxServer, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The check below can fail: twilio's own logger prints a Lookup URL with the number in it."""
    logger = logging.getLogger("twilio.http_client")
    kept = list(logger.filters)
    logger.filters.clear()  # as if nothing had ever wrapped a client
    try:
        with caplog.at_level(logging.DEBUG):
            sandbox_server.client().lookups.v2.phone_numbers(MOBILE).fetch(fields="line_type_intelligence")
    finally:
        logger.filters[:] = kept
    assert any(MOBILE in line for line in full_numbers(caplog.records))


def test_a_full_send_at_debug_logs_no_full_number(
    sandbox_server: SandboxServer, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Wrapping an app-built client masks every number in every record of Lookups, texts, calls and Verify."""
    app_client: Client = sandbox_server.client()  # the README's adoption path: the app's own Client
    with caplog.at_level(logging.DEBUG):
        client = GatedClient(app_client, Gatekeeper(app_client))
        client.messages.create(to=MOBILE, from_=FROM, body="hi")
        client.calls.create(to=LANDLINE, from_=FROM, url="https://example.com/twiml")
        client.verify.v2.services(VA).verifications.create(to=MOBILE, channel="sms")
        client.gate.notify(LANDLINE, "Your table is ready", from_=FROM)
    names = {r.name for r in caplog.records}
    assert {"twilio.http_client", "urllib3.connectionpool"} <= names  # the loggers that print URLs did log
    assert full_numbers(caplog.records) == []
    assert any("+1415555****" in r.getMessage() for r in caplog.records)
