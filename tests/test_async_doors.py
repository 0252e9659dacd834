"""Every sending door of the drop-in, called ``*_async``, takes the one gate, over real HTTP to the sandbox.

The async half of the README's table of doors (the sync half is ``tests/test_doors.py``): each row, a
door x a gate (an :class:`AsyncGatekeeper` over the async client, or a blocking :class:`Gatekeeper`
over a blocking client, its decision run off the event loop) x where the resource sits (top-level, or
the subaccount) x a kind of destination, is one test id below. Each proves three things:

* a destination the gate refuses raises :class:`GateRefused`, a ``TwilioRestException`` with Twilio's
  code, and no send reaches the sandbox (only Lookups may);
* an allowed send reaches the sandbox with its ``To`` as given (channel prefix kept) on the right account;
* once the number replied STOP (``gate.opt_out``) the next ``create_async`` is refused 21610, as the
  blocking ``create`` is (the bug this file guards: the async path used to send it).

"Subaccount" is ``client.api.accounts(SUB)`` for Messages and Calls; Verify and Studio have no account
in their paths, so there it is a client holding the subaccount's own credentials. Each test runs its
coroutine with ``asyncio.run(..., debug=True)`` and one async client per event loop, closed in it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.response import Response
from twilio.rest import Client

from gatekeeper import GatedClient, Gatekeeper, GateRefused, InvalidArgument, SendRejected, Settings, Stores
from gatekeeper.aio import AsyncGatekeeper
from gatekeeper.errors import UngatedCall
from gatekeeper.sandbox import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    TEST_SUBACCOUNT_AUTH_TOKEN,
    TEST_SUBACCOUNT_SID,
    AsyncSandboxHttpClient,
    RecordedRequest,
    Sandbox,
    SandboxServer,
)
from gatekeeper.stores.memory import MemoryStore

T = TypeVar("T")
MOBILE, LANDLINE, INVALID = "+14155550100", "+14155550101", "+1 415 555 01"
FROM = "+15005550006"
VA = "VA" + "0" * 32
FLOW = "FW" + "1" * 32
TWIML_URL = "https://example.com/twiml"
SUB = TEST_SUBACCOUNT_SID
PARENT_CREDENTIALS = (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
SUB_CREDENTIALS = (TEST_SUBACCOUNT_SID, TEST_SUBACCOUNT_AUTH_TOKEN)
#: Verify ignores opt-outs by default (MFA is user-initiated); here it obeys them like every other door.
SETTINGS = Settings(policy={"opt_out_blocks_mfa": True})
GATES = ("AsyncGatekeeper", "Gatekeeper")
WHERE = ("top-level", "subaccount")


@dataclass(frozen=True)
class Case:
    """One kind of destination at one door: where an allowed send goes, and what the gate refuses (with code)."""

    to: str
    refused: tuple[tuple[str, int], ...]
    from_: str = FROM
    lookup: bool = True  # sip: and client: are reached without paying for a Lookup
    stop: str = "opted_out:account"  # why its opt-out refuses: a STOP to a WhatsApp address is that channel's


MESSAGES = {
    "number": Case(MOBILE, ((LANDLINE, 21614), (INVALID, 21211))),
    "whatsapp": Case(
        "whatsapp:" + LANDLINE, (("whatsapp:+1415", 21211),), from_="whatsapp:" + FROM, stop="opted_out:channel"
    ),
}
CALLS = {
    "number": Case(LANDLINE, ((INVALID, 21211),)),
    "sip": Case("sip:alice@example.com;transport=tls", (("sip:nobody", 21211),), lookup=False),
    "client": Case("client:alice", (("client:al ice", 21211),), lookup=False),
}
VERIFICATIONS = {  # keyed by Verify's channel
    "sms": Case(MOBILE, ((LANDLINE, 60205), (INVALID, 60200))),
    "whatsapp": Case(LANDLINE, ((INVALID, 60200),)),  # WhatsApp has no line types: a landline gets its code
    "call": Case(LANDLINE, ((INVALID, 60200),)),
}
EXECUTIONS = {"number": Case(LANDLINE, ((INVALID, 21211),))}  # the Flow decides how to reach a landline
CASES = {
    "messages": MESSAGES,
    "calls": CALLS,
    "verify": VERIFICATIONS,
    "studio.v2": EXECUTIONS,
    "studio.v1": EXECUTIONS,
}
#: What the Flow is told by the caller: the gate adds its facts beside these, never over them.
CALLER_PARAMETERS = {"order": "42", "line_type": "theirs"}


def matrix(door: str) -> list[Any]:
    """Every gate x where x address of ``door``, with ids like ``AsyncGatekeeper-subaccount-whatsapp``."""
    return [
        pytest.param(gate, where, address, id=f"{gate}-{where}-{address}")
        for gate in GATES
        for where in WHERE
        for address in CASES[door]
    ]


# -- helpers -----------------------------------------------------------------------------------------------
def credentials(door: str, where: str) -> tuple[str, str]:
    """Messages and Calls reach the subaccount by path with the parent's credentials; Verify and Studio by
    the subaccount's own credentials (their paths name no account)."""
    return SUB_CREDENTIALS if where == "subaccount" and door not in ("messages", "calls") else PARENT_CREDENTIALS


