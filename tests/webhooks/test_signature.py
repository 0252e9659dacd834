"""X-Twilio-Signature: the SDK's vectors through our URL reconstruction, proxies, JSON bodies, tokens."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gatekeeper.errors import ConfigError, InvalidSignature
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import Settings
from gatekeeper.webhooks import init_app
from gatekeeper.webhooks.request import parse_form
from gatekeeper.webhooks.signature import SignatureVerifier, resolve_tokens

from .helpers import (
    ACCOUNT_SID,
    ALICE,
    OTHER_TOKEN,
    PREFIX,
    TOKEN,
    FakeClock,
    Recorder,
    inbound,
    make_app,
    make_gate,
    message_status,
    post,
    sign,
)

# -- the TWILIO.md test vectors (token 12345), run through SignatureVerifier ----------------
VECTOR_TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
P = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
DOCS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
MULTI = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")]
JSON_BODY = '{"property": "value", "boolean": true}'
JSON_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"


def _request(url: str, params: Any = None, *, body: str | None = None, signature: str | None) -> Request:
    scheme_host, _, rest = url.partition("://")
    host, _, path_query = rest.partition("/")
    path, _, query = ("/" + path_query).partition("?")
    headers = [] if signature is None else [("X-Twilio-Signature", signature)]
    if body is not None:
        builder = EnvironBuilder(
            path=path,
            base_url=f"{scheme_host}://{host}",
            query_string=query,
            method="POST",
            data=body,
            content_type="application/json",
            headers=headers,
        )
    else:
        builder = EnvironBuilder(
            path=path,
            base_url=f"{scheme_host}://{host}",
            query_string=query,
            method="POST",
            data=MultiDict(params or {}),
            headers=headers,
        )
    return Request(builder.get_environ())


def _verify(request: Request, token: str = VECTOR_TOKEN) -> None:
    body = request.get_data()
    form = parse_form(body) if request.mimetype == "application/x-www-form-urlencoded" else MultiDict()
    SignatureVerifier([token]).verify(request, body, form)


@pytest.mark.parametrize(
    ("url", "params", "signature"),
    [
        pytest.param(URL, P, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", id="sdk_compute_signature"),
        pytest.param(
            "https://mycompany.com:1234/myapp.php?foo=1&bar=2",
            P,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            id="sdk_https_nonstandard_port_removed",
        ),
        pytest.param(
            "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
            P,
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            id="sdk_http_nonstandard_port_kept",
        ),
        pytest.param(URL, P, "kvajT1Ptam85bY51eRf/AJRuM3w=", id="sdk_https_port_443_added"),
        pytest.param(
            "http://mycompany.com/myapp.php?foo=1&bar=2", P, "0ZXoZLH/DfblKGATFgpif+LLRf4=", id="sdk_http_port_80_added"
        ),
        pytest.param(URL, MULTI, "IK+Dwps556ElfBT0I3Rgjkr1wJU=", id="sdk_duplicate_multivalue"),
        pytest.param(URL, DOCS, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", id="docs_worked_example"),
    ],
)
def test_twilio_vectors_verify(url: str, params: Any, signature: str) -> None:
    """Every published signature vector verifies through our URL reconstruction and form parsing."""
    _verify(_request(url, params, signature=signature))


def test_twilio_json_vector_verifies() -> None:
    """The JSON vector: bodySHA256 in the query, the raw body checked against it."""
    url = f"{URL}&bodySHA256={JSON_HASH}"
    _verify(_request(url, body=JSON_BODY, signature="a9nBmqA0ju/hNViExpshrM61xv4="))


@pytest.mark.parametrize(
    ("url", "params", "signature", "token", "reason"),
    [
        pytest.param(URL, {**P, "Digits": "1235"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "12345", "mismatch", id="tampered"),
        pytest.param(URL, P, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "54321", "mismatch", id="wrong_token"),
        pytest.param(
            "https://mycompany.com/myapp.php?foo=2&bar=2",
            P,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "12345",
            "mismatch",
            id="changed_query",
        ),
        pytest.param(
            URL,
            {k: v for k, v in P.items() if k != "Caller"},
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "12345",
            "mismatch",
            id="missing_param",
        ),
        pytest.param(URL, P, "RSOYDt4T1cUTdK1PDd93/VVr8B8", "12345", "mismatch", id="truncated_signature"),
        pytest.param(URL, P, "", "12345", "missing_header", id="empty_signature"),
        pytest.param(URL, P, None, "12345", "missing_header", id="no_header"),
        pytest.param(
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            P,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "12345",
            "mismatch",
            id="neg_scheme_changed",
        ),
    ],
)
def test_negative_vectors_fail_with_reason(
    url: str, params: Any, signature: str | None, token: str, reason: str
) -> None:
    """Tampered, wrong-token, changed-URL and missing signatures fail, each with its reason."""
    with pytest.raises(InvalidSignature) as info:
        _verify(_request(url, params, signature=signature), token)
    assert info.value.reason == reason


def test_tampered_json_body_fails_with_body_hash_mismatch() -> None:
    """A JSON body that is not the one bodySHA256 names fails as body_hash_mismatch."""
    url = f"{URL}&bodySHA256={JSON_HASH}"
    request = _request(url, body='{"property": "evil", "boolean": true}', signature="a9nBmqA0ju/hNViExpshrM61xv4=")
    with pytest.raises(InvalidSignature) as info:
        _verify(request)
    assert info.value.reason == "body_hash_mismatch"


def test_json_body_without_body_hash_is_unsigned() -> None:
    """A JSON body without bodySHA256 is not covered by the signature, so it is refused."""
    signature = RequestValidator(VECTOR_TOKEN).compute_signature(URL, {})
    with pytest.raises(InvalidSignature) as info:
        _verify(_request(URL, body=JSON_BODY, signature=signature))
    assert info.value.reason == "unsigned_body"


# -- through the blueprint ----------------------------------------------------------------
STATUS_PATH = "/messages/status"


def test_valid_signature_is_accepted(client: FlaskClient) -> None:
    """A correctly signed callback is processed (200)."""
    assert post(client, STATUS_PATH, message_status("sent")).status_code == 200


def test_tampered_param_is_refused_and_nothing_stored(client: FlaskClient, gate: Gatekeeper) -> None:
    """A parameter changed after signing gets 403 and nothing is stored."""
    fields = message_status("delivered")
    signature = sign(f"http://localhost{PREFIX}{STATUS_PATH}", fields)
    response = client.post(
        PREFIX + STATUS_PATH, data={**fields, "MessageStatus": "failed"}, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 403
    assert gate.status_of(fields["MessageSid"]) is None


def test_tampered_url_is_refused(client: FlaskClient) -> None:
    """A signature made for another URL (here a different query) gets 403."""
    fields = message_status("sent")
    signed_for = f"http://localhost{PREFIX}{STATUS_PATH}?a=1"
    assert post(client, STATUS_PATH + "?a=2", fields, signed_url=signed_for).status_code == 403


def test_missing_header_is_refused(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    """No X-Twilio-Signature: 403, and the log says why."""
    with caplog.at_level(logging.WARNING, logger="gatekeeper.webhooks"):
        assert post(client, STATUS_PATH, message_status("sent"), token=None).status_code == 403
    assert "missing_header" in caplog.text


def test_wrong_token_is_refused_and_token_never_logged(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    """A signature made with another token gets 403; neither token appears in the logs."""
    with caplog.at_level(logging.DEBUG):
        assert post(client, STATUS_PATH, message_status("sent"), token="not-the-token").status_code == 403
    assert "mismatch" in caplog.text
    assert TOKEN not in caplog.text
    assert "not-the-token" not in caplog.text


def test_rotated_second_token_is_accepted(clock: FakeClock) -> None:
    """During rotation a signature made with any configured token verifies; others still fail."""
    gate = make_gate(clock=clock, auth_tokens=[OTHER_TOKEN])
    client = make_app(gate).test_client()
    assert post(client, STATUS_PATH, message_status("sent", n=1), token=OTHER_TOKEN).status_code == 200
    assert post(client, STATUS_PATH, message_status("sent", n=2), token=TOKEN).status_code == 200
    assert post(client, STATUS_PATH, message_status("sent", n=3), token="third").status_code == 403


PUBLIC = "https://hooks.example.com"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.com", "X-Forwarded-Port": "443"}


def _proxied_client(clock: FakeClock, **webhooks: Any) -> FlaskClient:
    return make_app(make_gate(clock=clock, **webhooks)).test_client()


def test_behind_proxy_without_trusted_hops_is_refused(clock: FakeClock) -> None:
    """With no trusted proxy, X-Forwarded-* is ignored: the internal http URL does not match Twilio's https one."""
    client = _proxied_client(clock)
    response = post(
        client,
        STATUS_PATH,
        message_status("sent"),
        signed_url=f"{PUBLIC}{PREFIX}{STATUS_PATH}",
        headers=FORWARDED,
        base_url="http://10.0.0.5:8080",
    )
    assert response.status_code == 403


