"""Every sandbox response, success and error, validates against Twilio's own OpenAPI schemas.

The specs are vendored in ``tests/data/twilio-oai`` (see its README). Each response is taken
off the wire as the real twilio SDK received it (a ``requests`` response hook on the SDK's
HTTP client) and checked with ``jsonschema`` against the response schema of the matching
operation, converted from OpenAPI 3.0.1 to JSON Schema:

* ``$ref`` is resolved inline (OpenAPI 3.0 ignores a ``$ref``'s siblings, and so do we);
* ``nullable: true`` allows ``null`` (added to ``type`` and to ``enum``);
* the Lookup v2 spec marks nothing nullable although Twilio's own examples (and docs: carrier
  fields are null for toll-free numbers, ``error_code`` is null on success) return nulls, so
  for that spec every property allows ``null`` (the README's noted quirk);
* stricter than the spec: every declared property is required and no other property is
  allowed, since Twilio answers every field (its examples pass this; see the first test);
* formats are checked: RFC 2822 dates, ISO 8601 ``date-time``, E.164 ``phone-number``, ``uri``.

Error bodies are checked against the Twilio error object the specs declare (``code``,
``message``, ``more_info``, ``status``): the operation's own 4xx response when it declares one
(Verify's 429), else the one the same spec uses elsewhere, else Lookup's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema import Draft7Validator, FormatChecker
from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from gatekeeper.sandbox import TEST_SUBACCOUNT_SID, Sandbox, SandboxServer, sandbox_client

SPECS = Path(__file__).resolve().parents[1] / "data" / "twilio-oai"
LOOKUPS, API, VERIFY = "twilio_lookups_v2.json", "twilio_api_v2010.json", "twilio_verify_v2.json"
NULLABLE_EVERYWHERE = {LOOKUPS}
_OAS_ONLY = {"nullable", "description", "example", "examples", "deprecated", "readOnly", "writeOnly", "title"}

LOOKUP_OP = (LOOKUPS, "/v2/PhoneNumbers/{PhoneNumber}", "get")
MESSAGE_CREATE = (API, "/2010-04-01/Accounts/{AccountSid}/Messages.json", "post")
MESSAGE_FETCH = (API, "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json", "get")
CALL_CREATE = (API, "/2010-04-01/Accounts/{AccountSid}/Calls.json", "post")
CALL_FETCH = (API, "/2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json", "get")
ACCOUNT_FETCH = (API, "/2010-04-01/Accounts/{Sid}.json", "get")
VERIFICATION_CREATE = (VERIFY, "/v2/Services/{ServiceSid}/Verifications", "post")
VERIFICATION_CHECK = (VERIFY, "/v2/Services/{ServiceSid}/VerificationCheck", "post")
OPERATIONS = (
    LOOKUP_OP,
    MESSAGE_CREATE,
    MESSAGE_FETCH,
    CALL_CREATE,
    CALL_FETCH,
    VERIFICATION_CREATE,
    VERIFICATION_CHECK,
    ACCOUNT_FETCH,
)
SERVICE = "VA" + "7" * 32
Operation = tuple[str, str, str]


@cache
def spec(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SPECS / name).read_text(encoding="utf-8"))
    return data


def to_json_schema(node: Any, spec_name: str, *, in_property: bool = False) -> Any:
    """OpenAPI 3.0 schema → strict JSON Schema (see the module docstring)."""
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = spec(spec_name)
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return to_json_schema(target, spec_name, in_property=in_property)
    out = {k: v for k, v in node.items() if k not in _OAS_ONLY and not k.startswith("x-")}
    if "properties" in out:
        out["properties"] = {k: to_json_schema(v, spec_name, in_property=True) for k, v in out["properties"].items()}
        out["required"] = sorted(out["properties"])
        out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = to_json_schema(out[key], spec_name)
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [to_json_schema(s, spec_name) for s in out[key]]
    if node.get("nullable") or (in_property and spec_name in NULLABLE_EVERYWHERE):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _operation(op: Operation) -> dict[str, Any]:
    name, path, method = op
    found: dict[str, Any] = spec(name)["paths"][path][method]
    return found


def _json_schema_of(response: dict[str, Any], spec_name: str) -> Any:
    return to_json_schema(response["content"]["application/json"]["schema"], spec_name)


def response_schema(op: Operation, status: int) -> Any:
    """The JSON Schema for ``status`` of ``op`` (errors: see the module docstring)."""
    responses = _operation(op)["responses"]
    if str(status) in responses and "content" in responses[str(status)]:
        return _json_schema_of(responses[str(status)], op[0])
    assert status >= 400, f"{op} declares no {status} response"
    for name in (op[0], LOOKUPS):
        for methods in spec(name)["paths"].values():
            for operation in methods.values():
                for code, response in operation.get("responses", {}).items() if isinstance(operation, dict) else ():
                    if code.startswith("4") and "content" in response:
                        return _json_schema_of(response, name)
    raise AssertionError("no error schema in the specs")


FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time-rfc-2822", raises=(TypeError, ValueError))
def _rfc2822(value: object) -> bool:
    return not isinstance(value, str) or parsedate_to_datetime(value).utcoffset() is not None


@FORMATS.checks("date-time", raises=ValueError)
def _iso8601(value: object) -> bool:
    return not isinstance(value, str) or bool(datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))


@FORMATS.checks("phone-number")
def _e164(value: object) -> bool:
    # E.164, or a channel address (Twilio's description of the field): WhatsApp's number, Messenger's id.
    return not isinstance(value, str) or bool(re.fullmatch(r"(whatsapp:)?\+[0-9]{6,15}|messenger:[A-Za-z0-9]+", value))


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    return not isinstance(value, str) or value.startswith(("https://", "http://"))


def assert_valid(body: Any, schema: Any) -> None:
    errors = sorted(Draft7Validator(schema, format_checker=FORMATS).iter_errors(body), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


# -- sanity of the conversion ------------------------------------------------------------------


def _examples(op: Operation) -> list[tuple[int, Any]]:
    found = []
    for code, response in _operation(op)["responses"].items():
        for example in response.get("content", {}).get("application/json", {}).get("examples", {}).values():
            found.append((int(code), example["value"]))
    return found


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: f"{op[2]} {op[1]}")
def test_twilio_examples_pass_the_converted_schemas(op: Operation) -> None:
    """Twilio's own response examples validate against the converted (strict) schemas."""
    examples = _examples(op)
    assert examples
    for status, body in examples:
        assert_valid(body, response_schema(op, status))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(status="bogus"),
        lambda b: b.pop("sid"),
        lambda b: b.update(colour="red"),
        lambda b: b.update(sid="SM123"),
        lambda b: b.update(date_created="yesterday"),
        lambda b: b.update(direction=None),
    ],
    ids=["bad-enum", "missing", "extra", "bad-pattern", "bad-date", "null-not-nullable"],
)
def test_converted_schemas_reject_wrong_bodies(mutate: Callable[[dict[str, Any]], Any]) -> None:
    """The conversion keeps teeth: enums, required fields, patterns, formats and non-null refs bite."""
    body = dict(_examples(MESSAGE_CREATE)[0][1])
    mutate(body)
    errors = list(Draft7Validator(response_schema(MESSAGE_CREATE, 201), format_checker=FORMATS).iter_errors(body))
    assert errors


