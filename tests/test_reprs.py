"""Reprs end up in logs and tracebacks: none shows a full phone number."""

from __future__ import annotations

import pytest

from gatekeeper import Action, GatedClient, Gatekeeper, GateRefused
from gatekeeper.models import SendRequest
from gatekeeper.phone import normalize
from gatekeeper.sandbox import Sandbox, SandboxServer

MOBILE, LANDLINE, FROM = "+14155550100", "+14155550101", "+15005550006"
DIGITS = ("4155550100", "4155550101", "5005550006")


def shows_no_number(text: str) -> bool:
    return not any(digits in text for digits in DIGITS)


def test_decisions_outcomes_facts_and_requests_mask_numbers(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    gate = Gatekeeper(sandbox_server.client())
    outcome = gate.notify(MOBILE, "hi", from_=FROM)
    assert outcome.action is Action.SMS and outcome.decision.facts is not None
    for record in (outcome, outcome.decision, outcome.decision.facts, SendRequest(Action.SMS, body="hi", from_=FROM)):
        shown = repr(record)
        assert shows_no_number(shown), shown
        assert "+1415555****" in shown or "+1500555****" in shown
    assert outcome.decision.to == MOBILE  # only the repr is masked


@pytest.mark.parametrize("raw", ["(415) 555-0100", "+1 415 555 0100", "whatsapp:+14155550100"])
def test_a_parsed_phone_masks_the_raw_input_too(raw: str) -> None:
    shown = repr(normalize(raw, "US"))
    assert shows_no_number(shown) and "0100" not in shown, shown  # whatever the input's format


def test_a_refusal_names_no_number(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    gate = Gatekeeper(sandbox_server.client())
    with pytest.raises(GateRefused) as refused:
        GatedClient(sandbox_server.client(), gate).messages.create(to=LANDLINE, from_=FROM, body="hi")
    for text in (str(refused.value), repr(refused.value), repr(refused.value.decision)):
        assert shows_no_number(text), text
