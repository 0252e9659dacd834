"""House rule 3: the public surface is pinned."""

from __future__ import annotations

import gatekeeper
from gatekeeper.errors import ConfigError, GatekeeperError, GateRefused, InvalidNumber, LookupUnavailable


def test_exported_members() -> None:
    """__all__ lists exactly the public API, and each name resolves."""
    assert sorted(gatekeeper.__all__) == sorted(
        [
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
            "RateLimited",
            "SendFailed",
            "SendRejected",
            "SendRequest",
            "SendUnavailable",
            "Settings",
            "StatusRecord",
            "Stores",
            "StoreUnavailable",
            "UngatedCall",
            "__version__",
        ]
    )
    for name in gatekeeper.__all__:
        assert getattr(gatekeeper, name) is not None


def test_error_tree() -> None:
    """Every error is a GatekeeperError; the dual-inherited ones still match old except clauses."""
    from twilio.base.exceptions import TwilioRestException

    for cls in (ConfigError, InvalidNumber, LookupUnavailable, GateRefused):
        assert issubclass(cls, GatekeeperError)
    assert issubclass(GateRefused, TwilioRestException)
    assert issubclass(InvalidNumber, ValueError)
