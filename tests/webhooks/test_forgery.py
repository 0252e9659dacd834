"""Requests that must not verify: a signature Twilio made for another host, malformed body hashes, and
anything that stops the check. Each is a 403 (never a 500), and nothing is recorded."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from gatekeeper.errors import ConfigError
from gatekeeper.webhooks import init_app

from .helpers import ALICE, PREFIX, Recorder, inbound, make_gate, post, sign

OURS = "https://hooks-b.example.com"  # where Twilio calls this app
THEIRS = "https://hooks-a.example.com"  # another of the account's webhook hosts, signed by Twilio too


def deployed_app(**webhooks: Any) -> tuple[Flask, Recorder, Any]:
    """An app as deployed: not in debug or testing mode."""
    gate = make_gate(**webhooks)
    app, recorder = Flask("deployed"), Recorder()
    init_app(app, gate, on_inbound=recorder.on_inbound, on_consent=recorder.on_consent)
    return app, recorder, gate


# -- registration ------------------------------------------------------------------------------------------
def test_registration_needs_a_pinned_url_outside_debug_and_testing() -> None:
    """With neither public_base_url nor allowed_hosts the signature would be checked against whatever Host the
    request names: registering the blueprint on a deployed app raises ConfigError naming the settings."""
    with pytest.raises(ConfigError, match="public_base_url") as refused:
        init_app(Flask("deployed"), make_gate())
    assert refused.value.key == "webhooks.public_base_url"
    assert "allowed_hosts" in str(refused.value)


@pytest.mark.parametrize("mode", ["debug", "testing"])
def test_debug_and_testing_apps_may_leave_the_url_unpinned(mode: str) -> None:
    app = Flask("dev")
    setattr(app, mode, True)
    init_app(app, make_gate())
    assert "gatekeeper" in app.extensions


@pytest.mark.parametrize("webhooks", [{"public_base_url": OURS}, {"allowed_hosts": ["hooks-b.example.com"]}])
def test_a_pinned_url_lets_a_deployed_app_register(webhooks: dict[str, Any]) -> None:
    app, _, _ = deployed_app(**webhooks)
    assert "gatekeeper" in app.extensions


# -- the Host replay ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("webhooks", [{"public_base_url": OURS}, {"allowed_hosts": ["hooks-b.example.com"]}])
def test_a_request_signed_for_another_host_is_refused(webhooks: dict[str, Any]) -> None:
    """A STOP Twilio signed for hooks-a, replayed at this app with Host: hooks-a, is a 403 and records nothing;
    the same STOP signed for this app's own host is a 200 and opts the number out."""
    app, recorder, gate = deployed_app(**webhooks)
    stop = inbound("STOP")
    with app.test_client() as client:
        replayed = post(client, "/messages/inbound", stop, base_url=THEIRS)
        assert replayed.status_code == 403
        assert recorder.consent == [] and not gate.is_opted_out(ALICE)
        genuine = post(client, "/messages/inbound", stop, base_url=OURS)
    assert genuine.status_code == 200
    assert gate.is_opted_out(ALICE)


def test_allowed_hosts_ignore_the_port_and_case() -> None:
    app, _, _ = deployed_app(allowed_hosts=["Hooks-B.example.com"])
    with app.test_client() as client:
        assert post(client, "/messages/inbound", inbound("hi"), base_url=OURS + ":8443").status_code == 200
        elsewhere = post(client, "/messages/inbound", inbound("hi", n=2), base_url="https://hooks-b.example.co")
        assert elsewhere.status_code == 403


# -- bodySHA256 and anything else that stops the check -----------------------------------------------------
@pytest.mark.parametrize("value", ["", "not-hex", "0" * 63, "g" * 64])
def test_a_malformed_body_hash_is_a_403_not_a_500(value: str) -> None:
    """?bodySHA256= with an empty or malformed value, any body, any signature: refused as unsigned, not a crash."""
    app, recorder, _ = deployed_app(public_base_url=OURS)
    path = f"{PREFIX}/messages/inbound?bodySHA256={value}"
    with app.test_client() as client:
        answer = client.post(
            path,
            data='{"Body": "STOP", "From": "+14155552671"}',
            content_type="application/json",
            headers={"X-Twilio-Signature": sign(OURS + path, {})},
            base_url=OURS,
        )
    assert answer.status_code == 403
    assert recorder.inbound == []


def test_an_error_inside_the_check_is_a_403(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever fails inside signature checking (here twilio's validator itself) refuses the request."""
    from twilio.request_validator import RequestValidator

    def broken(*args: object, **kwargs: object) -> bool:
        raise ValueError("validator broke")

    params = inbound("STOP")
    signed = {"X-Twilio-Signature": sign(f"{OURS}{PREFIX}/messages/inbound", params)}  # before the validator breaks
    monkeypatch.setattr(RequestValidator, "validate", broken)
    monkeypatch.setattr(RequestValidator, "compute_signature", broken)
    app, recorder, _ = deployed_app(public_base_url=OURS)
    with app.test_client() as client:
        answer = post(client, "/messages/inbound", params, token=None, headers=signed, base_url=OURS)
        assert answer.status_code == 403
    assert recorder.inbound == []


# -- connection overrides: the URL fragment ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("signed_fragment", "status"),
    [("", 200), ("#rc=5&rp=all", 200), ("#rc=1", 403)],
    ids=["without", "with-the-configured-overrides", "with-other-overrides"],
)
def test_a_signature_with_or_without_the_configured_fragment_verifies(signed_fragment: str, status: int) -> None:
    """The fragment never reaches the server, and Twilio's docs do not say whether its signature covers it: the
    URL as requested and the URL with the configured overrides both verify; any other fragment does not."""
    app, _, _ = deployed_app(public_base_url=OURS, connection_overrides="rc=5&rp=all")
    url = f"{OURS}{PREFIX}/messages/inbound"
    with app.test_client() as client:
        answer = post(client, "/messages/inbound", inbound("hi"), base_url=OURS, signed_url=url + signed_fragment)
    assert answer.status_code == status


def test_registering_logs_the_urls_to_give_twilio(caplog: pytest.LogCaptureFixture) -> None:
    """With public_base_url known, registration logs each route's URL with the connection overrides."""
    with caplog.at_level("INFO", logger="gatekeeper.webhooks"):
        deployed_app(public_base_url=OURS)
    said = [r.getMessage() for r in caplog.records]
    assert any(m.endswith(f"{OURS}/twilio/messages/inbound#rc=5&rp=all") for m in said), said
    assert any(m.endswith(f"{OURS}/twilio/calls/status#rc=5&rp=all") for m in said), said
