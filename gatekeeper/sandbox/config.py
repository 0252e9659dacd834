"""Configuration of a sandbox instance: accounts, number overrides, callback behaviour."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gatekeeper.sandbox.numbers import (
    TEST_ACCOUNT_SID,
    TEST_API_KEY_SECRET,
    TEST_API_KEY_SID,
    TEST_AUTH_TOKEN,
    TEST_SUBACCOUNT_AUTH_TOKEN,
    TEST_SUBACCOUNT_SID,
)

CallbackMode = Literal["manual", "auto"]


@dataclass(frozen=True)
class Account:
    """One account the sandbox accepts: SID, auth token, and API keys (``SK…`` SID → secret).

    ``parent_sid`` makes it a subaccount: as on Twilio, the parent's credentials then act on
    the subaccount's paths (``/2010-04-01/Accounts/{sub}/…``), while the subaccount's own
    credentials open its paths only. Resources created there belong to the subaccount, and
    their status callbacks are signed with the subaccount's auth token.
    """

    sid: str
    auth_token: str
    api_keys: Mapping[str, str] = field(default_factory=dict)
    parent_sid: str | None = None

    def __repr__(self) -> str:  # never show secrets in reprs, logs or tracebacks
        parent = f", parent_sid={self.parent_sid!r}" if self.parent_sid else ""
        return f"Account(sid={self.sid!r}, auth_token='***', api_keys=[{', '.join(self.api_keys)}]{parent})"


def default_account() -> Account:
    """The documented test account with its one API key."""
    return Account(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, {TEST_API_KEY_SID: TEST_API_KEY_SECRET})


def default_subaccount() -> Account:
    """The documented test subaccount of :func:`default_account`."""
    return Account(TEST_SUBACCOUNT_SID, TEST_SUBACCOUNT_AUTH_TOKEN, parent_sid=TEST_ACCOUNT_SID)


@dataclass
class CallbackConfig:
    """How status callbacks are delivered.

    ``mode="manual"`` queues events until ``Sandbox.flush_callbacks()`` (deterministic tests);
    ``mode="auto"`` delivers them from a background thread, ``delay_seconds`` apart (demos).
    ``retries`` is how many times a failed delivery (non-2xx, connection error) is retried, as
    Twilio's ``#rc=`` connection override does (a ``#rc=N`` fragment on the URL wins).
    ``duplicate`` is the probability (0..1) that an event is delivered twice with the same
    idempotency token; ``reorder`` shuffles each batch; ``seed`` makes both repeatable.
    """

    mode: CallbackMode = "manual"
    retries: int = 1
    duplicate: float = 0.0
    reorder: bool = False
    seed: int = 0
    delay_seconds: float = 0.05
    timeout_seconds: float = 5.0

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial change (from the control API); raises ``ValueError`` on bad input."""
        known = {"mode", "retries", "duplicate", "reorder", "seed", "delay_seconds", "timeout_seconds"}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown callback settings: {', '.join(sorted(unknown))}")
        mode = changes.get("mode", self.mode)
        if mode not in ("manual", "auto"):
            raise ValueError("mode must be 'manual' or 'auto'")
        retries = int(_number(changes, "retries", self.retries, integer=True, low=0, high=10))
        duplicate = _number(changes, "duplicate", self.duplicate, low=0.0, high=1.0)
        delay = _number(changes, "delay_seconds", self.delay_seconds, low=0.0, high=60.0)
        timeout = _number(changes, "timeout_seconds", self.timeout_seconds, low=0.1, high=60.0)
        seed = int(_number(changes, "seed", self.seed, integer=True, low=-(2**62), high=2**62))
        reorder = changes.get("reorder", self.reorder)
        if not isinstance(reorder, bool):
            raise ValueError("reorder must be true or false")
        self.mode, self.retries, self.duplicate, self.reorder = mode, retries, duplicate, reorder
        self.seed, self.delay_seconds, self.timeout_seconds = seed, delay, timeout


def _number(
    changes: Mapping[str, Any], key: str, current: float, *, integer: bool = False, low: float, high: float
) -> float:
    value = changes.get(key, current)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number")
    if integer and not isinstance(value, int):
        raise ValueError(f"{key} must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low} and {high}")
    return value


@dataclass
class SandboxConfig:
    """Everything that shapes one sandbox instance.

    ``accounts`` defaults to the documented test account (see ``TEST_ACCOUNT_SID``) and its
    subaccount (``TEST_SUBACCOUNT_SID``);
    ``numbers`` maps E.164 numbers to partial ``NumberProfile`` dicts that override or add
    fixtures; ``verify_code`` is the code every new verification expects unless the request
    carries ``CustomCode`` or a test sets one through the control API.
    """

    accounts: list[Account] = field(default_factory=lambda: [default_account(), default_subaccount()])
    numbers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    callbacks: CallbackConfig = field(default_factory=CallbackConfig)
    verify_code: str = "123456"
