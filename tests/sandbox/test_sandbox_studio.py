"""Studio v2 Executions: create and fetch through the SDK, the JSON shape, bad input, control and faults."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gatekeeper.sandbox import (
    TEST_ACCOUNT_SID,
    TEST_SUBACCOUNT_AUTH_TOKEN,
    TEST_SUBACCOUNT_SID,
    Sandbox,
    SandboxControlClient,
    SandboxServer,
    sandbox_client,
)

FLOW = "FW" + "c" * 32
OTHER_FLOW = "FW" + "d" * 32
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _executions(client: Client, flow: str = FLOW) -> Any:
    return client.studio.v2.flows(flow).executions


def test_create_answers_an_active_execution(client: Client, sandbox: Sandbox) -> None:
    """An execution is FN + 32 hex, active, for the flow and account, with the To as contact address."""
    execution = _executions(client).create(to="+14155550100", from_="+15005550006", parameters={"name": "Zeke"})
    assert re.fullmatch(r"FN[0-9a-f]{32}", execution.sid)
    assert re.fullmatch(r"FX[0-9a-f]{32}", execution.contact_sid)
    assert (execution.status, execution.flow_sid, execution.account_sid) == ("active", FLOW, TEST_ACCOUNT_SID)
    assert (execution.contact_channel_address, execution.flow_version) == ("+14155550100", 1)
    assert execution.context["flow"]["data"] == {"name": "Zeke"}
    assert execution.context["flow"]["channel"]["address"] == "+15005550006"
    assert execution.context["contact"]["channel"]["address"] == "+14155550100"
    assert isinstance(execution.date_created, datetime)
    assert execution.date_created.tzinfo == timezone.utc
    url = f"https://studio.twilio.com/v2/Flows/{FLOW}/Executions/{execution.sid}"
    assert execution.url == url
    assert execution.links == {"steps": f"{url}/Steps", "execution_context": f"{url}/Context"}
    assert execution.initiated_by == f"RQ{sandbox.requests('executions.create')[0].id:032x}"


def _wire(server: SandboxServer) -> tuple[Client, list[requests.Response]]:
    """A real SDK client that keeps the raw HTTP responses it received."""
    seen: list[requests.Response] = []
    return sandbox_client(server.url, request_hooks={"response": [lambda r, *a, **k: seen.append(r)]}), seen


def test_wire_shape_has_every_field_the_sdk_reads(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """The raw 201 body has exactly the keys ExecutionInstance reads, dates in ISO 8601 (Z)."""
    client, seen = _wire(sandbox_server)
    _executions(client).create(to="+14155550100", from_="+15005550006")
    (response,) = seen
    assert response.status_code == 201
    body = response.json()
    assert list(body) == [
        "sid",
        "account_sid",
        "flow_sid",
        "contact_channel_address",
        "contact_sid",
        "flow_version",
        "context",
        "status",
        "date_created",
        "date_updated",
        "initiated_by",
        "url",
        "links",
    ]
    assert ISO.match(body["date_created"])
    assert ISO.match(body["date_updated"])
    assert body["context"]["flow"]["data"] == {}


def test_fetch_returns_the_execution(client: Client) -> None:
    """GET Flows/{FW}/Executions/{FN} returns it; another flow's path or an unknown SID is 404 / 20404."""
    created = _executions(client).create(to="+14155550100", from_="+15005550006")
    fetched = _executions(client)(created.sid).fetch()
    assert (fetched.sid, fetched.status, fetched.context) == (created.sid, "active", created.context)
    for flow, sid in ((OTHER_FLOW, created.sid), (FLOW, "FN" + "0" * 32)):
        with pytest.raises(TwilioRestException) as caught:
            _executions(client, flow)(sid).fetch()
        assert (caught.value.status, caught.value.code) == (404, 20404)


def test_other_account_cannot_fetch_it(sandbox_server: SandboxServer, client: Client) -> None:
    """An execution belongs to the account whose credentials created it."""
    created = _executions(client).create(to="+14155550100", from_="+15005550006")
    sub = sandbox_client(sandbox_server.url, TEST_SUBACCOUNT_SID, TEST_SUBACCOUNT_AUTH_TOKEN)
    with pytest.raises(TwilioRestException) as caught:
        _executions(sub)(created.sid).fetch()
    assert caught.value.status == 404
    assert _executions(sub).create(to="+14155550100", from_="+15005550006").account_sid == TEST_SUBACCOUNT_SID