def test_behind_proxy_with_trusted_hop_is_accepted(clock: FakeClock) -> None:
    """With one trusted hop, the forwarded scheme, host and port rebuild the public URL Twilio signed."""
    client = _proxied_client(clock, trusted_proxy_hops=1)
    response = post(
        client,
        STATUS_PATH,
        message_status("sent"),
        signed_url=f"{PUBLIC}{PREFIX}{STATUS_PATH}",
        headers=FORWARDED,
        base_url="http://10.0.0.5:8080",
    )
    assert response.status_code == 200


def test_trusted_hop_uses_only_the_proxy_value_not_a_spoofed_one(clock: FakeClock) -> None:
    """A client-supplied X-Forwarded-Host before the proxy's own value is not trusted."""
    client = _proxied_client(clock, trusted_proxy_hops=1)
    spoofed = {**FORWARDED, "X-Forwarded-Host": "evil.example.net, hooks.example.com"}
    ok = post(
        client,
        STATUS_PATH,
        message_status("sent", n=1),
        signed_url=f"{PUBLIC}{PREFIX}{STATUS_PATH}",
        headers=spoofed,
        base_url="http://10.0.0.5:8080",
    )
    evil = post(
        client,
        STATUS_PATH,
        message_status("sent", n=2),
        signed_url=f"https://evil.example.net{PREFIX}{STATUS_PATH}",
        headers=spoofed,
        base_url="http://10.0.0.5:8080",
    )
    assert (ok.status_code, evil.status_code) == (200, 403)


