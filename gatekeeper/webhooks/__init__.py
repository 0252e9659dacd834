"""Twilio webhooks for Gatekeeper: inbound STOP/START/HELP (and plain-words opt-outs) and status callbacks.

::

    from gatekeeper.webhooks import create_blueprint
    app.register_blueprint(create_blueprint(gate), url_prefix="/twilio")

or, the Flask-extension way, ``init_app(app, gate, url_prefix="/twilio")``.
See ``docs/webhooks.md``.
"""

from gatekeeper.webhooks.blueprint import WebhookState, create_blueprint, init_app, webhook_urls
from gatekeeper.webhooks.events import ConsentEvent, InboundEvent, StatusEvent
from gatekeeper.webhooks.keywords import Classification, Classifier, Intent

__all__ = [
    "Classification",
    "Classifier",
    "ConsentEvent",
    "InboundEvent",
    "Intent",
    "StatusEvent",
    "WebhookState",
    "create_blueprint",
    "init_app",
    "webhook_urls",
]
