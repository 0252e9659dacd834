"""GatedClient in five lines: the twilio Client you know, with the gate in front of every send.

Runs offline against the local sandbox. With a real account, use ``Client(sid, token)`` instead
of ``sandbox.client()``; nothing else changes.
"""

from twilio.base.exceptions import TwilioRestException

from gatekeeper import GatedClient
from gatekeeper.sandbox import SandboxServer

with SandboxServer() as sandbox:
    client = GatedClient(sandbox.client())  # the one-line change
    message = client.messages.create(to="+14155550100", from_="+15005550006", body="Hello from Gatekeeper")
    print("sent", message.sid, message.status)

    try:  # a landline cannot take an SMS: refused before a cent is spent, as Twilio would (21614)
        client.messages.create(to="+14155550101", from_="+15005550006", body="Hello")
    except TwilioRestException as exc:
        print("refused", exc.code, exc.msg)
