"""No acknowledged event is lost while the shared store is down: it is journalled on this host's disk, answered
2xx, replayed in order and exactly once when the store is back, and no send reaches its number before that."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from support import FakeClock, PrivateRedis, drop_prefix

from gatekeeper.errors import StoreUnavailable
from gatekeeper.models import Action
from gatekeeper.stores.base import ACCOUNT_SCOPE, Stores
from gatekeeper.stores.journal import Journal
from gatekeeper.stores.memory import MemoryStore
from gatekeeper.stores.redis import RedisStore
from gatekeeper.webhooks import WebhookState

from .helpers import ALICE, BOB, CAROL, Flaky, Recorder, inbound, make_app, make_gate, message_status, post

pytestmark = pytest.mark.redis
MSG = "/messages/status"


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.db")
    yield j
    j.close()


@pytest.fixture
def wired(private_redis: PrivateRedis, journal: Journal, clock: FakeClock) -> Iterator[Any]:
    """A gate whose stores are a private Redis (which the test may stop), with a journal; its app and client."""
    store = RedisStore.from_url(private_redis.url, prefix="gkj:", timeout_seconds=0.5)
    stores = Stores.using(store)
    stores.journal = journal
    gate = make_gate(stores=stores, clock=clock)
    recorder = Recorder()
    app = make_app(gate, recorder)
    state: WebhookState = app.extensions["gatekeeper"]
    assert state.relay is not None
    try:
        yield gate, app.test_client(), recorder, state
    finally:
        state.relay.stop()
        store.close()
        drop_prefix(private_redis.url, "gkj:")


def test_stops_posted_while_redis_is_down_are_journalled_then_applied_once(
    wired: Any, private_redis: PrivateRedis, journal: Journal
) -> None:
    """A keyword STOP, a plain-words STOP and a failed delivery with 21610, posted with Redis stopped, are
    answered 2xx (the STOP reply included) from the journal; nothing goes to those numbers while they wait; once
    Redis is back the replay applies each exactly once (one consent change each), and replaying again, or a
    Twilio retry of the same event, changes nothing."""
    gate, client, recorder, state = wired
    private_redis.stop()
    client_answers = [
        post(client, "/messages/inbound", inbound("STOP", frm=ALICE, n=1)),
        post(client, "/messages/inbound", inbound("Please stop texting me", frm=BOB, n=2)),
        post(client, MSG, message_status("failed", to=CAROL, error=21610, n=3)),
    ]
    assert [a.status_code for a in client_answers] == [200, 200, 200]
    assert b"unsubscribed" in client_answers[0].data and b"unsubscribed" in client_answers[1].data
    assert journal.count() == 3
    assert recorder.consent == []  # nothing applied yet: the hooks run when the event is stored

    private_redis.start()
    for number in (ALICE, BOB, CAROL):  # the store answers again, but the journal still holds their events
        decision = gate.decide(number)
        assert (decision.action, decision.reasons) == (Action.REFUSE, ("consent:journal_pending",)), number

    assert state.relay.replay() is True
    assert journal.count() == 0
    for number in (ALICE, BOB, CAROL):
        decision = gate.decide(number)
        assert (decision.action, decision.twilio_code) == (Action.REFUSE, 21610), number
        history = gate.stores.opt_outs.consent_history(number)
        assert [(c.opted_out, c.scope) for c in history] == [(True, ACCOUNT_SCOPE)], number
    assert sorted(c.e164 for c in recorder.consent) == sorted([ALICE, BOB, CAROL])  # on_consent, once each

    assert post(client, "/messages/inbound", inbound("STOP", frm=ALICE, n=1)).status_code == 200  # Twilio's retry
    assert state.relay.replay() is True
    assert len(gate.stores.opt_outs.consent_history(ALICE)) == 1


def test_events_keep_their_order_behind_those_that_wait(wired: Any, private_redis: PrivateRedis) -> None:
    """STOP then START from one number while Redis is down: after the replay the number is opted in again, and
    its history says out, then in. A START that arrives once Redis is back, while the STOP still waits, is
    journalled behind it rather than applied first."""
    gate, client, _, state = wired
    private_redis.stop()
    assert post(client, "/messages/inbound", inbound("STOP", n=1)).status_code == 200
    private_redis.start()
    state.relay.journal.replaying = _held  # another process holds the replay lease: the STOP keeps waiting
    assert post(client, "/messages/inbound", inbound("START", n=2)).status_code == 200
    del state.relay.journal.replaying
    assert state.relay.replay() is True
    assert not gate.is_opted_out(ALICE)
    assert [c.opted_out for c in reversed(gate.stores.opt_outs.consent_history(ALICE))] == [True, False]


class _HeldLease:
    def __enter__(self) -> bool:
        return False

    def __exit__(self, *exc_info: object) -> None:
        return None


def _held(ttl_seconds: float) -> _HeldLease:
    return _HeldLease()


def test_a_replay_cut_short_applies_nothing_twice(wired: Any, private_redis: PrivateRedis, journal: Journal) -> None:
    """The event was applied but the process died before forgetting it: the next replay finds it done (its
    idempotency key in the shared store) and records nothing again."""
    gate, client, _, state = wired
    private_redis.stop()
    post(client, "/messages/inbound", inbound("STOP", n=1))
    private_redis.start()
    forget = journal.applied
    journal.applied = _dies  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        state.relay.replay()
    journal.applied = forget  # type: ignore[method-assign]
    assert journal.count() == 1 and gate.is_opted_out(ALICE)
    assert state.relay.replay() is True
    assert len(gate.stores.opt_outs.consent_history(ALICE)) == 1


def _dies(seq: int) -> None:
    raise RuntimeError("the process died here")


def test_the_background_replayer_drains_the_journal(wired: Any, private_redis: PrivateRedis, journal: Journal) -> None:
    """With no further webhook to trigger it, the relay's thread applies what waits once the store is back."""
    gate, client, _, state = wired
    state.relay.retry_seconds = 0.01
    private_redis.stop()
    applied = threading.Event()
    forget = journal.applied

    def noted(seq: int) -> None:
        forget(seq)
        applied.set()

    journal.applied = noted  # type: ignore[method-assign]
    post(client, "/messages/inbound", inbound("STOP", n=1))
    private_redis.start()
    assert applied.wait(10)
    assert journal.count() == 0 and gate.is_opted_out(ALICE)