# -- the sandbox's real responses ----------------------------------------------------------------


class Wire:
    """A real SDK client whose raw HTTP responses are kept."""

    def __init__(self, server: SandboxServer, **kwargs: Any) -> None:
        self.responses: list[requests.Response] = []

        def hook(response: requests.Response, *args: Any, **kw: Any) -> None:
            self.responses.append(response)

        self.client: Client = sandbox_client(server.url, request_hooks={"response": [hook]}, **kwargs)

    def last(self) -> requests.Response:
        return self.responses[-1]


@pytest.fixture
def wire(sandbox_server: SandboxServer, sandbox: Sandbox) -> Wire:
    return Wire(sandbox_server)


def _msg(c: Client, to: str = "+14155550100", **kw: Any) -> Any:
    return c.messages.create(to=to, **({"from_": "+15005550006", "body": "hi"} | kw))


def _fetch_message_after_flush(to: str) -> Callable[[Client, Sandbox], Any]:
    def action(c: Client, sandbox: Sandbox) -> Any:
        sid = _msg(c, to).sid
        sandbox.flush_callbacks()
        return c.messages(sid).fetch()

    return action


def _fetch_call_after_flush_to(to: str) -> Callable[[Client, Sandbox], Any]:
    def action(c: Client, sandbox: Sandbox) -> Any:
        sid = c.calls.create(to=to, from_="+15005550006", twiml="<Response/>").sid
        sandbox.flush_callbacks()
        return c.calls(sid).fetch()

    return action


