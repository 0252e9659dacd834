"""What a decision and a status callback cost on Redis, counted (commands and round trips, as redis-py sends
them; ``redis_trips``): a repeated number's decision in one round trip, its audit record written behind in a
batch; a status callback in one round trip, a duplicate in one writing nothing; a failure status still claimed,
counted once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from redis_trips import counting
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from gatekeeper import Gatekeeper, Settings, Stores
from gatekeeper.stores.redis import RedisStore
from gatekeeper.webhooks import init_app

pytestmark = pytest.mark.redis

SID, TOKEN = "AC" + "0" * 32, "round-trips-token"
TO = "+14155552671"
PUBLIC = "http://localhost"


@pytest.fixture
def gate(redis_store: RedisStore) -> Iterator[Gatekeeper]:
    settings = Settings(lookup={"enabled": False}, webhooks={"public_base_url": PUBLIC})
    gate = Gatekeeper(Client(SID, TOKEN, environment={}), stores=Stores.using(redis_store), settings=settings)
    yield gate
    gate.close()


def post(web: Any, path: str, params: dict[str, str]) -> int:
    signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}{path}", params)
    return int(web.post(path, data=params, headers={"X-Twilio-Signature": signature}).status_code)


def test_a_repeated_number_is_decided_in_one_round_trip(gate: Gatekeeper, redis_store: RedisStore) -> None:
    gate.decide(TO)  # the secrets read once per store, the route kept
    redis_store.flush()
    with counting() as trips:
        for _ in range(20):
            gate.decide(TO)
        caller = trips.of()
        redis_store.flush()
        everything = trips.total()
    assert caller == (20, 20)  # one command (the screening script) in one round trip each
    assert everything == (21, 21)  # and the twenty audit records in one batch
    assert len(redis_store.recent(50)) == 21


def test_a_status_callback_is_one_round_trip_and_a_duplicate_writes_nothing(
    gate: Gatekeeper, redis_store: RedisStore
) -> None:
    app = Flask("trips")
    seen: list[Any] = []
    init_app(app, gate, on_status=seen.append)
    web = app.test_client()
    warm = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "sent", "To": TO, "AccountSid": SID}
    assert post(web, "/twilio/messages/status", warm) == 200  # the audit key read once
    params = {**warm, "MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered"}
    with counting() as trips:
        assert post(web, "/twilio/messages/status", params) == 200
        first = trips.of()
    with counting() as trips:
        assert post(web, "/twilio/messages/status", params) == 200  # Twilio's retry of the same event
        again = trips.of()
    assert first == (1, 1)  # one script: the event, the status and the erasure index (one server)
    assert again == (1, 1)
    assert [(e.sid, e.status) for e in seen] == [(warm["MessageSid"], "sent"), (params["MessageSid"], "delivered")]
    record = redis_store.status_of(params["MessageSid"])
    assert record is not None and record.status == "delivered"


def test_a_failure_status_is_claimed_and_counted_once(gate: Gatekeeper, redis_store: RedisStore) -> None:
    """30003 counts a hard failure beside the status: that event goes through the idempotency claim, and its
    retry counts nothing more."""
    app = Flask("trips")
    init_app(app, gate)
    web = app.test_client()
    params = {"MessageSid": "SM" + "2" * 32, "MessageStatus": "undelivered", "ErrorCode": "30003", "To": TO,
              "AccountSid": SID}  # fmt: skip
    with counting() as trips:
        assert post(web, "/twilio/messages/status", params) == 200
        claimed = trips.of()
    assert post(web, "/twilio/messages/status", params) == 200
    assert claimed[1] > 1  # the claim, the status, the failure, the claim settled
    assert redis_store.suppression(TO, now=gate.clock(), window_seconds=3600, threshold=1) == "failures:1"


def test_the_guard_counts_every_rule_of_an_mfa_decision_in_one_round_trip(
    gate: Gatekeeper, redis_store: RedisStore
) -> None:
    """The shipped MFA rules an attempt counts in (number, prefix, country; client with a key) go to Redis in one
    pipeline, and the conversion tallies their limits may tighten by (started and approved, per prefix and per
    country) in one more: a repeated number's MFA decision is the screening's round trip and the guard's two."""
    gate.decide(TO, "mfa", client_key="ip:1")
    redis_store.flush()
    with counting() as trips:
        gate.decide(TO, "mfa", client_key="ip:1")
        caller = trips.of()
    assert caller == (9, 3)  # the screening script; four ZCOUNTs in one pipeline; four window scripts in one


def test_without_conversion_limits_the_guard_is_one_round_trip(redis_store: RedisStore) -> None:
    """With ``[guard.conversion] enabled = false`` the guard reads no tallies: the rules' one pipeline only."""
    settings = Settings(
        lookup={"enabled": False}, webhooks={"public_base_url": PUBLIC}, guard={"conversion": {"enabled": False}}
    )
    gate = Gatekeeper(Client(SID, TOKEN, environment={}), stores=Stores.using(redis_store), settings=settings)
    gate.decide(TO, "mfa", client_key="ip:1")
    redis_store.flush()
    with counting() as trips:
        gate.decide(TO, "mfa", client_key="ip:1")
        caller = trips.of()
    assert caller == (5, 2)  # the screening script; four window scripts in one pipeline