def account(where: str) -> str:
    return SUB if where == "subaccount" else TEST_ACCOUNT_SID


def resource(gated: GatedClient, door: str, where: str) -> Any:
    """The door's list resource, reached through the gated client as a caller would."""
    on = gated if where == "top-level" else gated.api.accounts(SUB)
    if door == "messages":
        return on.messages
    if door == "calls":
        return on.calls
    if door == "verify":
        return gated.verify.v2.services(VA).verifications
    version = gated.studio.v2 if door == "studio.v2" else gated.studio.v1
    return version.flows(FLOW).executions


def arguments(door: str, address: str, to: str) -> dict[str, Any]:
    """The SDK keywords of a create at ``door`` to ``to``."""
    case = CASES[door][address]
    if door == "messages":
        return {"to": to, "from_": case.from_, "body": "Your table is ready"}
    if door == "calls":
        return {"to": to, "from_": case.from_, "url": TWIML_URL}
    if door == "verify":
        return {"to": to, "channel": address}
    return {"to": to, "from_": case.from_, "parameters": dict(CALLER_PARAMETERS)}


def make_gate(
    server: SandboxServer, kind: str, client: Client, creds: tuple[str, str], settings: Settings, stores: Stores
) -> Gatekeeper | AsyncGatekeeper:
    """An AsyncGatekeeper over the async client, or a Gatekeeper over a blocking client of the same account."""
    if kind == "AsyncGatekeeper":
        return AsyncGatekeeper(client, settings=settings, stores=stores)
    return Gatekeeper(server.client(*creds), settings=settings, stores=stores)


def run(
    server: SandboxServer,
    kind: str,
    scenario: Callable[[GatedClient], Awaitable[T]],
    *,
    creds: tuple[str, str] = PARENT_CREDENTIALS,
    settings: Settings = SETTINGS,
    stores: Stores | None = None,
) -> T:
    """``scenario`` on a GatedClient over a fresh async sandbox client, in a fresh debug-mode event loop; the
    client's aiohttp session is closed inside that loop."""

    async def main() -> T:
        client = server.async_client(*creds)
        try:
            gate = make_gate(server, kind, client, creds, settings, stores or Stores.using(MemoryStore()))
            return await scenario(GatedClient(client, gate))
        finally:
            await client.http_client.close()

    return asyncio.run(main(), debug=True)


async def opt_out(gate: Gatekeeper | AsyncGatekeeper, address: str) -> None:
    """The person replied STOP: recorded through the gate, off the event loop for a blocking gate."""
    if isinstance(gate, AsyncGatekeeper):
        await gate.opt_out(address)
    else:
        await asyncio.to_thread(gate.opt_out, address)


async def refusal(call: Awaitable[Any]) -> GateRefused:
    with pytest.raises(GateRefused) as caught:
        await call
    return caught.value


def sends(sandbox: Sandbox) -> list[RecordedRequest]:
    """Every request that reached the sandbox other than a Lookup."""
    return [r for r in sandbox.requests() if r.route != "lookup"]


@dataclass
class Seen:
    refusals: list[GateRefused]
    sent_before: list[RecordedRequest]  # sends recorded after the refusals, before the allowed send
    resource: Any  # what the allowed create_async returned
    stopped: GateRefused  # the create_async after the opt-out
    sent: list[RecordedRequest]  # every send recorded at the end


