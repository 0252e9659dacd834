"""A notification service on ``gate.notify``: SMS to mobiles, a voice call to landlines, once per event.

``notify`` picks the channel; a refusal comes back as an Outcome with a reason, and an
idempotency key makes a retried job send nothing twice. Runs offline against the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass

from gatekeeper import Action, Gatekeeper, Outcome
from gatekeeper.sandbox import SandboxServer


@dataclass
class Delivery:
    order_id: str
    phone: str
    text: str


class NotificationService:
    def __init__(self, gate: Gatekeeper, sender: str, status_callback: str | None = None) -> None:
        self.gate = gate
        self.sender = sender
        self.status_callback = status_callback

    def send(self, delivery: Delivery) -> Outcome:
        # One key per business event: a retried job replays the first Outcome instead of texting again.
        return self.gate.notify(
            delivery.phone,
            delivery.text,
            from_=self.sender,
            status_callback=self.status_callback,
            idempotency_key=f"order-ready:{delivery.order_id}",
        )


def main() -> None:
    with SandboxServer() as sandbox:
        service = NotificationService(Gatekeeper(sandbox.client()), sender="+15005550006")
        jobs = [
            Delivery("1001", "+14155550100", "Your order 1001 is ready."),  # mobile: SMS
            Delivery("1002", "(415) 555-0101", "Your order 1002 is ready."),  # landline: voice call
            Delivery("1003", "+1 415 555 01", "Your order 1003 is ready."),  # not a number: refused
            Delivery("1001", "+14155550100", "Your order 1001 is ready."),  # a retried job: nothing sent
        ]
        for job in jobs:
            out = service.send(job)
            detail = f"code {out.decision.twilio_code}" if out.action is Action.REFUSE else out.sid
            print(
                f"order {job.order_id}: {out.action.value:<7} {detail}  replayed={out.replayed}  "
                f"reasons={', '.join(out.decision.reasons) or '-'}"
            )
        print("messages sent:", len(sandbox.sandbox.messages()), "calls placed:", len(sandbox.sandbox.calls()))


if __name__ == "__main__":
    main()
