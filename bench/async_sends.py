"""What the gate costs an asyncio application: 200 concurrent sends, gated and bare. ``./run bench``.

Both sides use one twilio ``Client`` over ``AsyncTwilioHttpClient`` (one aiohttp session, one
connection pool) against the same local HTTP server in another process (``decide.py``'s fake
Twilio). A round sends 200 messages at once with ``asyncio.gather``; rounds alternate bare and
gated, so drift over the run falls on both. Prints sends per second for each and the gated/bare
throughput ratio (median and range over the rounds), for:
  1. ``AsyncGatekeeper`` under ``GatedClient``, a repeated number (route kept, nothing to look up);
  2. the same, a new number on every send (facts in the Lookup cache, the whole pipeline runs);
  3. a sync ``Gatekeeper`` under the async ``GatedClient``: each decision in a worker thread.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from decide import FROM, SID, TO, client_for, distinct_numbers, serve
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from gatekeeper import GatedClient, Gatekeeper
from gatekeeper.aio import AsyncGatekeeper

BODY = "Your package arrives today"
Send = Callable[[str], Awaitable[object]]


def async_client_for(url: str) -> Client:
    """Made inside the running loop: the aiohttp session belongs to it."""
    client = Client(SID, "bench-token", environment={}, http_client=AsyncTwilioHttpClient(timeout=5))
    client.api.base_url = url
    client.lookups.base_url = url
    return client


async def burst(send: Send, numbers: list[str]) -> float:
    """Seconds for ``len(numbers)`` sends started at once."""
    t0 = time.perf_counter()
    await asyncio.gather(*(send(number) for number in numbers))
    return time.perf_counter() - t0


async def compare(bare: Send, gated: Send, batches: list[list[str]]) -> tuple[float, float, list[float]]:
    """Median sends/s bare and gated, and each round's gated/bare throughput ratio."""
    bare_rates, gated_rates, ratios = [], [], []
    await burst(bare, batches[0])  # warm both: connections opened, first-use costs paid
    await burst(gated, batches[0])
    for i, numbers in enumerate(batches):
        order = [(bare, bare_rates), (gated, gated_rates)]
        times = {}
        for send, rates in order if i % 2 else reversed(order):
            elapsed = await burst(send, numbers)
            rates.append(len(numbers) / elapsed)
            times[id(rates)] = elapsed
        ratios.append(times[id(bare_rates)] / times[id(gated_rates)])
    return statistics.median(bare_rates), statistics.median(gated_rates), ratios


def report(label: str, bare_rate: float, gated_rate: float, ratios: list[float]) -> None:
    mid = statistics.median(ratios)
    print(
        f"  {label}: bare {bare_rate:,.0f} sends/s, gated {gated_rate:,.0f} sends/s; gated/bare throughput "
        f"{mid:.3f} (median of {len(ratios)} rounds, {min(ratios):.3f} to {max(ratios):.3f})"
    )


async def run(url: str, concurrent: int, rounds: int) -> None:
    bare_client = async_client_for(url)
    try:

        def sender(client: Any) -> Callable[[str], Awaitable[object]]:
            return lambda number: client.messages.create_async(to=number, from_=FROM, body=BODY)

        bare = sender(bare_client)
        async_gate = AsyncGatekeeper(bare_client)
        gated = sender(GatedClient(bare_client, async_gate))
        await bare(TO)
        await gated(TO)  # fill the Lookup cache and the route for TO
        print(f"{concurrent} concurrent messages.create_async per round, over loopback HTTP:")
        report("AsyncGatekeeper, repeated number", *await compare(bare, gated, [[TO] * concurrent] * rounds))

        numbers = distinct_numbers(concurrent * rounds)
        await asyncio.gather(*(async_gate.decide(number) for number in numbers))  # facts cached, no route yet
        batches = [numbers[i::rounds] for i in range(rounds)]
        report("AsyncGatekeeper, a new number each", *await compare(bare, gated, batches))

        sync_gate = Gatekeeper(client_for(url))  # its Lookups over its own blocking client
        threaded = sender(GatedClient(bare_client, sync_gate))
        sync_gate.decide(TO)
        batches = [[TO] * concurrent] * rounds
        report("sync Gatekeeper (decision in a thread), repeated number", *await compare(bare, threaded, batches))
    finally:
        await bare_client.http_client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrent", type=int, default=200, help="sends started at once per round")
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    ready: Any = ctx.Queue()
    server = ctx.Process(target=serve, args=(ready,), daemon=True)
    server.start()
    try:
        asyncio.run(run(f"http://127.0.0.1:{ready.get(timeout=30)}", args.concurrent, args.rounds))
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