def exercise(server: SandboxServer, sandbox: Sandbox, kind: str, door: str, where: str, address: str) -> Seen:
    """Refused destinations, then the allowed one, then the same after its opt-out: all ``create_async``."""
    case = CASES[door][address]

    async def scenario(gated: GatedClient) -> Seen:
        def create(to: str) -> Awaitable[Any]:
            return resource(gated, door, where).create_async(**arguments(door, address, to))

        refusals = [await refusal(create(to)) for to, _ in case.refused]
        sent_before = sends(sandbox)
        created = await create(case.to)
        await opt_out(gated.gate, case.to)
        stopped = await refusal(create(case.to))
        return Seen(refusals, sent_before, created, stopped, sends(sandbox))

    return run(server, kind, scenario, creds=credentials(door, where))


def assert_gated(seen: Seen, case: Case, uri_end: str, sandbox: Sandbox) -> RecordedRequest:
    """What every door shares: Twilio's codes on the refusals, nothing sent for them, exactly one send (the
    allowed one, its To as given), and 21610 after the opt-out. Returns that one send."""
    assert [(r.code, r.status) for r in seen.refusals] == [(code, 400) for _, code in case.refused]
    for refused in (*seen.refusals, seen.stopped):
        assert isinstance(refused, TwilioRestException)  # what `except TwilioRestException` already catches
        assert refused.uri.endswith(uri_end)
    assert seen.sent_before == []
    assert (seen.stopped.code, seen.stopped.decision.reasons) == (21610, (case.stop,))
    assert len(seen.sent) == 1, [r.path for r in seen.sent]
    assert seen.sent[0].form["To"] == [case.to]
    if not case.lookup:
        assert sandbox.lookup_counts() == {}
    return seen.sent[0]


# -- Messages -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("gate", "where", "address"), matrix("messages"))
def test_async_messages_are_gated(
    sandbox_server: SandboxServer, sandbox: Sandbox, gate: str, where: str, address: str
) -> None:
    """messages.create_async: a landline 21614, an invalid number 21211, nothing sent; a mobile (or WhatsApp
    to a landline, prefix kept) is sent on the path's account; after STOP, 21610."""
    case = MESSAGES[address]
    seen = exercise(sandbox_server, sandbox, gate, "messages", where, address)
    request = assert_gated(seen, case, "/Messages.json", sandbox)
    assert request.path == f"/2010-04-01/Accounts/{account(where)}/Messages.json"
    assert (seen.resource.to, seen.resource.account_sid) == (case.to, account(where))
    stored = sandbox.message(seen.resource.sid)
    assert stored is not None and (stored["to"], stored["account_sid"]) == (case.to, account(where))


# -- Calls --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("gate", "where", "address"), matrix("calls"))
def test_async_calls_are_gated(
    sandbox_server: SandboxServer, sandbox: Sandbox, gate: str, where: str, address: str
) -> None:
    """calls.create_async: an invalid number or malformed SIP/Client address 21211, nothing called; a landline,
    SIP URI or Client identity is called on the path's account (SIP and Client without a Lookup); after
    STOP, 21610."""
    case = CALLS[address]
    seen = exercise(sandbox_server, sandbox, gate, "calls", where, address)
    request = assert_gated(seen, case, "/Calls.json", sandbox)
    assert request.path == f"/2010-04-01/Accounts/{account(where)}/Calls.json"
    assert (seen.resource.to, seen.resource.account_sid) == (case.to, account(where))
    stored = sandbox.call(seen.resource.sid)
    assert stored is not None and (stored["to"], stored["account_sid"]) == (case.to, account(where))


# -- Verify -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("gate", "where", "channel"), matrix("verify"))
def test_async_verifications_are_gated(
    sandbox_server: SandboxServer, sandbox: Sandbox, gate: str, where: str, channel: str
) -> None:
    """verifications.create_async, per Verify channel: Verify's codes (60205 SMS to a landline, 60200 invalid),
    nothing sent; the allowed one starts with Verify's channel name on the credentials' account; after STOP
    (with opt_out_blocks_mfa), 21610."""
    case = VERIFICATIONS[channel]
    seen = exercise(sandbox_server, sandbox, gate, "verify", where, channel)
    request = assert_gated(seen, case, "/Verifications", sandbox)
    assert (request.form["Channel"], request.username) == ([channel], account(where))
    assert (seen.resource.channel, seen.resource.account_sid) == (channel, account(where))
    assert [(v["to"], v["channel"], v["account_sid"]) for v in sandbox.verifications()] == [
        (case.to, channel, account(where))
    ]


