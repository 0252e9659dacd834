"""Every sending door of the drop-in takes the one gate, over real HTTP to the sandbox; unknown ones fail closed.

The README's table of doors is this file: each row (a door, an account, a kind of destination) has
a test here, and a walk over the SDK's Messaging, Voice, Verify and Studio resources proves that
every creating call is either gated or refused.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses
from twilio.base.list_resource import ListResource
from twilio.http.response import Response
from twilio.rest import Client

from gatekeeper import GatedClient, Gatekeeper, GateRefused, Settings, Stores, UngatedCall
from gatekeeper.client import NOT_SENDING, call_name
from gatekeeper.sandbox import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    TEST_SUBACCOUNT_AUTH_TOKEN,
    TEST_SUBACCOUNT_SID,
    Sandbox,
    SandboxHttpClient,
    SandboxServer,
)
from gatekeeper.stores.memory import MemoryStore

MOBILE, LANDLINE = "+14155550100", "+14155550101"
FROM = "+15005550006"
VA = "VA" + "0" * 32
FLOW = "FW" + "1" * 32
GATED = {
    "api.v2010.account.message.create",
    "api.v2010.account.call.create",
    "verify.v2.service.verification.create",
    "studio.v1.flow.execution.create",
    "studio.v2.flow.execution.create",
}


@pytest.fixture
def gated(sandbox_server: SandboxServer, sandbox: Sandbox) -> GatedClient:
    client = sandbox_server.client()
    return GatedClient(client, Gatekeeper(client, stores=Stores.using(MemoryStore())))


def accounts(client: GatedClient) -> dict[str, Any]:
    """The same account's resources reached four ways, and a subaccount's."""
    return {
        "top-level": client,
        "api.account": client.api.account,
        "api.v2010.accounts(own)": client.api.v2010.accounts(TEST_ACCOUNT_SID),
        "fetched AccountInstance": client.api.accounts(TEST_ACCOUNT_SID).fetch(),
        "subaccount": client.api.accounts(TEST_SUBACCOUNT_SID),
    }


WAYS = ["top-level", "api.account", "api.v2010.accounts(own)", "fetched AccountInstance", "subaccount"]


# -- Messages -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("way", WAYS)
def test_messages_to_a_number_are_gated_on_every_account_path(gated: GatedClient, sandbox: Sandbox, way: str) -> None:
    """An SMS to a landline is refused 21614 and an invalid number 21211 on every path; a mobile is sent on the
    account of the path it was asked on."""
    messages = accounts(gated)[way].messages
    with pytest.raises(GateRefused) as landline:
        messages.create(to=LANDLINE, from_=FROM, body="hi")
    assert landline.value.code == 21614
    with pytest.raises(GateRefused) as invalid:
        messages.create(to="+1 415 555 01", from_=FROM, body="hi")
    assert invalid.value.code == 21211
    sent = messages.create(to=MOBILE, from_=FROM, body="hi")
    expected = TEST_SUBACCOUNT_SID if way == "subaccount" else TEST_ACCOUNT_SID
    assert (sent.account_sid, [m["sid"] for m in sandbox.messages()]) == (expected, [sent.sid])


@pytest.mark.parametrize("way", ["top-level", "subaccount"])
def test_whatsapp_messages_keep_their_prefix(gated: GatedClient, sandbox: Sandbox, way: str) -> None:
    """WhatsApp to a landline goes out as WhatsApp, prefix kept; a WhatsApp STOP refuses the next one 21610."""
    messages = accounts(gated)[way].messages
    sent = messages.create(to="whatsapp:" + LANDLINE, from_="whatsapp:" + FROM, body="hi")
    assert sandbox.message(sent.sid)["to"] == "whatsapp:" + LANDLINE
    gated.gate.opt_out("whatsapp:" + LANDLINE)
    with pytest.raises(GateRefused) as refused:
        messages.create(to="whatsapp:" + LANDLINE, from_="whatsapp:" + FROM, body="hi")
    assert refused.value.code == 21610


def test_messenger_messages_are_sent_without_a_lookup(gated: GatedClient, sandbox: Sandbox) -> None:
    """A Messenger address is a message on its own channel: sent, no Lookup paid."""
    sent = gated.messages.create(to="messenger:24680", from_="messenger:13579", body="hi")
    assert sandbox.message(sent.sid)["to"] == "messenger:24680"
    assert sandbox.lookup_counts() == {}


@pytest.mark.parametrize("address", ["sip:alice@example.com", "client:alice"])
def test_messages_to_a_call_address_are_refused(gated: GatedClient, sandbox: Sandbox, address: str) -> None:
    """A text cannot reach sip: or client:: refused 21211 before Twilio is asked."""
    with pytest.raises(GateRefused) as refused:
        gated.messages.create(to=address, from_=FROM, body="hi")
    assert refused.value.code == 21211
    assert sandbox.request_count(route="messages.create") == 0


# -- Calls ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("way", WAYS)
def test_calls_are_gated_on_every_account_path(gated: GatedClient, sandbox: Sandbox, way: str) -> None:
    """A call reaches a landline; an opted-out number is refused 21610; the call is made on the path's account."""
    calls = accounts(gated)[way].calls
    placed = calls.create(to=LANDLINE, from_=FROM, url="https://example.com/twiml")
    expected = TEST_SUBACCOUNT_SID if way == "subaccount" else TEST_ACCOUNT_SID
    assert placed.account_sid == expected
    gated.gate.opt_out(MOBILE)
    with pytest.raises(GateRefused) as refused:
        calls.create(to=MOBILE, from_=FROM, url="https://example.com/twiml")
    assert refused.value.code == 21610