def test_channel_addresses_are_contacts(client: Client) -> None:
    """WhatsApp and Messenger contacts are accepted; a national number is normalized to E.164."""
    cases = [
        ("whatsapp:+14155550101", "whatsapp:+15005550006", "whatsapp:+14155550101"),
        ("messenger:12345", "messenger:999", "messenger:12345"),
        ("(415) 555-0100", "+15005550006", "+14155550100"),
    ]
    for to, from_, expected in cases:
        assert _executions(client).create(to=to, from_=from_).contact_channel_address == expected


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "", "from_": "+15005550006"}, 20001),
        ({"to": "+14155550100", "from_": ""}, 20001),
        ({"to": "+14155550100", "from_": "+15005550006", "parameters": [1, 2]}, 20001),
        ({"to": "+14155550100", "from_": "+15005550006", "parameters": '"text"'}, 20001),
        ({"to": "+14155550100", "from_": "+15005550006", "parameters": "{not json"}, 20001),
        ({"to": "+1415555", "from_": "+15005550006"}, 21211),
        ({"to": "sip:alice@example.com", "from_": "+15005550006"}, 21211),
        ({"to": "+14155550100", "from_": "+1" + "5" * 300}, 81023),
    ],
)
def test_bad_input_is_400(sandbox_server: SandboxServer, sandbox: Sandbox, kwargs: dict[str, Any], code: int) -> None:
    """Missing To/From, Parameters that is not a JSON object, an invalid To, an over-long pair: 400 bodies."""
    client, seen = _wire(sandbox_server)
    with pytest.raises(TwilioRestException) as caught:
        _executions(client).create(**kwargs)
    assert (caught.value.status, caught.value.code) == (400, code)
    body = seen[-1].json()
    assert (body["status"], body["code"]) == (400, code)
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert sandbox.executions() == []


def test_missing_to_names_the_parameter(client: Client) -> None:
    """The SDK surfaces Studio's 400 with the missing parameter named."""
    with pytest.raises(TwilioRestException) as caught:
        _executions(client).create(to="", from_="+15005550006")
    assert (caught.value.status, caught.value.code) == (400, 20001)
    assert "To" in caught.value.msg


def test_malformed_flow_sid_is_404(client: Client, sandbox: Sandbox) -> None:
    """A flow SID that is not FW + 32 hex answers 404 / 20404."""
    with pytest.raises(TwilioRestException) as caught:
        _executions(client, "FW123").create(to="+14155550100", from_="+15005550006")
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_control_lists_and_reset_forgets(sandbox_server: SandboxServer, client: Client, sandbox: Sandbox) -> None:
    """executions() and GET /_sandbox/executions list them; reset() forgets them."""
    created = _executions(client).create(to="+14155550100", from_="+15005550006", parameters={"n": 1})
    assert [e["sid"] for e in sandbox.executions()] == [created.sid]
    found = sandbox.execution(created.sid)
    assert found is not None
    assert found["context"]["flow"]["data"] == {"n": 1}
    remote = SandboxControlClient(sandbox_server.url)
    try:
        assert [e["sid"] for e in remote.executions()] == [created.sid]
        one = requests.get(f"{sandbox_server.url}/_sandbox/executions/{created.sid}", timeout=5)
        assert one.json()["flow_sid"] == FLOW
        assert requests.get(f"{sandbox_server.url}/_sandbox/executions/FNnope", timeout=5).status_code == 404
        remote.reset()
        assert remote.executions() == []
    finally:
        remote.close()
    assert sandbox.execution(created.sid) is None


def test_faults_and_request_filters_use_the_route_name(client: Client, sandbox: Sandbox) -> None:
    """A fault on executions.create fires once; requests are filed under executions.* with the To number."""
    sandbox.add_fault("error", route="executions.create", times=1, status=503, code=20503, message="Busy")
    with pytest.raises(TwilioRestException) as caught:
        _executions(client).create(to="+14155550100", from_="+15005550006")
    assert (caught.value.status, caught.value.code) == (503, 20503)
    created = _executions(client).create(to="+14155550100", from_="+15005550006")
    _executions(client)(created.sid).fetch()
    assert [r.route for r in sandbox.requests("executions")] == [
        "executions.create",
        "executions.create",
        "executions.fetch",
    ]
    assert sandbox.request_count("executions.create", number="+14155550100") == 2


def test_parameters_arrive_as_json_text(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """The SDK sends Parameters as JSON text, and nested values come back as sent."""
    data = {"order": {"id": 7, "items": ["a", "b"]}, "vip": True}
    execution = _executions(sandbox_client(sandbox_server.url)).create(
        to="+14155550100", from_="+15005550006", parameters=data
    )
    (recorded,) = sandbox.requests("executions.create")
    assert json.loads(recorded.form["Parameters"][0]) == data
    assert execution.context["flow"]["data"] == data
