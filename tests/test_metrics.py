"""Prometheus counters move with what the gate does, and never carry a number."""

from __future__ import annotations

from prometheus_client import REGISTRY
from support import FakeTwilio
from twilio.rest import Client

from gatekeeper import Gatekeeper


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_decisions_lookups_and_cache_are_counted(twilio_http: FakeTwilio, twilio_client: Client) -> None:
    """A miss then a hit: one Lookup request, one miss, one hit, two SMS decisions; a refusal counts by code."""
    before = {
        "sms": value("gatekeeper_decisions_total", purpose="notify", action="sms", code=""),
        "refused": value("gatekeeper_decisions_total", purpose="notify", action="refuse", code="21211"),
        "answered": value("gatekeeper_lookup_requests_total", outcome="answered"),
        "hit": value("gatekeeper_lookup_cache_total", result="hit"),
        "miss": value("gatekeeper_lookup_cache_total", result="miss"),
    }
    gate = Gatekeeper(twilio_client)
    gate.decide("+14155552671")
    gate.decide("+14155552671")
    gate.decide("+1415")
    assert value("gatekeeper_decisions_total", purpose="notify", action="sms", code="") - before["sms"] == 2
    assert value("gatekeeper_decisions_total", purpose="notify", action="refuse", code="21211") - before["refused"] == 1
    assert value("gatekeeper_lookup_requests_total", outcome="answered") - before["answered"] == 1
    assert value("gatekeeper_lookup_cache_total", result="hit") - before["hit"] == 1
    assert value("gatekeeper_lookup_cache_total", result="miss") - before["miss"] == 1
    exposition = "\n".join(str(m) for m in REGISTRY.collect())
    assert "4155552671" not in exposition
