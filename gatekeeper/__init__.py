"""Gatekeeper: decide, before a Twilio call costs money or breaks a rule, whether and how to reach a number.

::

    from gatekeeper import Gatekeeper, GatedClient, Settings

    gate = Gatekeeper.from_settings(Settings.load("config/gatekeeper.toml"))
    decision = gate.decide("(415) 555-2671", purpose="notify", country="US")
    client = GatedClient(gate.client, gate)      # the twilio Client, gated

The path of one request: ``pipeline`` (steps 1-4: ``phone``, ``suppress``, ``lookup``, ``policy`` and
``router``), driven by ``gate``, then ``channels`` (step 5), under ``idempotency`` and ``audit``.

``import gatekeeper`` is cheap: each public name below is imported from its module on first use (PEP 562), so
the command line's ``--help`` and a program that only needs, say, ``Settings`` do not pay for twilio, Flask and
the rest. Type checkers see ordinary imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
        RateLimited,
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

    __version__: str

#: The distribution's name on the package index (``pip install gatekeeper-twilio``); the import name is ``gatekeeper``.
_DISTRIBUTION = "gatekeeper-twilio"

#: Each public name and the module it is imported from when first asked for.
_LAZY = {
    "SendUnavailable": "gatekeeper.channels",
    "GatedClient": "gatekeeper.client",
    **dict.fromkeys(
        (
            "ConfigError",
            "GatekeeperError",
            "GateRefused",
            "IdempotencyConflict",
            "InvalidArgument",
            "InvalidNumber",
            "LookupUnavailable",
            "RateLimited",
            "SendFailed",
            "SendRejected",
            "StoreUnavailable",
            "UngatedCall",
        ),
        "gatekeeper.errors",
    ),
    "Gatekeeper": "gatekeeper.gate",
    **dict.fromkeys(
        ("Action", "Decision", "Outcome", "PhoneFacts", "SendRequest", "StatusRecord"), "gatekeeper.models"
    ),
    "Policy": "gatekeeper.policy",
    "Settings": "gatekeeper.settings",
    "Stores": "gatekeeper.stores.base",
}

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
    "RateLimited",
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


def _version() -> str:
    """The installed distribution's version (written once, in pyproject.toml); in a source tree that was never
    installed, the version pyproject.toml beside the package states."""
    from importlib import metadata

    try:
        return metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return _source_tree_version()


def _source_tree_version() -> str:
    import re
    from pathlib import Path

    try:
        text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return "0+unknown"
    # The [project] table up to the next table; its name must be ours (not some project that vendors this tree).
    table = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    body = table.group(1) if table else ""
    name = re.search(r'^name\s*=\s*"([^"]+)"', body, re.M)
    version = re.search(r'^version\s*=\s*"([^"]+)"', body, re.M)
    if name is None or version is None or name.group(1) != _DISTRIBUTION:
        return "0+unknown"
    return version.group(1)


if not TYPE_CHECKING:  # type checkers read the imports above; a module __getattr__ would hide typos from them

    def __getattr__(name: str) -> object:
        if name == "__version__":
            value: object = _version()
        elif name in _LAZY:
            from importlib import import_module

            value = getattr(import_module(_LAZY[name]), name)
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value  # asked once: later lookups find it without coming here
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