_fetch_call_after_flush = _fetch_call_after_flush_to("+14155550100")


def _check(code: str, *, start: bool = True, to: str = "+14155550100") -> Callable[[Client, Sandbox], Any]:
    def action(c: Client, sandbox: Sandbox) -> Any:
        service = c.verify.v2.services(SERVICE)
        if start:
            service.verifications.create(to=to, channel="sms")
        return service.verification_checks.create(to=to, code=code)

    return action


def _six_sends(c: Client, sandbox: Sandbox) -> Any:
    for _ in range(6):
        c.verify.v2.services(SERVICE).verifications.create(to="+14155550100", channel="sms")


def _verify_sms(c: Client, sandbox: Sandbox) -> Any:
    return c.verify.v2.services(SERVICE).verifications.create(to="+14155550100", channel="sms")


def _with_token(token: str, action: Callable[[Client, Sandbox], Any]) -> Callable[[Client, Sandbox], Any]:
    """``action``, run by a client that authenticates with ``token`` instead of the test token."""

    def wrapped(c: Client, sandbox: Sandbox) -> Any:
        return action(c, sandbox)

    wrapped.auth_token = token  # type: ignore[attr-defined]
    return wrapped


def _lookup(number: str, **kw: str) -> Callable[[Client, Sandbox], Any]:
    return lambda c, sandbox: c.lookups.v2.phone_numbers(number).fetch(**kw)


def _faulted(kind: str, route: str, then: Callable[[Client, Sandbox], Any]) -> Callable[[Client, Sandbox], Any]:
    def action(c: Client, sandbox: Sandbox) -> Any:
        sandbox.add_fault(kind, route=route, times=1)
        return then(c, sandbox)

    return action


ALL_FIELDS = (
    "validation,caller_name,sim_swap,call_forwarding,line_status,line_type_intelligence,identity_match,"
    "reassigned_number,sms_pumping_risk,phone_number_quality_score,pre_fill"
)

