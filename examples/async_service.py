"""An asyncio service: AsyncGatekeeper and the drop-in's ``create_async``, every wait awaited.

Runs offline against the local sandbox. With a real account, build the gate with
``AsyncGatekeeper.from_settings(Settings.load(...))`` (it makes the async twilio client) before
``asyncio.run``; nothing else changes.
"""

import asyncio

from twilio.base.exceptions import TwilioRestException

from gatekeeper import GatedClient
from gatekeeper.sandbox import SandboxServer


async def main(sandbox: SandboxServer) -> None:
    client = GatedClient(sandbox.async_client())  # an async client: the gate is an AsyncGatekeeper
    gate = client.gate
    try:
        # A burst of sends to one new number: one Lookup between them, however many coroutines ask.
        texts = await asyncio.gather(
            *(client.messages.create_async(to="+14155550100", from_="+15005550006", body=f"#{i}") for i in range(20))
        )
        print("sent", len(texts), "texts; Lookups paid:", sandbox.sandbox.lookup_count("+14155550100"))

        try:  # a landline cannot take an SMS: refused before a cent is spent, as Twilio would (21614)
            await client.messages.create_async(to="+14155550101", from_="+15005550006", body="Hello")
        except TwilioRestException as exc:
            print("refused", exc.code)

        outcome = await gate.notify("+14155550101", "Your package arrives today", from_="+15005550006")
        print("notify a landline:", outcome.action.value, outcome.sid[:2])

        await gate.opt_out("+14155550100")  # what the webhooks record when the person replies STOP
        refused = await gate.notify("+14155550100", "Another text", from_="+15005550006")
        print("after STOP:", refused.action.value, refused.decision.twilio_code)
    finally:
        await gate.close()


with SandboxServer() as sandbox:
    asyncio.run(main(sandbox))
