"""What Redis costs the gate: ``python bench/on_redis.py`` (part of ``./run bench``; skipped when no Redis answers
on 127.0.0.1:6379).

Prints, from one run against the same local servers (that Redis under a key prefix of its own, a fake Twilio in
another process, a waitress server in a third):
  1. commands and round trips per operation, the caller's own and in all (the audit's write-behind thread
     included): a decision for a repeated number, one whose facts another process cached, a status callback,
     an inbound STOP;
  2. Redis decide for a repeated number against one bare ``GET`` on the same connection pool (target <= 2x);
  3. a gated ``messages.create`` on Redis against the bare send beside it (target <= 1.10x), with the consent watch
     (``stores.redis_watch``) and without; then how many decisions made at once after another process's STOP
     refuse (all should);
  4. the webhooks on Redis under waitress against a route that only validates the signature, both signed
     status callbacks, each request of one paired with one of the other (target >= 0.8x).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import requests
from decide import FROM, SID, TO, client_for, p50_us, paired, serve
from twilio.request_validator import RequestValidator

from gatekeeper import GatedClient, Gatekeeper, Settings, Stores
from gatekeeper.stores.redis import RedisStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_trips import counting

REDIS_URL = "redis://127.0.0.1:6379/0"
TOKEN = "bench-token"  # noqa: S105 - the fake Twilio's, as bench/decide.py signs in with
PUBLIC = "http://127.0.0.1"  # the URL the signatures are computed for: the webhooks check against it


def prefix() -> str:
    return f"gkbench:{uuid.uuid4().hex[:8]}:"


def gate_on_redis(twilio_url: str, key_prefix: str) -> tuple[Gatekeeper, RedisStore]:
    store = RedisStore.from_url(REDIS_URL, prefix=key_prefix)
    settings = Settings(webhooks={"public_base_url": PUBLIC})
    return Gatekeeper(client_for(twilio_url), stores=Stores.using(store), settings=settings), store


def drop(key_prefix: str) -> None:
    with redis.Redis.from_url(REDIS_URL) as r:
        for key in r.scan_iter(match=f"{key_prefix}*", count=1000):
            r.delete(key)


def signed(url: str, params: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, params)}


def status_params(i: int) -> dict[str, str]:
    return {"MessageSid": f"SM{i:032x}", "MessageStatus": "delivered", "To": TO, "AccountSid": SID}


# -- 1. commands and round trips ----------------------------------------------------------------------------
def trips_table(twilio_url: str) -> None:
    from flask import Flask

    from gatekeeper.webhooks import init_app

    key_prefix = prefix()
    gate, store = gate_on_redis(twilio_url, key_prefix)
    other, other_store = gate_on_redis(twilio_url, key_prefix)  # "another process": its own memos and pool
    app = Flask("bench")
    init_app(app, gate)
    web = app.test_client()

    def post(path: str, params: dict[str, str]) -> None:
        answer = web.post(path, data=params, headers=signed(f"{PUBLIC}{path}", params))
        assert answer.status_code == 200, answer.status_code

    unwatched_store = RedisStore.from_url(REDIS_URL, prefix=key_prefix, consent_watch_seconds=0)
    unwatched = Gatekeeper(client_for(twilio_url), stores=Stores.using(unwatched_store))
    for _ in range(3):  # warm: the secrets read, the facts cached, connections open, the route kept and found clear
        gate.decide(TO), unwatched.decide(TO)
    other.decide("+14155550100")
    post("/twilio/messages/status", status_params(0))
    for flushed in (store, other_store, unwatched_store):
        flushed._audit.flush()
    operations: dict[str, Callable[[], object]] = {
        "decide, repeated number": lambda: gate.decide(TO),
        "the same, consent_watch_ms = 0": lambda: unwatched.decide(TO),
        "decide, facts cached by another process": lambda: other.decide(TO),
        "status callback": lambda: post("/twilio/messages/status", status_params(1)),
        "inbound STOP": lambda: post(
            "/twilio/messages/inbound",
            {"MessageSid": f"SM{2:032x}", "From": TO, "To": FROM, "Body": "STOP", "AccountSid": SID},
        ),
    }
    print("commands / round trips per operation on Redis (the caller's; in all, with the audit's write-behind)")
    for name, operation in operations.items():
        with counting() as trips:
            operation()
            caller = trips.of()
            for flushed in (store, other_store, unwatched_store):
                flushed._audit.flush()
        commands, round_trips = caller
        print(f"  {name:42s} {commands:3d} commands in {round_trips} round trip(s); in all "
              f"{trips.total()[0]} in {trips.total()[1]}")  # fmt: skip
    gate.close()
    other.close()
    unwatched.close()
    drop(key_prefix)


# -- 2. decide against GET ----------------------------------------------------------------------------------
def decide_vs_get(twilio_url: str, n: int) -> None:
    key_prefix = prefix()
    gate, store = gate_on_redis(twilio_url, key_prefix)
    gate.decide(TO)
    client = store._r
    client.set(f"{key_prefix}probe", b"x")
    ratios = []
    for _ in range(5):  # interleaved rounds: drift over the run moves both alike
        get = p50_us(lambda: client.get(f"{key_prefix}probe"), n)
        decide = p50_us(lambda: gate.decide(TO), n)
        ratios.append(decide / get)
    mid = statistics.median(ratios)
    verdict = "OK" if mid <= 2 else "MISSED"
    print(f"Redis decide, repeated number / one bare GET: {mid:.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}; "
          f"GET p50 {get:.0f} us, decide p50 {decide:.0f} us; target <= 2)  {verdict}")  # fmt: skip
    gate.close()
    drop(key_prefix)


# -- 3. gated send against bare send ------------------------------------------------------------------------
def send_vs_bare(twilio_url: str, sends: int, rounds: int, *, watch_seconds: float = 1.0) -> None:
    key_prefix = prefix()
    store = RedisStore.from_url(REDIS_URL, prefix=key_prefix, consent_watch_seconds=watch_seconds)
    bare = client_for(twilio_url)
    gated = GatedClient(bare, Gatekeeper(bare, stores=Stores.using(store)))
    gated.messages.create(to=TO, from_=FROM, body="warm-up")
    bare.messages.create(to=TO, from_=FROM, body="warm-up")
    ratios, bares = [], []
    for _ in range(rounds):
        bare_p50, extra = paired(bare, gated, [TO] * sends)
        ratios.append((bare_p50 + extra) / bare_p50)
        bares.append(bare_p50)
    mid = statistics.median(ratios)
    if watch_seconds:
        print(f"messages.create on Redis, repeated number: gated / bare {mid:.3f} (rounds {min(ratios):.3f}-"
              f"{max(ratios):.3f}; bare p50 {statistics.median(bares) * 1e6:.0f} us; target <= 1.10)  "
              f"{'OK' if mid <= 1.10 else 'MISSED'}")  # fmt: skip
    else:
        print(f"  the same with consent_watch_ms = 0 (consent read on every send): gated / bare {mid:.3f} "
              f"(rounds {min(ratios):.3f}-{max(ratios):.3f})")  # fmt: skip
    gated.gate.close()
    drop(key_prefix)


# -- 3b. how soon another process's STOP is seen -------------------------------------------------------------
def stop_seen_at_once(twilio_url: str, n: int) -> None:
    """Another store (another host) records a STOP; at once, with nothing in between, this gate decides a number
    it has routed before, screened by the watch alone. How many of ``n`` such decisions were refused."""
    key_prefix = prefix()
    gate, _ = gate_on_redis(twilio_url, key_prefix)
    writer = RedisStore.from_url(REDIS_URL, prefix=key_prefix, consent_watch_seconds=0)
    numbers = [f"+1415555{i:04d}" for i in range(n)]
    for number in numbers:  # each routed and found clear, then decided from its route and the watch alone
        gate.decide(number), gate.decide(number), gate.decide(number)
    refused = 0
    for number in numbers:
        writer.opt_out(number, source="sms:STOP", at=time.time())
        refused += gate.decide(number).twilio_code == 21610
    print(f"another process's STOP, then at once a decision here: {refused} of {n} refused "
          f"({'OK' if refused == n else 'STALE'})")  # fmt: skip
    writer.close()
    gate.close()
    drop(key_prefix)


# -- 4. the webhooks under waitress -------------------------------------------------------------------------
def webhooks_app(twilio_url: str, key_prefix: str, ready: Any) -> None:
    """The blueprint on Redis and a validate-only route, under waitress (run in its own process)."""
    import socket

    import waitress
    from flask import Flask, abort, request

    from gatekeeper.webhooks import init_app

    gate, _ = gate_on_redis(twilio_url, key_prefix)
    app = Flask("bench")
    init_app(app, gate)
    validator = RequestValidator(TOKEN)

    @app.post("/validate-only")
    def validate_only() -> tuple[str, int]:
        url = f"{PUBLIC}{request.path}"
        if not validator.validate(url, request.form.to_dict(), request.headers.get("X-Twilio-Signature", "")):
            abort(403)
        return "", 200

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # before the port is handed out: a request sent before waitress runs waits in the backlog
    ready.put(sock.getsockname()[1])
    waitress.serve(app, sockets=[sock], threads=4, _quiet=True)


def webhooks_vs_validate(twilio_url: str, n: int) -> None:
    key_prefix = prefix()
    ctx = multiprocessing.get_context("spawn")
    ready: Any = ctx.Queue()
    server = ctx.Process(target=webhooks_app, args=(twilio_url, key_prefix, ready), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{ready.get(timeout=30)}"
    session = requests.Session()

    def post(path: str, params: dict[str, str]) -> float:
        headers = signed(f"{PUBLIC}{path}", params)
        t0 = time.perf_counter()
        answer = session.post(f"{base}{path}", data=params, headers=headers)
        took = time.perf_counter() - t0
        assert answer.status_code == 200, (path, answer.status_code)
        return took

    for i in range(50):  # warm both
        post("/twilio/messages/status", status_params(10_000_000 + i))
        post("/validate-only", status_params(i))
    blueprint, validate = [], []
    for i in range(n):  # paired, alternating which goes first
        pair = [(lambda i=i: post("/twilio/messages/status", status_params(i)), blueprint),
                (lambda i=i: post("/validate-only", status_params(i)), validate)]  # fmt: skip
        for call, into in pair if i % 2 else reversed(pair):
            into.append(call())
    server.terminate()
    drop(key_prefix)
    ratio = statistics.median(validate) / statistics.median(blueprint)
    verdict = "OK" if ratio >= 0.8 else "MISSED"
    print(f"webhooks on Redis under waitress, status callbacks: validate-only p50 / blueprint p50 {ratio:.2f} "
          f"(validate-only {statistics.median(validate) * 1e6:.0f} us, blueprint "
          f"{statistics.median(blueprint) * 1e6:.0f} us; target >= 0.8)  {verdict}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=3_000)
    parser.add_argument("--sends", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--stops", type=int, default=500)
    args = parser.parse_args()
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        print(f"bench/on_redis.py skipped: no Redis answers on {REDIS_URL}")
        return
    ctx = multiprocessing.get_context("spawn")
    ready: Any = ctx.Queue()
    twilio = ctx.Process(target=serve, args=(ready,), daemon=True)
    twilio.start()
    twilio_url = f"http://127.0.0.1:{ready.get(timeout=30)}"
    try:
        trips_table(twilio_url)
        decide_vs_get(twilio_url, args.decisions)
        send_vs_bare(twilio_url, args.sends, args.rounds)
        send_vs_bare(twilio_url, args.sends, args.rounds, watch_seconds=0)
        stop_seen_at_once(twilio_url, args.stops)
        webhooks_vs_validate(twilio_url, args.requests)
    finally:
        twilio.terminate()


if __name__ == "__main__":
    main()