# -- Studio -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v2", "v1"])
@pytest.mark.parametrize(("gate", "where", "address"), matrix("studio.v2"))
def test_async_studio_executions_are_gated(
    sandbox_server: SandboxServer, sandbox: Sandbox, gate: str, where: str, address: str, version: str
) -> None:
    """studio.<version>.flows(sid).executions.create_async: an invalid number 21211, nothing started; a
    landline starts the Flow on the credentials' account with the gate's facts in its parameters beside the
    caller's (which win); after STOP, 21610."""
    case = EXECUTIONS[address]
    seen = exercise(sandbox_server, sandbox, gate, f"studio.{version}", where, address)
    request = assert_gated(seen, case, "/Executions", sandbox)
    assert request.username == account(where)
    assert request.path.startswith(f"/{version}/Flows/")  # created on the API version the caller used
    assert type(seen.resource).__module__ == f"twilio.rest.studio.{version}.flow.execution"
    stored = sandbox.execution(seen.resource.sid)
    assert stored is not None
    assert (stored["account_sid"], stored["flow_sid"], stored["contact_channel_address"]) == (
        account(where),
        FLOW,
        case.to,
    )
    data = stored["context"]["flow"]["data"]
    assert {k: data[k] for k in CALLER_PARAMETERS} == CALLER_PARAMETERS  # the caller's keys win
    facts = (data["carrier"], data["country_code"], data["action"], data["reasons"])
    assert facts == ("Pacific Bell", "US", "studio", [])
    assert json.loads(request.form["Parameters"][0]) == data


# -- a STOP is refused on the async path exactly as on the sync path ----------------------------------------
PARITY = [
    pytest.param(gate, door, where, address, id=f"{gate}-{door}-{where}-{address}")
    for gate in GATES
    for door in CASES
    for where in WHERE
    for address in CASES[door]
]


@pytest.mark.parametrize(("gate", "door", "where", "address"), PARITY)
def test_async_opt_out_is_refused_exactly_like_sync(
    sandbox_server: SandboxServer, sandbox: Sandbox, gate: str, door: str, where: str, address: str
) -> None:
    """A number that replied STOP: the blocking create and create_async, over gates sharing one store, raise
    the same GateRefused (code, status, uri, decision), and neither reaches the sandbox."""
    case, creds, store = CASES[door][address], credentials(door, where), MemoryStore()
    blocking = sandbox_server.client(*creds)
    sync_gated = GatedClient(blocking, Gatekeeper(blocking, settings=SETTINGS, stores=Stores.using(store)))
    sync_gated.gate.opt_out(case.to)
    with pytest.raises(GateRefused) as sync_refused:
        resource(sync_gated, door, where).create(**arguments(door, address, case.to))

    async def scenario(gated: GatedClient) -> GateRefused:
        return await refusal(resource(gated, door, where).create_async(**arguments(door, address, case.to)))

    async_refused = run(sandbox_server, gate, scenario, creds=creds, stores=Stores.using(store))

    def shape(e: GateRefused) -> tuple[object, ...]:
        d = e.decision
        return type(e), e.code, e.status, e.uri, e.method, d.action, d.reasons, d.to, d.enforced

    assert shape(async_refused) == shape(sync_refused.value)
    assert (async_refused.code, async_refused.decision.reasons) == (21610, (case.stop,))
    assert sandbox.requests() == []  # refused before any Lookup or send


@pytest.mark.parametrize("gate", GATES)
def test_async_verify_ignores_opt_outs_by_default_like_sync(
    sandbox_server: SandboxServer, sandbox: Sandbox, gate: str
) -> None:
    """Without opt_out_blocks_mfa an MFA code still reaches a number that replied STOP, on both paths alike."""
    store, defaults = MemoryStore(), Settings()
    blocking = sandbox_server.client()
    sync_gated = GatedClient(blocking, Gatekeeper(blocking, settings=defaults, stores=Stores.using(store)))
    sync_gated.gate.opt_out(MOBILE)
    sync_gated.verify.v2.services(VA).verifications.create(to=MOBILE, channel="sms")

    async def scenario(gated: GatedClient) -> Any:
        return await gated.verify.v2.services(VA).verifications.create_async(to=MOBILE, channel="sms")

    run(sandbox_server, gate, scenario, settings=defaults, stores=Stores.using(store))
    assert [v["to"] for v in sandbox.verifications()] == [MOBILE]  # one verification, its code sent twice
    assert sandbox.request_count("verifications.create") == 2