def test_without_a_journal_a_store_outage_is_a_503(clock: FakeClock) -> None:
    stores = Stores.using(MemoryStore())
    stores.opt_outs = Flaky(stores.opt_outs, failing={"opt_out", "opted_out_scope"})
    stores.idempotency = Flaky(stores.idempotency, failing={"claim"})
    client: FlaskClient = make_app(make_gate(stores=stores, clock=clock)).test_client()
    assert post(client, "/messages/inbound", inbound("STOP")).status_code == 503


def test_a_journal_that_cannot_write_is_a_503(clock: FakeClock, journal: Journal) -> None:
    """If the journal cannot keep the event either, nothing was stored: 503, as without a journal."""
    stores = Stores.using(MemoryStore())
    stores.idempotency = Flaky(stores.idempotency, failing={"claim"})
    stores.journal = journal
    journal.append = _journal_down  # type: ignore[method-assign]
    client: FlaskClient = make_app(make_gate(stores=stores, clock=clock)).test_client()
    assert post(client, "/messages/inbound", inbound("STOP")).status_code == 503


def _journal_down(*args: object) -> int:
    raise StoreUnavailable("disk full")


def test_settings_give_a_journal_to_a_redis_store_and_on_request(private_redis: PrivateRedis, tmp_path: Path) -> None:
    """[webhooks] journal = "auto": a journal beside the default store file when the store is Redis (another
    host), none for the SQLite store (this host's disk already); "on" and "off" say so outright."""
    from gatekeeper import Settings
    from gatekeeper.wiring import build_stores

    def journal_of(**sections: Any) -> Any:
        stores = build_stores(Settings(**sections))
        try:
            return stores.journal
        finally:
            for close in stores.closers:
                close()

    redis = {"url": private_redis.url, "key_prefix": "gkjw:"}
    assert isinstance(journal_of(redis=redis), Journal)
    assert journal_of() is None
    assert journal_of(redis=redis, webhooks={"journal": "off"}) is None
    path = tmp_path / "j.db"
    assert journal_of(webhooks={"journal": "on", "journal_path": str(path)}).path == path