def test_trusted_hop_honours_forwarded_prefix(clock: FakeClock) -> None:
    """X-Forwarded-Prefix from a trusted proxy is part of the public URL."""
    client = _proxied_client(clock, trusted_proxy_hops=1)
    response = post(
        client,
        STATUS_PATH,
        message_status("sent"),
        signed_url=f"{PUBLIC}/app{PREFIX}{STATUS_PATH}",
        headers={**FORWARDED, "X-Forwarded-Prefix": "/app"},
        base_url="http://10.0.0.5:8080",
    )
    assert response.status_code == 200


def test_public_base_url_keeps_percent_27_in_the_query(clock: FakeClock) -> None:
    """With public_base_url, the raw query is used, so a %27 Twilio signed still matches."""
    client = _proxied_client(clock, public_base_url=PUBLIC + "/")
    path = STATUS_PATH + "?tag=it%27s&x=a%20b"
    response = post(
        client, path, message_status("sent"), signed_url=f"{PUBLIC}{PREFIX}{path}", base_url="http://10.0.0.5:8080"
    )
    assert response.status_code == 200


@pytest.mark.parametrize("signed_host", ["hooks.example.com", "hooks.example.com:443"])
def test_public_base_url_port_443_stated_or_not(clock: FakeClock, signed_host: str) -> None:
    """Port 443 in the URL Twilio signed or in the configured base: both verify."""
    for base in (PUBLIC, PUBLIC + ":443"):
        client = _proxied_client(clock, public_base_url=base)
        response = post(
            client, STATUS_PATH, message_status("sent"), signed_url=f"https://{signed_host}{PREFIX}{STATUS_PATH}"
        )
        assert response.status_code == 200, base