Action = Callable[[Client, Sandbox], Any]
CASES: list[tuple[str, Operation, int, Action]] = [
    ("lookup-basic", LOOKUP_OP, 200, _lookup("+14155550100")),
    (
        "lookup-all-fields",
        LOOKUP_OP,
        200,
        _lookup("+14155550100", fields=ALL_FIELDS, last_verified_date="20240101"),
    ),
    ("lookup-toll-free", LOOKUP_OP, 200, _lookup("+18005550199", fields=ALL_FIELDS)),
    ("lookup-gg", LOOKUP_OP, 200, _lookup("+447911123456", fields=ALL_FIELDS)),
    ("lookup-derived", LOOKUP_OP, 200, _lookup("+13125550142", fields=ALL_FIELDS)),
    ("lookup-invalid", LOOKUP_OP, 200, _lookup("+141599299600", fields="line_type_intelligence")),
    ("lookup-not-a-number", LOOKUP_OP, 200, _lookup("abc")),
    ("lookup-bad-field", LOOKUP_OP, 400, _lookup("+14155550100", fields="nope")),
    ("lookup-500", LOOKUP_OP, 500, _faulted("error", "lookup", _lookup("+14155550100"))),
    ("lookup-429", LOOKUP_OP, 429, _faulted("too_many_requests", "lookup", _lookup("+14155550100"))),
    ("message-create", MESSAGE_CREATE, 201, lambda c, s: _msg(c)),
    (
        "message-create-service",
        MESSAGE_CREATE,
        201,
        lambda c, s: c.messages.create(to="+14155550100", messaging_service_sid="MG" + "1" * 32, body="hi"),
    ),
    (
        "message-create-media",
        MESSAGE_CREATE,
        201,
        lambda c, s: _msg(c, body="", media_url=["https://example.com/a.png"]),
    ),
    ("message-create-21211", MESSAGE_CREATE, 400, lambda c, s: _msg(c, "+15005550001")),
    ("message-create-30450", MESSAGE_CREATE, 400, lambda c, s: _msg(c, "+15005550010")),
    ("message-create-30453", MESSAGE_CREATE, 400, lambda c, s: _msg(c, "+15005550011")),
    ("message-create-sip-21211", MESSAGE_CREATE, 400, lambda c, s: _msg(c, "sip:alice@example.com")),
    ("message-create-21910", MESSAGE_CREATE, 400, lambda c, s: _msg(c, "messenger:12345")),
    (
        "message-create-whatsapp-landline",
        MESSAGE_CREATE,
        201,
        lambda c, s: _msg(c, "whatsapp:+14155550101", from_="whatsapp:+15005550006"),
    ),
    (
        "message-create-messenger",
        MESSAGE_CREATE,
        201,
        lambda c, s: _msg(c, "messenger:12345", from_="messenger:999"),
    ),
    (
        "message-create-subaccount",
        MESSAGE_CREATE,
        201,
        lambda c, s: c.api.v2010.accounts(TEST_SUBACCOUNT_SID).messages.create(
            to="+14155550100", from_="+15005550006", body="hi"
        ),
    ),
    ("message-create-21610", MESSAGE_CREATE, 400, lambda c, s: _msg(c, "+15005550004")),
    ("message-create-21604", MESSAGE_CREATE, 400, lambda c, s: _msg(c, "")),
    (
        "message-create-other-account",
        MESSAGE_CREATE,
        404,
        lambda c, s: c.api.v2010.accounts("AC" + "b" * 32).messages.create(to="+1", from_="+1", body="x"),
    ),
    ("message-fetch-delivered", MESSAGE_FETCH, 200, _fetch_message_after_flush("+14155550100")),
    ("message-fetch-undelivered", MESSAGE_FETCH, 200, _fetch_message_after_flush("+14155550104")),
    ("message-fetch-404", MESSAGE_FETCH, 404, lambda c, s: c.messages("SM" + "0" * 32).fetch()),
    ("message-fetch-whatsapp-landline", MESSAGE_FETCH, 200, _fetch_message_after_flush("whatsapp:+14155550101")),
    (
        "call-create",
        CALL_CREATE,
        201,
        lambda c, s: c.calls.create(to="+14155550100", from_="+15005550006", twiml="<Response/>"),
    ),
    (
        "call-create-url",
        CALL_CREATE,
        201,
        lambda c, s: c.calls.create(to="+447911123456", from_="+15005550006", url="https://example.com/t"),
    ),
    (
        "call-create-sip",
        CALL_CREATE,
        201,
        lambda c, s: c.calls.create(to="sip:bob@example.com;transport=tls", from_="+15005550006", twiml="<Response/>"),
    ),
    (
        "call-create-client",
        CALL_CREATE,
        201,
        lambda c, s: c.calls.create(to="client:alice", from_="+15005550006", twiml="<Response/>"),
    ),
    (
        "call-create-sip-21211",
        CALL_CREATE,
        400,
        lambda c, s: c.calls.create(to="sip:", from_="+15005550006", twiml="<Response/>"),
    ),
    (
        "call-create-subaccount",
        CALL_CREATE,
        201,
        lambda c, s: c.api.v2010.accounts(TEST_SUBACCOUNT_SID).calls.create(
            to="+14155550100", from_="+15005550006", twiml="<Response/>"
        ),
    ),
    (
        "call-create-21205",
        CALL_CREATE,
        400,
        lambda c, s: c.calls.create(to="+14155550100", from_="+15005550006"),
    ),
    (
        "call-create-12100",
        CALL_CREATE,
        400,
        lambda c, s: c.calls.create(to="+14155550100", from_="+15005550006", twiml="<Response>"),
    ),
    ("call-fetch-completed", CALL_FETCH, 200, _fetch_call_after_flush),
    ("call-fetch-client-completed", CALL_FETCH, 200, _fetch_call_after_flush_to("client:alice")),
    ("call-fetch-404", CALL_FETCH, 404, lambda c, s: c.calls("CA" + "0" * 32).fetch()),
    (
        "verification-sms",
        VERIFICATION_CREATE,
        201,
        lambda c, s: c.verify.v2.services(SERVICE).verifications.create(to="+14155550100", channel="sms"),
    ),
    (
        "verification-email",
        VERIFICATION_CREATE,
        201,
        lambda c, s: c.verify.v2.services(SERVICE).verifications.create(to="a@example.com", channel="email"),
    ),
    (
        "verification-60205",
        VERIFICATION_CREATE,
        403,
        lambda c, s: c.verify.v2.services(SERVICE).verifications.create(to="+14155550101", channel="sms"),
    ),
    (
        "verification-60410",
        VERIFICATION_CREATE,
        403,
        lambda c, s: c.verify.v2.services(SERVICE).verifications.create(to="+14155550108", channel="sms"),
    ),
    (
        "verification-60200",
        VERIFICATION_CREATE,
        400,
        lambda c, s: c.verify.v2.services(SERVICE).verifications.create(to="+14155550100", channel="fax"),
    ),
    ("verification-60203", VERIFICATION_CREATE, 429, _six_sends),
    ("verification-401", VERIFICATION_CREATE, 401, _with_token("wrong", _verify_sms)),
    ("check-approved", VERIFICATION_CHECK, 200, _check("123456")),
    ("check-wrong-code", VERIFICATION_CHECK, 200, _check("000000")),
    ("check-nothing-pending", VERIFICATION_CHECK, 404, _check("123456", start=False)),
    ("account-own", ACCOUNT_FETCH, 200, lambda c, sandbox: c.api.accounts(c.account_sid).fetch()),
    ("account-sub", ACCOUNT_FETCH, 200, lambda c, sandbox: c.api.accounts(TEST_SUBACCOUNT_SID).fetch()),
    ("account-other", ACCOUNT_FETCH, 404, lambda c, sandbox: c.api.accounts("AC" + "9" * 32).fetch()),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sandbox_responses_match_twilio_schemas(
    sandbox_server: SandboxServer, sandbox: Sandbox, case: tuple[str, Operation, int, Action]
) -> None:
    """The response of each route (success and error) validates against the operation's schema."""
    name, op, status, action = case
    wire = Wire(sandbox_server, auth_token=getattr(action, "auth_token", None))
    try:
        action(wire.client, sandbox)
    except TwilioException:
        assert status >= 400, f"{name}: unexpected error"
    response = wire.last()
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert_valid(body, response_schema(op, status))
    if status >= 400:
        assert body["status"] == status
        assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}"


def test_vendored_specs_match_the_shared_copies() -> None:
    """The vendored specs are byte-for-byte Twilio's, where the shared copies are at hand (../shared)."""
    shared = Path(__file__).resolve().parents[3] / "shared" / "twilio-oai"
    if not shared.is_dir():
        pytest.skip(f"no shared twilio-oai next to this checkout ({shared}); the vendored copies are used as they are")
    for name in ("twilio_api_v2010.json", "twilio_lookups_v2.json", "twilio_verify_v2.json", "LICENSE"):
        assert (SPECS / name).read_bytes() == (shared / name).read_bytes(), name
