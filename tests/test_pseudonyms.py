"""Pseudonyms that hold: the audit's hash is keyed by a secret the store keeps, records are read back masked, and a
number can be erased but never messaged again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gatekeeper import Action, Gatekeeper, Settings, Stores
from gatekeeper.aio import AsyncGatekeeper
from gatekeeper.errors import InvalidArgumentType
from gatekeeper.phone import digest
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.base import ACCOUNT_SCOPE
from gatekeeper.stores.memory import MemoryStore

MOBILE, OTHER, FROM = "+14155550100", "+14155550107", "+15005550006"
SID = "SM" + "7" * 32


def test_the_number_cannot_be_recovered_from_an_audit_record_without_the_key(
    sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """An unkeyed hash of a phone number falls to a search of the numbers around it; the audit's hash is keyed by
    the store's secret, so the same search finds nothing without it (and finds the number with it)."""
    store = MemoryStore()
    gate = Gatekeeper(sandbox_server.client(), stores=Stores.using(store))
    gate.decide(MOBILE)
    (record,) = gate.audit()
    assert record["to"] == "+1415555****"
    candidates = [f"+1415555{n:04d}" for n in range(10_000)]
    assert [c for c in candidates if digest(c) == record["to_hash"]] == []  # no key: no number
    key = store.secret("audit")
    assert [c for c in candidates if digest(c, key) == record["to_hash"]] == [MOBILE]


def test_one_store_one_key_and_a_configured_key_wins(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """Gates sharing a store make the same pseudonym (records of one number join across processes); a configured
    [audit] hash_key is used instead of the store's."""
    shared = Stores.using(MemoryStore())
    first, second = (Gatekeeper(sandbox_server.client(), stores=shared) for _ in range(2))
    assert first.auditor.digest(MOBILE) == second.auditor.digest(MOBILE)
    configured = Gatekeeper(sandbox_server.client(), settings=Settings(audit={"hash_key": "k" * 32}), stores=shared)
    assert configured.auditor.digest(MOBILE) == digest(MOBILE, b"k" * 32) != first.auditor.digest(MOBILE)


def test_audit_reads_one_numbers_records_masked(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    gate = Gatekeeper(sandbox_server.client(), stores=Stores.memory())
    for number in (MOBILE, OTHER, MOBILE):
        gate.decide(number)
    assert len(gate.audit()) == 3
    assert [r["at"] for r in gate.audit(limit=2)] == sorted((r["at"] for r in gate.audit()), reverse=True)[:2]
    mine = gate.audit(MOBILE)
    assert len(mine) == 2 and {r["to"] for r in mine} == {"+1415555****"}
    assert all("4155550100" not in str(r) for r in gate.audit())
    assert gate.audit("(415) 555-0107", limit=5)[0]["to_hash"] == gate.auditor.digest(OTHER)


def test_erase_forgets_a_number_and_it_is_never_messaged_again(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    """After erase: no audit record, status or consent history of the number is left but the tombstone, and the
    next send to it is refused as opted out (without a Lookup); another number is untouched."""
    gate = Gatekeeper(sandbox_server.client(), stores=Stores.memory())
    assert gate.notify(MOBILE, "hi", from_=FROM).action is Action.SMS
    gate.notify(OTHER, "hi", from_=FROM)
    gate.stores.statuses.apply_status(
        SID, "delivered", 5, error_code=None, at=gate.clock(), to_hash=gate.auditor.digest(MOBILE), ttl_seconds=60
    )
    gate.opt_in(MOBILE)
    lookups = sandbox.lookup_count(MOBILE)

    gate.erase(MOBILE)

    assert gate.audit(MOBILE) == [] and len(gate.audit(OTHER)) == 1
    assert gate.status_of(SID) is None
    assert [(c.opted_out, c.source) for c in gate.stores.opt_outs.consent_history(MOBILE)] == [(True, "erased")]
    refused = gate.notify(MOBILE, "hi again", from_=FROM)
    assert (refused.action, refused.decision.twilio_code) == (Action.REFUSE, 21610)
    assert sandbox.lookup_count(MOBILE) == lookups
    assert gate.notify(OTHER, "hi", from_=FROM).action is Action.SMS
    assert gate.stores.opt_outs.opted_out_scope(MOBILE, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE


def test_a_store_that_cannot_erase_says_so(sandbox_server: SandboxServer) -> None:
    class Plain:  # the audit role kept by a store with no erase verb
        def record(self, entry: Any) -> None: ...

        def recent(self, limit: int = 100) -> list[dict[str, Any]]:
            return []

    stores = Stores.memory()
    stores.audit = Plain()
    gate = Gatekeeper(sandbox_server.client(), stores=stores)
    with pytest.raises(InvalidArgumentType, match="audit store"):
        gate.erase(MOBILE)


def test_the_async_gate_reads_and_erases_alike(sandbox_server: SandboxServer, sandbox: Sandbox) -> None:
    async def main() -> tuple[int, int, Action]:
        client = sandbox_server.async_client()
        try:
            gate = AsyncGatekeeper(client, stores=Stores.memory())
            await gate.decide(MOBILE)
            before = len(await gate.audit(MOBILE))
            await gate.erase(MOBILE)
            after = len(await gate.audit(MOBILE))
            return before, after, (await gate.decide(MOBILE)).action
        finally:
            await client.http_client.close()

    before, after, action = asyncio.run(main(), debug=True)
    assert (before, after, action) == (1, 0, Action.REFUSE)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_settings_give_every_store_the_audit_retention(backend: str, tmp_path: Any) -> None:
    """[audit] retention_seconds reaches the store built from settings: an audit record older than it is not read."""
    from gatekeeper.audit import Auditor
    from gatekeeper.models import Decision
    from gatekeeper.wiring import build_stores

    settings = Settings(store={"backend": backend, "path": str(tmp_path / "gk.db")}, audit={"retention_seconds": 60})
    stores = build_stores(settings)
    try:
        auditor = Auditor(stores, settings.audit)
        entry = auditor.entry(Decision(Action.SMS, MOBILE, "notify"), MOBILE, None, (0.0, 0.0, 0.0, 0.0, 0.0))
        assert entry is not None
        stores.audit.record(entry._replace(at=entry.at - 120))  # two minutes old: past the retention
        stores.audit.record(entry)
        assert [r["at"] for r in stores.audit.recent(10)] == [entry.at]
    finally:
        for close in stores.closers:
            close()