@pytest.mark.parametrize("where", ["top-level", "subaccount"])
@pytest.mark.parametrize("address", ["sip:alice@example.com;transport=tls", "client:alice"])
def test_calls_to_sip_and_client_are_placed_without_a_lookup(
    gated: GatedClient, sandbox: Sandbox, address: str, where: str
) -> None:
    """sip: and client: are ordinary Voice destinations: called on the account asked, no Lookup (policy may
    deny them: the next test)."""
    calls = gated.api.accounts(TEST_SUBACCOUNT_SID).calls if where == "subaccount" else gated.calls
    placed = calls.create(to=address, from_=FROM, url="https://e.com/t")
    call = sandbox.call(placed.sid)
    assert call is not None and call["to"] == address
    assert call["account_sid"] == (TEST_SUBACCOUNT_SID if where == "subaccount" else TEST_ACCOUNT_SID)
    assert sandbox.lookup_counts() == {}


def test_calls_to_a_denied_address_kind_are_refused(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """deny_channels = ["sip"] refuses SIP calls (21612) without reaching Twilio."""
    client = sandbox_server.client()
    gate = Gatekeeper(client, settings=Settings(policy={"deny_channels": ["sip"]}), stores=Stores.memory())
    with pytest.raises(GateRefused) as refused:
        GatedClient(client, gate).calls.create(to="sip:alice@example.com", from_=FROM, url="https://e.com/t")
    assert refused.value.code == 21612
    assert sandbox.request_count(route="calls.create") == 0


# -- Verify ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("channel", "refused_to", "code"),
    [("sms", LANDLINE, 60205), ("call", "+1 415 555 01", 60200), ("whatsapp", "+1 415 555 01", 60200)],
)
def test_verifications_are_gated(
    gated: GatedClient, sandbox: Sandbox, channel: str, refused_to: str, code: int
) -> None:
    """Verify SMS, call and WhatsApp are gated with Verify's codes, then sent with Verify's channel name."""
    verifications = gated.verify.v2.services(VA).verifications
    with pytest.raises(GateRefused) as refused:
        verifications.create(to=refused_to, channel=channel)
    assert refused.value.code == code
    started = verifications.create(to=MOBILE, channel=channel)
    assert (started.channel, [v["channel"] for v in sandbox.verifications()]) == (channel, [channel])


def test_checking_a_code_passes_through(gated: GatedClient, sandbox: Sandbox) -> None:
    """A verification check sends nothing: it passes the drop-in as it is."""
    gated.verify.v2.services(VA).verifications.create(to=MOBILE, channel="sms")
    check = gated.verify.v2.services(VA).verification_checks.create(to=MOBILE, code="123456")
    assert check.status == "approved"


# -- Studio ---------------------------------------------------------------------------------------------
def test_studio_executions_are_gated_and_told_the_facts(gated: GatedClient, sandbox: Sandbox) -> None:
    """An execution to an invalid or opted-out number is refused; one to a landline carries its facts into the
    Flow's parameters, without overwriting the caller's keys."""
    executions = gated.studio.v2.flows(FLOW).executions
    with pytest.raises(GateRefused) as invalid:
        executions.create(to="+1 415 555 01", from_=FROM)
    assert invalid.value.code == 21211
    started = executions.create(to=LANDLINE, from_=FROM, parameters={"order": "42", "line_type": "theirs"})
    data = sandbox.execution(started.sid)["context"]["flow"]["data"]
    assert data["order"] == "42" and data["line_type"] == "theirs"  # the caller's keys win
    assert (data["country_code"], data["action"], data["carrier"]) == ("US", "studio", "Pacific Bell")
    gated.gate.opt_out(LANDLINE)
    with pytest.raises(GateRefused) as opted_out:
        executions.create(to=LANDLINE, from_=FROM)
    assert opted_out.value.code == 21610
    assert len(sandbox.executions()) == 1