def test_json_body_with_body_hash_is_accepted_and_tampered_refused(client: FlaskClient, recorder: Recorder) -> None:
    """A JSON Verify event signed with bodySHA256 is accepted; the same signature with another body is not."""
    body = '{"uuid": "evt-1", "type": "verification.approved", "sid": "VE' + "1" * 32 + '"}'
    digest = hashlib.sha256(body.encode()).hexdigest()
    path = f"{PREFIX}/verify/events?bodySHA256={digest}"
    signature = RequestValidator(TOKEN).compute_signature(f"http://localhost{path}", {})
    headers = {"X-Twilio-Signature": signature}
    ok = client.post(path, data=body, content_type="application/json", headers=headers)
    bad = client.post(path, data=body.replace("approved", "canceled"), content_type="application/json", headers=headers)
    assert (ok.status_code, bad.status_code) == (200, 403)
    assert [e.params["type"] for e in recorder.status] == ["verification.approved"]


def test_refused_inbound_changes_nothing(client: FlaskClient, gate: Gatekeeper, recorder: Recorder) -> None:
    """A STOP with a bad signature is not recorded and no hook runs."""
    assert post(client, "/messages/inbound", inbound("STOP"), token="forged").status_code == 403
    assert not gate.is_opted_out(ALICE)
    assert recorder.inbound == []
    assert recorder.consent == []


# -- which tokens -------------------------------------------------------------------------
def test_token_from_settings_wins_over_client_password() -> None:
    """[twilio] auth_token is the account token when set."""
    gate = Gatekeeper(
        Client(ACCOUNT_SID, "client-password", environment={}),
        settings=Settings(twilio={"auth_token": "from-settings"}),
    )
    assert resolve_tokens(gate) == ("from-settings",)
    assert resolve_tokens(gate, "explicit") == ("explicit",)


def test_token_from_client_password_with_account_sid_login() -> None:
    """A client that logs in with the account SID carries the auth token as its password."""
    gate = Gatekeeper(Client(ACCOUNT_SID, "client-password", environment={}))
    assert resolve_tokens(gate) == ("client-password",)


def test_api_key_client_without_token_is_a_config_error() -> None:
    """An API key secret cannot validate signatures: blueprint creation says to configure the auth token."""
    gate = Gatekeeper(Client("SK" + "1" * 32, "api-key-secret", ACCOUNT_SID, environment={}))
    with pytest.raises(ConfigError, match="auth_token") as info:
        make_app(gate)
    assert "API key" in str(info.value)
    assert "api-key-secret" not in str(info.value)


def test_api_key_client_with_configured_tokens_works() -> None:
    """With API-key auth, tokens from settings are used for signatures."""
    gate = Gatekeeper(
        Client("SK" + "1" * 32, "api-key-secret", ACCOUNT_SID, environment={}),
        settings=Settings(webhooks={"auth_tokens": [OTHER_TOKEN]}),
    )
    assert resolve_tokens(gate) == (OTHER_TOKEN,)


def test_verifier_repr_hides_tokens() -> None:
    """The verifier's repr never shows a token."""
    assert TOKEN not in repr(SignatureVerifier([TOKEN]))


def test_extension_state_is_registered(app: Flask, gate: Gatekeeper) -> None:
    """init_app keeps the state in app.extensions["gatekeeper"]."""
    assert app.extensions["gatekeeper"].gate is gate


# -- shared keys (the Webhooks configuration API's signing settings) -------------------------------------------
KEY_ID, KEY_SECRET = "webhooks_sharedkey_a1", "shared-key-secret-0f9e8d7c6b5a"
SHARED_URL = "https://hooks.example.com/twilio/messages/status"


def _shared_request(
    params: dict[str, str],
    *,
    secret: str = KEY_SECRET,
    algorithm: str = "HMAC_SHA256",
    key: str = KEY_ID,
    claimed: str | None = None,
) -> Request:
    """A request signed with ``secret`` and ``algorithm``, its settings header naming ``key`` and ``claimed`` (the
    algorithm it says it used; by default the one it did)."""
    signature = RequestValidator(secret).compute_signature(SHARED_URL, params, algorithm)
    headers = {
        "X-Twilio-Signature": signature,
        "X-Twilio-Webhooks-Signature-Settings": f"key={key},algorithm={claimed or algorithm}",
    }
    builder = EnvironBuilder(path="/twilio/messages/status", base_url="https://hooks.example.com", method="POST",
                             data=MultiDict(params), headers=headers)  # fmt: skip
    return Request(builder.get_environ())


