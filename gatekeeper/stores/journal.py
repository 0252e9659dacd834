"""The webhooks' journal: events this host verified but could not store in the shared store, kept on its disk.

Twilio retries a webhook answered 5xx only as its connection overrides say (once, by default, and
only for some failures), so a STOP answered 503 while Redis is down may never come back. With a
journal, such an event is appended here instead: one local SQLite file, fsync'd before the webhook
answers 2xx. The blueprint replays the journal into the shared store, oldest first and one process
at a time (a lease), and deletes each event once it has been applied; the event's own idempotency
key in the shared store makes a replay that is cut short and repeated apply nothing twice. Until an
event about a number has been applied, :meth:`Journal.holds` says so and the gate refuses to send
to that number.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import NamedTuple

from gatekeeper.errors import StoreUnavailable
from gatekeeper.stores.base import Risk
from gatekeeper.stores.sqlite_file import SQLiteFile


class JournalEntry(NamedTuple):
    """One journalled webhook event: which route (``kind``), whose number it is about (``subject``, a key the
    gate screens by), and the verified request as it came (form fields, Twilio's idempotency token, body)."""

    seq: int
    kind: str
    subject: str | None
    params: list[tuple[str, str]]
    token: str | None
    body: bytes
    received_at: float


class Journal(SQLiteFile):
    """Webhook events waiting for the shared store, in one local SQLite file (see the module docstring)."""

    schema = (
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, subject TEXT,"
        " params TEXT NOT NULL, token TEXT, body BLOB NOT NULL, received_at REAL NOT NULL)",
        "CREATE INDEX events_by_subject ON events (subject)",
        "CREATE TABLE replay_lease (id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL,"
        " expires_at REAL NOT NULL)",
    )
    label = "Gatekeeper webhook journal"
    application = "gatekeeper-journal"
    application_id = 0x474B4A4E  # "GKJN"
    setting = "webhooks.journal_path"

    def append(
        self, kind: str, subject: str | None, params: Sequence[tuple[str, str]], token: str | None, body: bytes
    ) -> int:
        """Keep one event, on disk (fsync'd) before this returns; its sequence number."""

        def work(conn: sqlite3.Connection, now: float) -> int:
            cursor = conn.execute(
                "INSERT INTO events (kind, subject, params, token, body, received_at) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, subject, json.dumps(list(params)), token, body, now),
            )
            return int(cursor.lastrowid or 0)

        return self._write(work, suppressing=True)

    def pending(self, limit: int = 100) -> list[JournalEntry]:
        """The oldest ``limit`` events not yet applied, oldest first."""
        rows = self._read(
            "SELECT seq, kind, subject, params, token, body, received_at FROM events ORDER BY seq LIMIT ?", (limit,)
        )
        return [
            JournalEntry(seq, kind, subject, [(k, v) for k, v in json.loads(params)], token, bytes(body), at)
            for seq, kind, subject, params, token, body, at in rows
        ]

    def count(self) -> int:
        """How many events wait."""
        return int(self._read("SELECT count(*) FROM events", ())[0][0])

    def holds(self, subject: str) -> bool:
        """Whether an event about ``subject`` waits (the gate refuses to send to it until it is applied)."""
        return bool(self._read("SELECT 1 FROM events WHERE subject = ? LIMIT 1", (subject,)))

    def applied(self, seq: int) -> None:
        """Forget an event the shared store now holds."""
        self._write(lambda conn, _: conn.execute("DELETE FROM events WHERE seq = ?", (seq,)))

    @contextmanager
    def replaying(self, ttl_seconds: float) -> Iterator[bool]:
        """The replay lease: True for the one process that may replay now (held at most ``ttl_seconds``, so a
        process that dies mid-replay leaves it to expire)."""
        owner = secrets.token_hex(8)

        def take(conn: sqlite3.Connection, now: float) -> bool:
            taken = conn.execute(
                "INSERT INTO replay_lease (id, owner, expires_at) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE"
                " SET owner = excluded.owner, expires_at = excluded.expires_at WHERE replay_lease.expires_at <= ?",
                (owner, now + ttl_seconds, now),
            ).rowcount
            return taken == 1

        mine = self._write(take, durable=False)
        try:
            yield mine
        finally:
            if mine:
                with suppress(StoreUnavailable):
                    self._write(
                        lambda conn, _: conn.execute("DELETE FROM replay_lease WHERE owner = ?", (owner,)),
                        durable=False,
                    )

    def durability(self) -> list[Risk]:
        """None: an event is fsync'd before the webhook answers."""
        return []
