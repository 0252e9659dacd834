"""Step 3, enrich: Lookup v2 through the SDK, cached, single-flight, retried only where safe."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from support import ACCOUNT_SID, AUTH_TOKEN, FakeClock, FakeTwilio, run_threads
from twilio.rest import Client

from gatekeeper import Action, ConfigError, Gatekeeper, Settings, Stores
from gatekeeper.stores.memory import MemoryStore
from gatekeeper.stores.redis import RedisStore

MOBILE, LANDLINE, VOIP = "+14155552671", "+14155552672", "+14155552673"
DAY = 86_400


def gate(client: Client, clock: FakeClock, stores: Stores | None = None, **settings: Any) -> Gatekeeper:
    return Gatekeeper(
        client,
        settings=Settings(**settings),
        clock=clock,
        sleep=clock.sleep,
        stores=stores or Stores.using(MemoryStore(clock=clock)),
    )


def test_cache_hit_whatever_the_country_hint(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """The key uses the number's own region, so a different hint for the same number hits the cache."""
    g = gate(twilio_client, clock)
    first = g.decide("+14155552671", country="GB")
    second = g.decide("(415) 555-2671", country="US")
    assert (first.facts.source, second.facts.source) == ("lookup", "cache")
    assert second.cache_hit and not first.cache_hit
    assert twilio_http.lookups == {MOBILE: 1}
    assert twilio_http.lookup_fields == ["line_type_intelligence"]


