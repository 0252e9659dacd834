"""Status callbacks: ranks that keep a stored status from moving backwards, and event keys. Pure.

Callbacks arrive out of order and more than once. Each status has a rank and
the store keeps the highest (``apply_status`` refuses an equal or lower rank),
so a late ``sent`` never overwrites ``delivered``. Terminal states share the top
band: the first terminal state stored wins, except that ``read`` (a receipt that
comes after delivery) still lifts ``delivered``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gatekeeper.errors import MalformedEvent

Kind = Literal["message", "call", "verify"]

TERMINAL_RANK = 100

MESSAGE_RANKS: Mapping[str, int] = {
    "scheduled": 10,
    "accepted": 10,
    "queued": 20,
    "sending": 30,
    "receiving": 30,
    "sent": 40,
    "received": 50,
    "delivered": TERMINAL_RANK,
    "undelivered": TERMINAL_RANK,
    "failed": TERMINAL_RANK,
    "partially_delivered": TERMINAL_RANK,
    "canceled": TERMINAL_RANK,
    "read": TERMINAL_RANK + 10,
}

CALL_RANKS: Mapping[str, int] = {
    "queued": 10,
    "initiated": 20,
    "ringing": 30,
    "in-progress": 40,
    "answered": 40,
    "completed": TERMINAL_RANK,
    "busy": TERMINAL_RANK,
    "no-answer": TERMINAL_RANK,
    "failed": TERMINAL_RANK,
    "canceled": TERMINAL_RANK,
}

#: A status Twilio added after this table was written: stored if nothing is, never over a known one.
UNKNOWN_RANK = 1

_STATUS_SHAPE = re.compile(r"[a-z][a-z0-9_-]{0,39}")
# Twilio's SIDs are two letters and 32 hex digits; accept any short token so emulators' SIDs work too.
_SID_SHAPE = re.compile(r"[A-Za-z]{2}[A-Za-z0-9_-]{1,62}")


def rank(kind: Kind, status: str) -> int:
    """The rank of ``status`` for a message or call."""
    table = CALL_RANKS if kind == "call" else MESSAGE_RANKS
    return table.get(status, UNKNOWN_RANK)


def is_terminal(kind: Kind, status: str) -> bool:
    return rank(kind, status) >= TERMINAL_RANK


def valid_status(status: str) -> bool:
    """A status shaped like Twilio's (``delivered``, ``no-answer``, ``partially_delivered``)."""
    return _STATUS_SHAPE.fullmatch(status) is not None


def valid_sid(sid: str) -> bool:
    """Shaped like a SID (``SM…``, ``MM…``, ``CA…``): two letters, then letters, digits, ``_`` or ``-``."""
    return _SID_SHAPE.fullmatch(sid) is not None


def parse_error_code(raw: str | None) -> int | None:
    """``ErrorCode`` as an int; None when absent or empty. Raises MalformedEvent when not a number."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise MalformedEvent("ErrorCode must be a number")
    return int(text)


@dataclass(frozen=True, slots=True)
class EventKey:
    """How one callback is recognised when it comes again.

    ``claim`` is the idempotency key (Twilio's ``I-Twilio-Idempotency-Token`` when
    sent, else the callback's own identity); ``failure_id`` identifies the (SID,
    status) pair so a hard failure counts once however many times it is delivered.
    """

    claim: str
    failure_id: str


def _digest(*parts: str) -> str:
    # Hashed so any header value makes a short, safe store key.
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:40]


def event_key(
    kind: Kind,
    sid: str,
    status: str,
    *,
    idempotency_token: str | None,
    error_code: int | None = None,
    sequence_number: str | None = None,
) -> EventKey:
    """The keys of one message or call status callback."""
    if idempotency_token:
        claim = f"webhook:{kind}:tok:{_digest(idempotency_token)}"
    else:
        parts = [sid, status, "" if error_code is None else str(error_code)]
        if kind == "call":
            parts.append(sequence_number or "")
        claim = f"webhook:{kind}:{_digest(*parts)}"
    return EventKey(claim=claim, failure_id=f"{sid}:{status}")


def opaque_key(kind: str, *parts: str) -> str:
    """An idempotency key for events identified by an arbitrary string (inbound SIDs, Verify event ids)."""
    return f"webhook:{kind}:{_digest(*parts)}"