def _check(request: Request, verifier: SignatureVerifier) -> None:
    body = request.get_data()
    verifier.verify(request, body, parse_form(body))


def test_a_webhook_signed_with_a_shared_key_is_checked_with_that_key_and_its_algorithm() -> None:
    """With the signature-settings header, the named shared key's secret and the header's algorithm check the
    request (HMAC-SHA256 or SHA1); an auth token's signature, an unknown key, an unknown algorithm or a tampered
    field are refused, each with its reason; without the header the auth tokens check it as always."""
    params = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered"}
    verifier = SignatureVerifier([TOKEN], shared_keys={KEY_ID: KEY_SECRET}, public_base_url="https://hooks.example.com")
    _check(_shared_request(params), verifier)
    _check(_shared_request(params, algorithm="HMAC_SHA1"), verifier)
    refusals = {
        "mismatch": _shared_request(params, secret=TOKEN),  # the auth token cannot sign for a shared key
        "unknown_shared_key": _shared_request(params, key="webhooks_sharedkey_other"),
        "unsupported_algorithm": _shared_request(params, claimed="HMAC_MD5"),
    }
    for reason, request in refusals.items():
        with pytest.raises(InvalidSignature) as info:
            _check(request, verifier)
        assert info.value.reason == reason
    tampered = _shared_request(params)
    tampered = Request(EnvironBuilder(path="/twilio/messages/status", base_url="https://hooks.example.com",
                                      method="POST", data=MultiDict({**params, "MessageStatus": "failed"}),
                                      headers=dict(tampered.headers)).get_environ())  # fmt: skip
    with pytest.raises(InvalidSignature):
        _check(tampered, verifier)
    body = '{"type": "com.twilio.accountsecurity.verify.verification.approved"}'
    query = f"bodySHA256={hashlib.sha256(body.encode()).hexdigest()}"
    signature = RequestValidator(KEY_SECRET).compute_signature(f"{SHARED_URL}?{query}", {}, "HMAC_SHA256")
    headers = {
        "X-Twilio-Signature": signature,
        "X-Twilio-Webhooks-Signature-Settings": f"key={KEY_ID},algorithm=HMAC_SHA256",
    }
    json_request = Request(EnvironBuilder(path="/twilio/messages/status", base_url="https://hooks.example.com",
                                          query_string=query, method="POST", data=body, content_type="application/json",
                                          headers=headers).get_environ())  # fmt: skip
    verifier.verify(json_request, body.encode(), MultiDict())  # a JSON body through bodySHA256, with the key
    assert KEY_SECRET not in repr(verifier) and KEY_ID in repr(verifier)


def test_shared_keys_alone_need_no_auth_token_and_refuse_token_signed_requests() -> None:
    """An API-key client with ``[webhooks] shared_keys`` mounts the webhooks without an auth token; a request
    carrying no signature settings is then refused (nothing could have signed it)."""
    gate = Gatekeeper(
        Client("SK" + "1" * 32, "api-key-secret", ACCOUNT_SID, environment={}),
        settings=Settings(
            webhooks={"shared_keys": {KEY_ID: KEY_SECRET}, "public_base_url": "https://hooks.example.com"}
        ),
    )
    assert resolve_tokens(gate) == ()
    app = Flask("shared")
    init_app(app, gate)
    params = {"MessageSid": "SM" + "2" * 32, "MessageStatus": "delivered", "To": ALICE}
    shared = _shared_request(params)
    client = app.test_client()
    ok = client.post(
        "/twilio/messages/status", data=params, headers=dict(shared.headers), base_url="https://hooks.example.com"
    )
    assert ok.status_code == 200
    plain = {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(SHARED_URL, params)}
    refused = client.post("/twilio/messages/status", data=params, headers=plain, base_url="https://hooks.example.com")
    assert refused.status_code == 403