def test_no_lookup_for_what_the_parse_refuses(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Invalid numbers, short codes, sender IDs and refused countries never cost a Lookup."""
    g = gate(twilio_client, clock, policy={"deny_countries": ["GB"]})
    for raw, code in [
        ("+1415", 21211),
        ("12345", 21211),
        ("ACME", 21211),
        ("+15555551234", 21211),
        ("+447400123456", 21408),
    ]:
        d = g.decide(raw)
        assert (d.action, d.twilio_code) == (Action.REFUSE, code), raw
    assert len(twilio_http.mock.calls) == 0


def test_negative_answers_are_cached_for_the_negative_ttl(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """valid=false refuses 21211, is cached for an hour, then asked again."""
    twilio_http.invalid.add(MOBILE)
    g = gate(twilio_client, clock)
    d = g.decide(MOBILE)
    assert (d.action, d.twilio_code, d.reasons) == (Action.REFUSE, 21211, ("lookup:invalid",))
    g.decide(MOBILE)
    assert twilio_http.lookups[MOBILE] == 1
    clock.advance(3_601)
    g.decide(MOBILE)
    assert twilio_http.lookups[MOBILE] == 2


def test_404_is_a_cached_invalid_number(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A 404 answer (Lookup v1 style) means no such number: refused and negatively cached."""
    twilio_http.faults[MOBILE] = [(404, {}, {"code": 20404, "message": "not found", "status": 404})]
    g = gate(twilio_client, clock)
    assert g.decide(MOBILE).twilio_code == 21211
    assert g.decide(MOBILE).twilio_code == 21211
    assert twilio_http.lookups[MOBILE] == 1


def test_positive_ttl(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Positive answers last the configured TTL (default 7 days), then are fetched again."""
    g = gate(twilio_client, clock)
    g.decide(MOBILE)
    clock.advance(7 * DAY - 10)
    assert g.decide(MOBILE).cache_hit
    clock.advance(20)
    assert not g.decide(MOBILE).cache_hit
    assert twilio_http.lookups[MOBILE] == 2


def test_short_lived_field_is_refreshed_alone(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """sms_pumping_risk ages in an hour; after that only it is fetched again, the line type stays cached."""
    g = gate(twilio_client, clock, lookup={"default_fields": ["line_type_intelligence", "sms_pumping_risk"]})
    first = g.decide(MOBILE)
    assert (first.facts.line_type, first.facts.sms_pumping_risk_score) == ("mobile", 12)
    clock.advance(3_000)
    assert g.decide(MOBILE).cache_hit
    clock.advance(700)
    refreshed = g.decide(MOBILE)
    assert twilio_http.lookup_fields == ["line_type_intelligence,sms_pumping_risk", "sms_pumping_risk"]
    assert (refreshed.facts.line_type, refreshed.facts.sms_pumping_risk_score) == ("mobile", 12)
    assert refreshed.facts.fetched_at == first.facts.fetched_at  # the oldest field's time
    clock.advance(10)
    assert g.decide(MOBILE).cache_hit


def test_mfa_rechecks_facts_older_than_a_day(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Facts two days old serve notify from cache, but MFA (max_age 24 h) asks Lookup again."""
    g = gate(twilio_client, clock)
    g.decide(MOBILE, purpose="notify")
    clock.advance(2 * DAY)
    assert g.decide(MOBILE, purpose="notify").cache_hit
    assert not g.decide(MOBILE, purpose="mfa").cache_hit
    assert twilio_http.lookups[MOBILE] == 2
    assert g.decide(MOBILE, purpose="mfa").cache_hit


def test_5xx_and_network_errors_are_retried(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """A 500 then a dropped connection, then an answer: three requests, two backoff sleeps, facts from Lookup."""
    twilio_http.faults[MOBILE] = [
        (500, {}, {"code": 20500, "message": "oops", "status": 500}),
        requests.exceptions.ConnectionError("connection reset"),
    ]
    g = gate(twilio_client, clock)
    d = g.decide(MOBILE)
    assert (d.action, d.facts.source) == (Action.SMS, "lookup")
    assert twilio_http.lookups[MOBILE] == 3
    assert len(clock.sleeps) == 2
    assert 0.2 <= clock.sleeps[0] <= 0.3 and 0.4 <= clock.sleeps[1] <= 0.5  # 200 ms doubling, + up to 100 ms jitter


def test_429_honours_retry_after(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """20429 with Retry-After: 2 waits exactly two seconds before the retry."""
    twilio_http.faults[MOBILE] = [(429, {"Retry-After": "2"}, {"code": 20429, "message": "Too many", "status": 429})]
    d = gate(twilio_client, clock).decide(MOBILE)
    assert d.facts.source == "lookup"
    assert clock.sleeps == [2.0]


@pytest.mark.parametrize("status", [400, 404 + 5])
def test_other_4xx_is_never_retried(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock, status: int
) -> None:
    """A 4xx other than 401, 403 and 429 is final: one request; notify routes on local facts, MFA refuses 20503."""
    twilio_http.faults["*"] = [(status, {}, {"code": 60606, "message": "no", "status": status})] * 2
    g = gate(twilio_client, clock)
    notify = g.decide(MOBILE)
    assert notify.action is Action.SMS
    assert notify.reasons == (f"lookup:unavailable:http_{status}", "on_lookup_error:allow_local")
    assert notify.facts.source == "local"
    mfa = g.decide(LANDLINE, purpose="mfa")
    assert (mfa.action, mfa.twilio_code) == (Action.REFUSE, 20503)
    assert sum(twilio_http.lookups.values()) == 2
    assert clock.sleeps == []


@pytest.mark.parametrize(("status", "code"), [(401, 20003), (403, 20003)])
def test_refused_credentials_are_a_config_error_at_once(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock, status: int, code: int
) -> None:
    """401/403 from Lookup is no outage: every purpose raises ConfigError at once, one request, nothing cached."""
    twilio_http.faults["*"] = [(status, {}, {"code": code, "message": "Authenticate", "status": status})] * 2
    g = gate(twilio_client, clock)
    for purpose in ("notify", "mfa"):
        with pytest.raises(ConfigError, match="credentials") as refused:
            g.decide(MOBILE, purpose=purpose)
        assert refused.value.key == "twilio"
    assert twilio_http.lookups[MOBILE] == 2 and clock.sleeps == []
    assert g.notify(MOBILE, "hi", from_="+15005550006").action is Action.SMS  # faults spent: Lookup answers again


def test_an_answer_about_another_number_is_never_used(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """Lookup naming another number than asked is an error: not cached, nothing sent to the number it named."""
    other = "+14155559999"
    twilio_http.answer_as[MOBILE] = other
    g = gate(twilio_client, clock)
    out = g.notify(MOBILE, "hi", from_="+15005550006")
    assert out.decision.reasons[0] == "lookup:unavailable:answer_for_another_number"
    assert [m["To"] for m in twilio_http.sent] == [MOBILE]  # the number asked, on local facts (notify's default)
    mfa = g.decide(MOBILE, purpose="mfa")
    assert (mfa.action, mfa.twilio_code) == (Action.REFUSE, 20503)
    del twilio_http.answer_as[MOBILE]
    assert g.decide(MOBILE).facts.source == "lookup"  # type: ignore[union-attr]  # nothing was cached


def test_retries_stop_at_max_retries(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """Persistent 503s: max_retries + 1 attempts, then Lookup is unavailable and not cached."""
    twilio_http.faults[MOBILE] = [(503, {}, {"code": 20503, "message": "down", "status": 503})] * 10
    g = gate(twilio_client, clock, lookup={"max_retries": 3})
    d = g.decide(MOBILE)
    assert d.reasons[0] == "lookup:unavailable:http_503"
    assert twilio_http.lookups[MOBILE] == 4
    twilio_http.faults.clear()
    assert g.decide(MOBILE).facts.source == "lookup"


def test_each_request_carries_the_timeout(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """The configured per-request timeout reaches the HTTP layer (the SDK's own default is none)."""
    gate(twilio_client, clock, lookup={"timeout_ms": 1234}).decide(MOBILE)
    assert twilio_http.mock.calls[0].request.req_kwargs["timeout"] == pytest.approx(1.234)


def test_lookup_disabled_decides_locally(twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock) -> None:
    """With [lookup] enabled = false nothing is fetched; a UK mobile is still known from the parse."""
    g = gate(twilio_client, clock, lookup={"enabled": False})
    d = g.decide("+447400123456")
    assert (d.action, d.facts.source, d.facts.line_type) == (Action.SMS, "local", "mobile")
    assert len(twilio_http.mock.calls) == 0


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_50_threads_one_lookup(
    twilio_http: FakeTwilio, twilio_client: Client, backend: str, request: pytest.FixtureRequest
) -> None:
    """Fifty threads deciding the same uncached number cause exactly one Lookup request."""
    store = MemoryStore() if backend == "memory" else request.getfixturevalue("redis_store")
    twilio_http.lookup_delay_seconds = 0.2  # keep the one request in flight while the others arrive
    g = Gatekeeper(twilio_client, stores=Stores.using(store))
    results = run_threads(50, lambda _: g.decide(MOBILE))
    assert all(r.action is Action.SMS for r in results), [r for r in results if not hasattr(r, "action")]
    assert twilio_http.lookups == {MOBILE: 1}
    assert sum(1 for r in results if r.facts.source == "lookup") == 1


# -- across processes ---------------------------------------------------------------------
class _CountingLookup(BaseHTTPRequestHandler):
    hits: list[str] = []
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            self.hits.append(self.path)
        time.sleep(0.3)  # a slow Lookup: every process misses while it is in flight
        number = self.path.split("?")[0].rsplit("/", 1)[-1]
        body = json.dumps(
            {
                "phone_number": number,
                "valid": True,
                "country_code": "US",
                "line_type_intelligence": {"type": "mobile", "error_code": None},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _decide_in_process(lookup_url: str, redis_url: str, prefix: str, start: Any, out: Any) -> None:
    client = Client(ACCOUNT_SID, AUTH_TOKEN, environment={})
    client.lookups.base_url = lookup_url
    g = Gatekeeper(client, stores=Stores.using(RedisStore.from_url(redis_url, prefix=prefix)))
    start.wait()
    results = run_threads(10, lambda _: g.decide(MOBILE).facts.source)
    out.put(results)


def test_processes_share_one_lookup_through_redis(redis_url: str, redis_store: RedisStore, redis_prefix: str) -> None:
    """Four processes of ten threads each, all missing at once, make exactly one Lookup request."""
    _CountingLookup.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CountingLookup)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_decide_in_process, args=(url, redis_url, redis_prefix, start, out)) for _ in range(4)]
    try:
        for p in procs:
            p.start()
        time.sleep(1.0)  # let the spawned interpreters import and reach the start line
        start.set()
        sources = [s for _ in procs for s in out.get(timeout=60)]
    finally:
        for p in procs:
            p.join(timeout=30)
        server.shutdown()
    assert len(sources) == 40
    assert sources.count("lookup") == 1
    assert len(_CountingLookup.hits) == 1


def test_fresh_facts_are_served_from_process_memory(
    twilio_http: FakeTwilio, twilio_client: Client, clock: FakeClock
) -> None:
    """Facts just fetched are served from the process memo, without a store read, until their first field ages out."""
    reads: list[str] = []

    class Counting(MemoryStore):
        def get_lookup(self, key: str) -> Any:
            reads.append(key)
            return super().get_lookup(key)

    g = Gatekeeper(twilio_client, stores=Stores.using(Counting(clock=clock)), clock=clock, sleep=clock.sleep)
    g.decide(MOBILE)  # miss: read, fill lock, read again, fetch; the memo remembers what was fetched
    first_reads = len(reads)
    for _ in range(5):
        assert g.decide(MOBILE).cache_hit
    assert len(reads) == first_reads
    clock.advance(7 * DAY + 1)  # past the line type's TTL: the memo no longer answers
    assert not g.decide(MOBILE).cache_hit
    assert twilio_http.lookups[MOBILE] == 2