def test_studio_v1_executions_are_gated(gated: GatedClient, sandbox: Sandbox) -> None:
    """Studio v1's executions are a door too: an invalid number is refused before any request."""
    with pytest.raises(GateRefused):
        gated.studio.v1.flows(FLOW).executions.create(to="not a number", from_=FROM)


# -- every other creating call fails closed -------------------------------------------------------------
def creating_resources() -> Iterator[tuple[str, type[ListResource]]]:
    """Every list resource with a create method in the SDK's Messaging, Voice, Verify and Studio packages."""
    for package in ("api.v2010", "verify.v2", "studio", "messaging.v1", "voice.v1"):
        root = importlib.import_module(f"twilio.rest.{package}")
        for info in pkgutil.walk_packages(root.__path__, prefix=root.__name__ + "."):
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, ListResource) and cls.__module__ == module.__name__ and hasattr(cls, "create"):
                    yield info.name.removeprefix("twilio.rest."), cls


def instance_of(cls: type[ListResource], client: Client) -> ListResource:
    """A list resource built as the SDK builds it, on the right API version, with placeholder SIDs."""
    domain, version = cls.__module__.split(".")[2:4]
    versions: dict[str, Any] = {"api": client.api.v2010, "verify": client.verify.v2, "messaging": client.messaging.v1}
    versions |= {"voice": client.voice.v1, "studio": getattr(client.studio, version, None)}
    names = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "version")]
    return cls(versions[domain], **{name: "XX" + "0" * 32 for name in names})


def test_every_creating_call_is_gated_or_refused(gated: GatedClient) -> None:
    """Walking the SDK: the five sending creates go through the gate; every other create (and create_async,
    create_with_http_info) raises UngatedCall naming it, and none of them reaches the network."""
    door = gated._door  # the gated view of any SDK object, as the client's own tree would give it
    seen_gated, refused = set(), []
    with responses.RequestsMock(assert_all_requests_are_fired=False):  # any HTTP would fail the test
        for module, cls in creating_resources():
            node = door.wrap(instance_of(cls, gated._client))
            name = f"{module}.create"
            assert call_name(node._inner, "create") == name
            if name in GATED:
                with pytest.raises(GateRefused):  # the gate's own refusal, before any request
                    node.create(to="not a number", from_=FROM, body="x", channel="sms", url="https://e.com/t")
                seen_gated.add(name)
            elif name not in NOT_SENDING:
                with pytest.raises(UngatedCall, match=name.replace(".", r"\.")):
                    node.create()
                refused.append(name)
            for variant in ("create_with_http_info", "create_with_http_info_async"):
                if hasattr(cls, variant) and name not in NOT_SENDING:
                    with pytest.raises(UngatedCall):
                        getattr(node, variant)()
    assert seen_gated == GATED
    assert len(refused) > 50  # every other create the walk found, from incoming numbers to Verify services