# -- what Twilio answers is heard on the async path too ------------------------------------------------------
@pytest.mark.parametrize("gate", GATES)
def test_async_twilio_opt_out_answer_is_remembered(sandbox_server: SandboxServer, sandbox: Sandbox, gate: str) -> None:
    """Twilio answering 21610 to create_async raises GateRefused 21610 and is kept: the next create_async to
    that number is refused by the gate, without a second request."""
    opted_out_at_twilio = "+15005550004"

    async def scenario(gated: GatedClient) -> list[GateRefused]:
        messages = gated.api.accounts(SUB).messages
        return [await refusal(messages.create_async(to=opted_out_at_twilio, from_=FROM, body="hi")) for _ in range(2)]

    first, second = run(sandbox_server, gate, scenario)
    assert (first.code, second.code) == (21610, 21610)
    assert second.decision.reasons == ("opted_out:account",)
    assert sandbox.request_count("messages.create") == 1


@pytest.mark.parametrize("gate", GATES)
def test_async_fraud_blocked_verification_raises_twilios_error(
    sandbox_server: SandboxServer, sandbox: Sandbox, gate: str
) -> None:
    """A number Verify's Fraud Guard blocks: the gate lets it through, Twilio answers 403 / 60410, and
    create_async raises SendRejected, a TwilioRestException with that status and code."""
    fraud_blocked = "+14155550108"

    async def scenario(gated: GatedClient) -> None:
        await gated.verify.v2.services(VA).verifications.create_async(to=fraud_blocked, channel="sms")

    with pytest.raises(SendRejected) as rejected:
        run(sandbox_server, gate, scenario)
    assert isinstance(rejected.value, TwilioRestException)
    assert (rejected.value.status, rejected.value.code) == (403, 60410)
    assert sandbox.verifications() == []


# -- what the gate does not know fails closed ---------------------------------------------------------------
UNGATED: dict[str, Callable[[GatedClient], Awaitable[Any]]] = {
    "api.v2010.account.incoming_phone_number.create_async": lambda g: (
        g.api.v2010.account.incoming_phone_numbers.create_async(phone_number=MOBILE)
    ),
    "verify.v2.service.create_async": lambda g: g.verify.v2.services.create_async(friendly_name="Login"),
    "messaging.v1.service.create_async": lambda g: g.messaging.v1.services.create_async(friendly_name="Alerts"),
    "api.v2010.account.message.create_with_http_info_async": lambda g: g.api.accounts(
        SUB
    ).messages.create_with_http_info_async(to=MOBILE, from_=FROM, body="hi"),
    "request_async POST": lambda g: g.request_async(
        "POST", f"https://api.twilio.com/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json", data={"To": MOBILE}
    ),
}


@pytest.mark.parametrize("call", UNGATED)
@pytest.mark.parametrize("gate", GATES)
def test_async_ungated_creates_fail_closed(
    sandbox_server: SandboxServer, sandbox: Sandbox, gate: str, call: str
) -> None:
    """A creating async call the gate does not know raises UngatedCall naming it, and sends nothing."""

    async def scenario(gated: GatedClient) -> UngatedCall:
        with pytest.raises(UngatedCall) as caught:
            await UNGATED[call](gated)
        return caught.value

    assert run(sandbox_server, gate, scenario).call == call
    assert sandbox.requests() == []


@pytest.mark.parametrize("door", list(CASES))
def test_sync_create_on_an_async_gate_is_refused_clearly(
    sandbox_server: SandboxServer, sandbox: Sandbox, door: str
) -> None:
    """The blocking create on a GatedClient whose gate is an AsyncGatekeeper raises InvalidArgument pointing
    at create_async, before any Lookup or send."""
    address = next(iter(CASES[door]))

    async def scenario(gated: GatedClient) -> None:
        with pytest.raises(InvalidArgument, match="AsyncGatekeeper gates the \\*_async calls: use create_async"):
            resource(gated, door, "top-level").create(**arguments(door, address, CASES[door][address].to))

    run(sandbox_server, "AsyncGatekeeper", scenario)
    assert sandbox.requests() == []


