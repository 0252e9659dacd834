"""Gatekeeper: decide, before a Twilio call costs money or breaks a rule, whether and how to reach a number.

::

    from gatekeeper import Gatekeeper, GatedClient, Settings

    gate = Gatekeeper.from_settings(Settings.load("config/gatekeeper.toml"))
    decision = gate.decide("(415) 555-2671", purpose="notify", country="US")
    client = GatedClient(gate.client, gate)      # the twilio Client, gated

The path of one request: ``pipeline`` (steps 1-4: ``phone``, ``suppress``, ``lookup``, ``policy`` and
``router``), driven by ``gate``, then ``channels`` (step 5), under ``idempotency`` and ``audit``.
"""

from gatekeeper.channels import SendUnavailable
from gatekeeper.client import GatedClient
from gatekeeper.errors import (
    ConfigError,
    GatekeeperError,
    GateRefused,
    IdempotencyConflict,
    InvalidArgument,
    InvalidNumber,
    LookupUnavailable,
    SendFailed,
    SendRejected,
    StoreUnavailable,
    UngatedCall,
)
from gatekeeper.gate import Gatekeeper
from gatekeeper.models import Action, Decision, Outcome, PhoneFacts, SendRequest, StatusRecord
from gatekeeper.policy import Policy
from gatekeeper.settings import Settings
from gatekeeper.stores.base import Stores

__version__ = "0.1.0"

__all__ = [
    "Action",
    "ConfigError",
    "Decision",
    "GateRefused",
    "GatedClient",
    "Gatekeeper",
    "GatekeeperError",
    "IdempotencyConflict",
    "InvalidArgument",
    "InvalidNumber",
    "LookupUnavailable",
    "Outcome",
    "PhoneFacts",
    "Policy",
    "SendFailed",
    "SendRejected",
    "SendRequest",
    "SendUnavailable",
    "Settings",
    "StatusRecord",
    "StoreUnavailable",
    "Stores",
    "UngatedCall",
    "__version__",
]