def test_passthrough_lets_a_listed_call_through(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """[routing] passthrough names a creating call the user knows sends nothing; it then passes ungated."""
    client = sandbox_server.client()
    settings = Settings(routing={"passthrough": ["api.v2010.account.message.feedback.create"]})
    gated = GatedClient(client, Gatekeeper(client, settings=settings, stores=Stores.memory()))
    feedback = gated.messages("SM" + "2" * 32).feedback
    assert callable(feedback.create)  # listed (and known to send nothing): not refused


def test_raw_requests_that_could_send_fail_closed(gated: GatedClient, sandbox: Sandbox) -> None:
    """client.request with POST would go around the gate: refused; a GET passes."""
    url = f"https://api.twilio.com/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
    with pytest.raises(UngatedCall, match="request POST"):
        gated.request("POST", url, data={"To": MOBILE, "From": FROM, "Body": "hi"})
    assert sandbox.messages() == []
    listed = gated.request("GET", f"https://lookups.twilio.com/v2/PhoneNumbers/{MOBILE}")
    assert json.loads(listed.text)["phone_number"] == MOBILE


# -- rows of the table the tests above leave out: Verify and Studio on a subaccount, Studio v1 sent ------------
def gated_as(server: SandboxServer, sid: str, token: str) -> GatedClient:
    """A gated client holding ``sid``'s own credentials: how Verify and Studio (whose paths name no account)
    act for a subaccount."""
    client = server.client(sid, token)
    return GatedClient(client, Gatekeeper(client, stores=Stores.memory()))


@pytest.mark.parametrize(("channel", "allowed"), [("sms", MOBILE), ("whatsapp", LANDLINE), ("call", LANDLINE)])
def test_verifications_on_a_subaccount_are_gated(
    sandbox_server: SandboxServer, sandbox: Sandbox, channel: str, allowed: str
) -> None:
    """With the subaccount's credentials: an invalid number is refused 60200 before any request; the allowed
    one starts on the subaccount with Verify's channel name."""
    verifications = (
        gated_as(sandbox_server, TEST_SUBACCOUNT_SID, TEST_SUBACCOUNT_AUTH_TOKEN).verify.v2.services(VA).verifications
    )
    with pytest.raises(GateRefused) as invalid:
        verifications.create(to="+1 415 555 01", channel=channel)
    assert invalid.value.code == 60200
    assert sandbox.request_count("verifications.create") == 0
    started = verifications.create(to=allowed, channel=channel)
    assert (started.account_sid, started.channel) == (TEST_SUBACCOUNT_SID, channel)
    assert [(v["to"], v["account_sid"]) for v in sandbox.verifications()] == [(allowed, TEST_SUBACCOUNT_SID)]


@pytest.mark.parametrize("where", ["top-level", "subaccount"])
@pytest.mark.parametrize("version", ["v2", "v1"])
def test_studio_executions_are_gated_on_every_account(
    sandbox_server: SandboxServer, sandbox: Sandbox, version: str, where: str
) -> None:
    """Studio v2 and v1, with the account's or the subaccount's credentials: an invalid number is refused 21211
    before any request; a landline starts the Flow on that account, told the facts beside the caller's keys
    (which win); after STOP, 21610."""
    sid, token = (
        (TEST_SUBACCOUNT_SID, TEST_SUBACCOUNT_AUTH_TOKEN)
        if where == "subaccount"
        else (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
    )
    gated = gated_as(sandbox_server, sid, token)
    executions = getattr(gated.studio, version).flows(FLOW).executions
    with pytest.raises(GateRefused) as invalid:
        executions.create(to="+1 415 555 01", from_=FROM)
    assert invalid.value.code == 21211
    assert sandbox.request_count("executions.create") == 0
    started = executions.create(to=LANDLINE, from_=FROM, parameters={"order": "42", "line_type": "theirs"})
    assert type(started).__module__ == f"twilio.rest.studio.{version}.flow.execution"  # the caller's API version
    (sent,) = sandbox.requests("executions.create")
    assert sent.path.startswith(f"/{version}/Flows/")
    stored = sandbox.execution(started.sid)
    assert stored is not None and (stored["account_sid"], stored["contact_channel_address"]) == (sid, LANDLINE)
    data = stored["context"]["flow"]["data"]
    assert (data["order"], data["line_type"], data["carrier"], data["action"]) == (
        "42",
        "theirs",
        "Pacific Bell",
        "studio",
    )
    gated.gate.opt_out(LANDLINE)
    with pytest.raises(GateRefused) as opted_out:
        executions.create(to=LANDLINE, from_=FROM)
    assert opted_out.value.code == 21610
    assert sandbox.request_count("executions.create") == 1


class ListingHttpClient(SandboxHttpClient):
    """The sandbox has no list routes: ``GET /2010-04-01/Accounts.json`` is answered here with pages holding
    the subaccount as the sandbox answers its fetch (two pages, so ``next_page`` has one to get)."""

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        if method.upper() != "GET" or parts.path != "/2010-04-01/Accounts.json":
            return super().request(method, url, *args, **kwargs)
        kwargs.pop("params", None)
        fetched = super().request(
            method, url.replace("/Accounts.json", f"/Accounts/{TEST_SUBACCOUNT_SID}.json"), **kwargs
        )
        later = "/2010-04-01/Accounts.json?PageSize=50&Page=1&PageToken=PA1"
        last = "Page=1" in parts.query
        page = {
            "accounts": [json.loads(fetched.text)],
            "next_page_uri": None if last else later,
            "page": int(last),
            "page_size": 50,
            "uri": "/2010-04-01/Accounts.json",
        }
        return Response(200, json.dumps(page))


def test_accounts_reached_by_listing_are_gated(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """Accounts from stream, list, a page and its next_page are seen through the gate: their messages.create
    to a landline is refused 21614 and nothing is sent."""
    client = Client(
        TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, environment={}, http_client=ListingHttpClient(sandbox_server.url)
    )
    gated = GatedClient(client, Gatekeeper(client, stores=Stores.memory()))
    accounts = gated.api.v2010.accounts
    page = accounts.page()
    found = [*accounts.stream(limit=1), *accounts.list(limit=1), *page, *page.next_page()]
    assert [a.sid for a in found] == [TEST_SUBACCOUNT_SID] * 4
    for account in found:
        with pytest.raises(GateRefused) as refused:
            account.messages.create(to=LANDLINE, from_=FROM, body="hi")
        assert refused.value.code == 21614
    assert sandbox.messages() == []