def test_sync_create_on_an_async_client_is_refused_clearly(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """A blocking gate over an async client: the blocking create cannot be made with it, so it raises
    InvalidArgument before the gate decides (no Lookup paid), not the SDK's AttributeError after."""

    async def scenario(gated: GatedClient) -> None:
        with pytest.raises(InvalidArgument, match="cannot make create: use create_async"):
            gated.messages.create(to=MOBILE, from_=FROM, body="hi")

    run(sandbox_server, "Gatekeeper", scenario)
    assert sandbox.requests() == []


def test_create_async_on_a_blocking_client_is_refused_clearly(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """create_async on a GatedClient over a blocking client raises InvalidArgument before the gate decides."""
    blocking = sandbox_server.client()
    gated = GatedClient(blocking, Gatekeeper(blocking, stores=Stores.memory()))
    with pytest.raises(InvalidArgument, match="cannot make create_async: use create"):
        asyncio.run(gated.messages.create_async(to=MOBILE, from_=FROM, body="hi"), debug=True)
    assert sandbox.requests() == []


def test_blocking_gate_decides_off_the_event_loop(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """With a blocking Gatekeeper, create_async runs its decision (stores, Lookup) in a worker thread; the
    event loop's thread only awaits the send."""
    threads: dict[str, int] = {}

    async def scenario(gated: GatedClient) -> Any:
        assert isinstance(gated.gate, Gatekeeper)
        check = gated.gate.check

        def spy(*args: Any, **kwargs: Any) -> Any:
            threads["check"] = threading.get_ident()
            return check(*args, **kwargs)

        gated.gate.check = spy  # type: ignore[method-assign]
        threads["loop"] = threading.get_ident()
        return await gated.messages.create_async(to=MOBILE, from_=FROM, body="hi")

    sent = run(sandbox_server, "Gatekeeper", scenario)
    assert threads["check"] != threads["loop"]
    assert [m["sid"] for m in sandbox.messages()] == [sent.sid]


# -- instances reached by listing are gated too --------------------------------------------------------------
class ListingHttpClient(AsyncSandboxHttpClient):
    """The sandbox has no list routes: ``GET /2010-04-01/Accounts.json`` is answered here with pages holding
    the subaccount as the sandbox itself answers its fetch (two pages, so ``next_page_async`` has one to get).
    Every other request goes to the sandbox."""

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        if method.upper() != "GET" or parts.path != "/2010-04-01/Accounts.json":
            return await super().request(method, url, *args, **kwargs)
        kwargs.pop("params", None)
        fetched = await super().request(method, url.replace("/Accounts.json", f"/Accounts/{SUB}.json"), **kwargs)
        later = "/2010-04-01/Accounts.json?PageSize=50&Page=1&PageToken=PA1"
        page = {
            "accounts": [json.loads(fetched.text)],
            "next_page_uri": None if "Page=1" in parts.query else later,
            "page": 1 if "Page=1" in parts.query else 0,
            "page_size": 50,
            "uri": "/2010-04-01/Accounts.json",
        }
        return Response(200, json.dumps(page))


@pytest.mark.parametrize("gate", GATES)
def test_async_listed_accounts_are_gated(sandbox_server: SandboxServer, sandbox: Sandbox, gate: str) -> None:
    """Accounts reached by stream_async, list_async, page_async and next_page_async are seen through the gate:
    their messages.create_async to a landline is refused 21614 and nothing is sent."""

    async def main() -> list[int]:
        http = ListingHttpClient(sandbox_server.url)
        client = Client(*PARENT_CREDENTIALS, environment={}, http_client=http)
        try:
            store = Stores.using(MemoryStore())
            gated = GatedClient(client, make_gate(sandbox_server, gate, client, PARENT_CREDENTIALS, SETTINGS, store))
            accounts = gated.api.v2010.accounts
            found = [a async for a in await accounts.stream_async(limit=1)]
            found += await accounts.list_async(limit=1)
            page = await accounts.page_async()
            found += list(page)
            found += list(await page.next_page_async())
            assert [a.sid for a in found] == [SUB] * 4
            return [(await refusal(a.messages.create_async(to=LANDLINE, from_=FROM, body="hi"))).code for a in found]
        finally:
            await http.close()

    assert asyncio.run(main(), debug=True) == [21614] * 4
    assert {r.route for r in sends(sandbox)} == {"accounts.fetch"}  # the listings' account, read; nothing sent
    assert sandbox.messages() == []
