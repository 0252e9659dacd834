"""A Flask app with Gatekeeper's webhooks mounted: STOP/START/HELP replies and status callbacks.

``create_app()`` is what you deploy (``gatekeeper serve`` does the same with waitress). Run this
file to see it work offline: a local sandbox sends a message whose signed status callbacks reach
the app, and a STOP reply blocks the next send.
"""

from __future__ import annotations

import requests
from flask import Flask
from twilio.request_validator import RequestValidator

from gatekeeper import Gatekeeper, Settings
from gatekeeper.sandbox import TEST_AUTH_TOKEN, BackgroundServer, SandboxServer
from gatekeeper.webhooks import ConsentEvent, StatusEvent, init_app


def create_app(gate: Gatekeeper) -> Flask:
    app = Flask(__name__)

    def on_status(event: StatusEvent) -> None:
        app.logger.info("%s %s is now %s", event.kind, event.sid, event.status)

    def on_consent(event: ConsentEvent) -> None:
        app.logger.info("consent change: opted_out=%s via %s", event.opted_out, event.source)

    # One line mounts everything: /twilio/messages/inbound, /twilio/messages/status, /twilio/calls/status …
    init_app(app, gate, url_prefix="/twilio", on_status=on_status, on_consent=on_consent)
    return app


def main() -> None:
    with SandboxServer() as sandbox:
        # In production: Settings.load(), with [webhooks] public_base_url = "https://your.public.host".
        gate = Gatekeeper(sandbox.client(), settings=Settings(webhooks={"allowed_hosts": ["127.0.0.1"]}))
        with BackgroundServer(create_app(gate)) as web:
            out = gate.notify(
                "+14155550100",
                "Your code is ready",
                from_="+15005550006",
                status_callback=f"{web.url}/twilio/messages/status",
            )
            deliveries = sandbox.sandbox.flush_callbacks()  # the sandbox signs these like Twilio does
            print("callbacks answered:", [d.status_code for d in deliveries])
            record = gate.status_of(out.sid or "")
            print("stored status:", record.status if record else None)

            # The person replies STOP; Twilio posts it, signed, to the inbound route.
            url = f"{web.url}/twilio/messages/inbound"
            form = {"MessageSid": "SM" + "1" * 32, "From": "+14155550100", "To": "+15005550006", "Body": "STOP"}
            signature = RequestValidator(TEST_AUTH_TOKEN).compute_signature(url, form)
            reply = requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)
            print("STOP answered", reply.status_code, reply.text)
            again = gate.notify("+14155550100", "One more thing", from_="+15005550006")
            print("next send:", again.action.value, again.decision.twilio_code)


if __name__ == "__main__":
    main()
