"""The embedded default store: one SQLite file, durable, shared by every thread and process of one host.

An opt-out is a legal record, so the default store keeps it on disk: a restart forgets nothing,
and every worker process opening the same file sees the same opt-outs, failures, idempotency
claims, Lookup cache and fill leases. Only the standard library's ``sqlite3`` is used.

What each setting buys:

* ``journal_mode = WAL``: a commit appends to ``<file>-wal`` instead of rewriting pages; readers
  never wait for the writer nor the writer for readers, across processes. WAL needs shared memory
  (``<file>-shm``), so the file must be on a local filesystem (not NFS), in a directory the process
  can write (SQLite creates both side files there).
* ``synchronous = FULL`` for consent, failures and suppressions, idempotency claims and delivery
  statuses: the WAL is fsync'd before the commit returns, so an acknowledged opt-out survives
  ``kill -9`` and power loss as far as the disk honours fsync. ``NORMAL`` (no fsync at commit)
  survives a crashed or killed process but may lose the last commits on power loss; it is used
  only for what is cheap to lose (the Lookup cache, fill leases, rate limits, the audit ring),
  because an fsync on every decision's audit record would be the gate's slowest step. A FULL commit
  syncs the WAL up to itself, so it makes every NORMAL commit before it durable too.
* ``fullfsync``: on macOS, fsync leaves data in the drive's cache; this asks for F_FULLFSYNC (no
  effect elsewhere).
* ``busy_timeout``: how long a write waits for another connection's write lock; past it the verb
  raises :class:`~gatekeeper.errors.StoreUnavailable` (the gate fails safe, webhooks answer 503).
* ``BEGIN IMMEDIATE``: every read-modify-write takes the write lock before it reads, so two
  processes cannot both read "unclaimed" and both win, and a transaction never fails half-way
  upgrading a read lock.

Threads share one connection per store and process, behind a lock: ``PRAGMA data_version`` (the
suppression version, below) is per connection, so versions read on different connections cannot
be compared, and the gate compares marks taken on any of its threads; SQLite admits one writer at
a time anyway, and reads take microseconds. The cost: a read may wait behind this process's own
commit (an fsync for consent). A process forked with the store open (gunicorn ``--preload``)
opens its own connection on first use; the inherited one is neither used nor closed, as SQLite
requires.

Rows with a TTL carry ``expires_at`` on the store's ``clock``; a suppression's end and the failure window
are judged on the caller's times, as the memory store does, and ``expires_at`` only says when the row
may go. Reads ignore expired rows; each write purges at most ``_PURGE_BATCH`` expired rows of the
table it writes, through an index: bounded work per call. The audit is a ring of ``max_audit`` records,
and with ``audit_max_age_seconds`` records older than that (on the store's clock) are not read and go a
few per ``record``, through an index on their time.

Opt-outs, consent history, failures and suppressions are keyed by a subject, a keyed hash of the number
(``stores.base.subject_key``) under the file's ``consent`` secret, so those tables do not name it; only
the Lookup cache, which sending needs, holds numbers. Secrets (:meth:`SQLiteStore.secret`) are made on
first use and kept in the ``meta`` table, so every process opening the file shares them.
:meth:`SQLiteStore.erase` forgets a number in one transaction and leaves a do-not-contact tombstone.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, ClassVar, Literal, cast

from pydantic import TypeAdapter

from gatekeeper.errors import InvalidArgument, StoreUnavailable
from gatekeeper.models import AuditEntry, StatusRecord
from gatekeeper.stores.base import (
    ACCOUNT_SCOPE,
    ERASED,
    CachedLookup,
    Claim,
    ConsentChange,
    Risk,
    gcra,
    lookup_prefix,
    subject_key,
)
from gatekeeper.stores.sqlite_guard import _LEDGER, _WINDOWS, GuardTables

#: Bumped with every change to the tables below; a file written by a newer version is refused.
SCHEMA_VERSION = 4
APPLICATION = "gatekeeper"
_APPLICATION_ID = 0x474B5052  # "GKPR" in the file header, so `file` and tools can tell what it is
_CACHED = TypeAdapter(CachedLookup)
_CONSENT_HISTORY = 50
_PURGE_BATCH = 8
_TTL_TABLES = ("lookups", "fill_leases", "failures", "suppressions", "claims", "statuses", "rates")
_PURGED = (*_TTL_TABLES, "windows", "ledger")  # windows has its expiry index in _WINDOWS

_PAUSES = "CREATE TABLE pauses (bucket TEXT PRIMARY KEY, until REAL NOT NULL)"  # schema 2
_SCHEMA = (
    "CREATE TABLE lookups (key TEXT PRIMARY KEY, entry BLOB NOT NULL, expires_at REAL NOT NULL)",
    "CREATE TABLE fill_leases (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL)",
    # Consent, failures and suppressions are keyed by ``subject``, a keyed hash of the number (never the number).
    "CREATE TABLE opt_outs (subject TEXT NOT NULL, scope TEXT NOT NULL, source TEXT NOT NULL, at REAL NOT NULL,"
    " PRIMARY KEY (subject, scope))",
    "CREATE TABLE consent (id INTEGER PRIMARY KEY, subject TEXT NOT NULL, scope TEXT NOT NULL,"
    " opted_out INTEGER NOT NULL, source TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX consent_by_subject ON consent (subject, id)",
    "CREATE TABLE failures (subject TEXT NOT NULL, event_id TEXT NOT NULL, at REAL NOT NULL,"
    " expires_at REAL NOT NULL, UNIQUE (subject, event_id))",
    "CREATE TABLE suppressions (subject TEXT PRIMARY KEY, reason TEXT NOT NULL, until REAL NOT NULL,"
    " expires_at REAL NOT NULL)",
    "CREATE TABLE claims (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, state TEXT NOT NULL, token TEXT NOT NULL,"
    " result BLOB, expires_at REAL NOT NULL)",
    "CREATE TABLE statuses (sid TEXT PRIMARY KEY, status TEXT NOT NULL, rank INTEGER NOT NULL, error_code INTEGER,"
    " at REAL NOT NULL, to_hash TEXT, expires_at REAL NOT NULL)",
    "CREATE TABLE rates (bucket TEXT PRIMARY KEY, tat REAL NOT NULL, expires_at REAL NOT NULL)",
    _PAUSES,
    *_WINDOWS,
    *_LEDGER,
    "CREATE INDEX statuses_by_hash ON statuses (to_hash)",  # an erasure finds a number's statuses by it
    "CREATE TABLE audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, to_hash TEXT, entry TEXT NOT NULL)",
    "CREATE INDEX audit_by_time ON audit (at)",  # retention
    "CREATE INDEX audit_by_hash ON audit (to_hash)",  # erasure
    *(f"CREATE INDEX {t}_expiry ON {t} (expires_at)" for t in _TTL_TABLES),
)
#: Per table with a TTL: delete a few expired rows (the expiry index finds them without a scan). The names
#: are this module's constants, never input.
_PURGE = {
    t: f"DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE expires_at <= ? LIMIT ?)"  # noqa: S608
    for t in _PURGED
}


class SQLiteStore(GuardTables):
    """Every store protocol in one SQLite file (see the module docstring), for every thread and process on a host.

    ``path`` is the database file; its directory must exist and be writable. Raises
    :class:`~gatekeeper.errors.ConfigError` when it cannot be used (no such directory, not writable,
    not a Gatekeeper database, written by a newer Gatekeeper); a verb that fails later raises
    :class:`~gatekeeper.errors.StoreUnavailable`, never a ``sqlite3`` error.
    """

    schema = _SCHEMA
    label = "Gatekeeper database"
    application = APPLICATION
    application_id = _APPLICATION_ID
    schema_version = SCHEMA_VERSION
    # 1 -> 2: the budgets' shared pauses; 2 -> 3: the guard's windows
    migrations: ClassVar[dict[int, tuple[str, ...]]] = {1: (_PAUSES,), 2: _WINDOWS, 3: _LEDGER}

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_ms: int = 5_000,
        max_audit: int = 100_000,
        audit_max_age_seconds: float | None = None,
        lock_poll_seconds: float = 0.005,
    ) -> None:
        if max_audit < 1:
            raise InvalidArgument("SQLiteStore needs max_audit >= 1")
        if audit_max_age_seconds is not None and audit_max_age_seconds <= 0:
            raise InvalidArgument("SQLiteStore needs audit_max_age_seconds > 0 (or None: kept as long as the ring)")
        self._max_audit = max_audit
        self._audit_max_age = audit_max_age_seconds
        self._secrets: dict[str, bytes] = {}  # read once: a secret never changes
        super().__init__(path, clock=clock, busy_timeout_ms=busy_timeout_ms, lock_poll_seconds=lock_poll_seconds)

    @staticmethod
    def _purge(conn: sqlite3.Connection, table: str, now: float) -> None:
        conn.execute(_PURGE[table], (now, _PURGE_BATCH))

    def durability(self) -> list[Risk]:
        """None: consent, failures and claims are fsync'd before their verb returns (see the module docstring)."""
        return []

    # -- suppression version ----------------------------------------------------------------
    def suppression_version(self) -> Hashable:
        """Changes with every suppressing write to the file, by this process or any other; no table is read.

        ``PRAGMA data_version`` changes when *another* connection commits (another process, or another
        store on the file), read from the WAL index in shared memory; it does not change for this
        connection's own commits, so this process counts its own suppressing commits too. Both are
        needed: without the count a STOP recorded by this process would not move the version; without
        data_version one recorded by another process would not. It is coarse across processes: any commit
        by another process (an audit record, a cache fill) moves it, so with several busy processes the
        gate re-reads consent more often, never less. When it cannot be read, it equals nothing, so the
        gate reads the store (and fails safe if that fails too).
        """
        with self._lock:
            try:
                return (*self._data_version(), self._writes)
            except (sqlite3.Error, StoreUnavailable):
                return object()

    # -- lookup cache -----------------------------------------------------------------------
    def get_lookup(self, key: str) -> CachedLookup | None:
        rows = self._read("SELECT entry FROM lookups WHERE key = ? AND expires_at > ?", (key, self._clock()))
        return _CACHED.validate_json(rows[0][0]) if rows else None

    def put_lookup(self, key: str, entry: CachedLookup, *, ttl_seconds: float) -> None:
        def work(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                "INSERT INTO lookups (key, entry, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET entry = excluded.entry, expires_at = excluded.expires_at",
                (key, _CACHED.dump_json(entry), now + ttl_seconds),
            )
            self._purge(conn, "lookups", now)

        self._write(work, durable=False)

    @contextmanager
    def fill_lock(self, key: str, *, ttl_seconds: float, wait_seconds: float) -> Iterator[bool]:
        """A lease row (owner token, expiry) polled until ``wait_seconds`` pass: one holder across processes.
        A holder that dies leaves the lease to expire after ``ttl_seconds``."""
        owner = secrets.token_hex(8)
        deadline = time.monotonic() + max(wait_seconds, 0.0)
        acquired = self._take_lease(key, owner, ttl_seconds)
        while not acquired and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(self._lock_poll, left))
            acquired = self._take_lease(key, owner, ttl_seconds)
        try:
            yield acquired
        finally:
            if acquired:  # the lease's expiry frees it if this fails
                with suppress(StoreUnavailable):
                    self._write(
                        lambda conn, _: conn.execute(
                            "DELETE FROM fill_leases WHERE key = ? AND owner = ?", (key, owner)
                        ),
                        durable=False,
                    )

    def _take_lease(self, key: str, owner: str, ttl_seconds: float) -> bool:
        held = self._read("SELECT 1 FROM fill_leases WHERE key = ? AND expires_at > ?", (key, self._clock()))
        if held:  # polled without taking the write lock while someone holds the lease
            return False

        def work(conn: sqlite3.Connection, now: float) -> bool:
            taken = conn.execute(
                "INSERT INTO fill_leases (key, owner, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET owner = excluded.owner, expires_at = excluded.expires_at WHERE fill_leases.expires_at <= ?",
                (key, owner, now + ttl_seconds, now),
            ).rowcount
            self._purge(conn, "fill_leases", now)
            return taken == 1

        return self._write(work, durable=False)

    # -- secrets and subjects ------------------------------------------------------------------
    def secret(self, name: str) -> bytes:
        """32 random bytes kept in the file's ``meta`` table under ``secret:<name>``, made by the first process to
        ask (the write lock makes one of several at once the maker; the others read its bytes), durable before
        it is used; read once per store object, as it never changes."""
        kept = self._secrets.get(name)
        if kept is not None:
            return kept
        key = f"secret:{name}"
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        if not rows:  # nobody made it yet: make it, unless another process gets there first
            made = secrets.token_hex(32)

            def work(conn: sqlite3.Connection, _: float) -> list[Any]:
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, made))
                return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchall()

            rows = self._write(work)
        return self._secrets.setdefault(name, bytes.fromhex(rows[0][0]))

    def _subject(self, e164: str) -> str:
        """The key of a number's consent, failures and suppression (see ``stores.base.subject_key``); call it before
        taking the lock (it may read or write the secret)."""
        return subject_key(self.secret("consent"), e164)

    # -- opt-outs ---------------------------------------------------------------------------
    @staticmethod
    def _note_consent(conn: sqlite3.Connection, subject: str, change: ConsentChange) -> None:
        conn.execute(
            "INSERT INTO consent (subject, scope, opted_out, source, at) VALUES (?, ?, ?, ?, ?)",
            (subject, change.scope, int(change.opted_out), change.source, change.at),
        )
        conn.execute(  # the newest _CONSENT_HISTORY changes per number, as the other stores keep
            "DELETE FROM consent WHERE subject = ? AND id <= "
            "(SELECT id FROM consent WHERE subject = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (subject, subject, _CONSENT_HISTORY),
        )

    def opt_out(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        subject = self._subject(e164)

        def work(conn: sqlite3.Connection, _: float) -> bool:
            had = conn.execute("SELECT 1 FROM opt_outs WHERE subject = ? AND scope = ?", (subject, scope)).fetchone()
            conn.execute(
                "INSERT INTO opt_outs (subject, scope, source, at) VALUES (?, ?, ?, ?) ON CONFLICT (subject, scope)"
                " DO UPDATE SET source = excluded.source, at = excluded.at",
                (subject, scope, source, at),
            )
            change = ConsentChange(e164=e164, scope=scope, opted_out=True, source=source, at=at)
            self._note_consent(conn, subject, change)
            return had is None

        return self._write(work, suppressing=True)

    def opt_in(self, e164: str, scope: str = ACCOUNT_SCOPE, *, source: str, at: float) -> bool:
        subject = self._subject(e164)

        def work(conn: sqlite3.Connection, _: float) -> bool:
            if scope == ACCOUNT_SCOPE:  # the account scope lifts every scope; a sender's only itself
                lifted = conn.execute("DELETE FROM opt_outs WHERE subject = ?", (subject,)).rowcount
            else:
                lifted = conn.execute("DELETE FROM opt_outs WHERE subject = ? AND scope = ?", (subject, scope)).rowcount
            change = ConsentChange(e164=e164, scope=scope, opted_out=False, source=source, at=at)
            self._note_consent(conn, subject, change)
            return lifted > 0

        return self._write(work)

    def opted_out_scope(self, e164: str, scopes: Sequence[str]) -> str | None:
        if not scopes:
            return None
        subject = self._subject(e164)
        marks = ", ".join("?" * len(scopes))
        rows = self._read(
            f"SELECT scope FROM opt_outs WHERE subject = ? AND scope IN ({marks})",  # noqa: S608 - only "?"s
            (subject, *scopes),
        )
        have = {row[0] for row in rows}
        return next((s for s in scopes if s in have), None)

    def consent_history(self, e164: str, *, limit: int = 50) -> list[ConsentChange]:
        """The number's changes, newest first, naming ``e164`` (the table holds only its subject)."""
        if limit <= 0:
            return []
        rows = self._read(
            "SELECT scope, opted_out, source, at FROM consent WHERE subject = ? ORDER BY id DESC LIMIT ?",
            (self._subject(e164), limit),
        )
        return [ConsentChange(e164, scope, bool(out), source, at) for scope, out, source, at in rows]

    # -- delivery failures and suppression --------------------------------------------------
    def record_failure(self, e164: str, event_id: str, *, at: float, window_seconds: float) -> int:
        subject = self._subject(e164)

        def work(conn: sqlite3.Connection, now: float) -> int:
            conn.execute(  # one event counts once, at its first time
                "INSERT INTO failures (subject, event_id, at, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (subject, event_id) DO NOTHING",
                (subject, event_id, at, now + window_seconds),
            )
            conn.execute("DELETE FROM failures WHERE subject = ? AND at <= ?", (subject, at - window_seconds))
            self._purge(conn, "failures", now)
            return int(conn.execute("SELECT count(*) FROM failures WHERE subject = ?", (subject,)).fetchone()[0])

        return self._write(work, suppressing=True)

    def suppress(self, e164: str, *, ttl_seconds: float, reason: str, at: float) -> None:
        subject = self._subject(e164)

        def work(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(  # lasts until at + ttl on the caller's clock, as the failure window does
                "INSERT INTO suppressions (subject, reason, until, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (subject) DO UPDATE SET reason = excluded.reason, until = excluded.until,"
                " expires_at = excluded.expires_at",
                (subject, reason, at + ttl_seconds, now + ttl_seconds),
            )
            self._purge(conn, "suppressions", now)

        self._write(work, suppressing=True)

    def suppression(self, e164: str, *, now: float, window_seconds: float, threshold: int) -> str | None:
        subject = self._subject(e164)
        reason, count = self._read(  # one statement: one snapshot of both
            "SELECT (SELECT reason FROM suppressions WHERE subject = ? AND until > ?),"
            " (SELECT count(*) FROM failures WHERE subject = ? AND at > ?)",
            (subject, now, subject, now - window_seconds),
        )[0]
        if reason is not None:
            return f"suppressed:{reason}"
        return f"failures:{count}" if count >= threshold else None

    def lift_suppression(self, e164: str) -> bool:
        subject = self._subject(e164)

        def work(conn: sqlite3.Connection, _: float) -> bool:
            marker = conn.execute("DELETE FROM suppressions WHERE subject = ?", (subject,)).rowcount
            failures = conn.execute("DELETE FROM failures WHERE subject = ?", (subject,)).rowcount
            return marker + failures > 0

        return self._write(work)

    # -- erasure ----------------------------------------------------------------------------
    def erase(self, e164: str, *, to_hash: str, at: float) -> None:
        """Forget the number (see ``stores.base.Erasure``) in one durable transaction: its Lookup answers (a range of
        keys, so no ``LIKE`` wildcard in a key can match another number's), consent history, failures, suppression,
        and the statuses and audit records under ``to_hash`` (through their indexes); what stays is the tombstone, an
        account-wide opt-out from ``erased`` and a history of just that change. A suppressing write."""
        subject = self._subject(e164)
        prefix = lookup_prefix(e164)
        after = prefix[:-1] + chr(ord(prefix[-1]) + 1)  # the first key past every key starting with the prefix

        def work(conn: sqlite3.Connection, _: float) -> None:
            conn.execute("DELETE FROM lookups WHERE key >= ? AND key < ?", (prefix, after))
            for table in ("consent", "failures", "suppressions", "opt_outs"):
                conn.execute(f"DELETE FROM {table} WHERE subject = ?", (subject,))  # noqa: S608 - names are ours
            conn.execute("DELETE FROM statuses WHERE to_hash = ?", (to_hash,))
            conn.execute("DELETE FROM audit WHERE to_hash = ?", (to_hash,))
            conn.execute(
                "INSERT INTO opt_outs (subject, scope, source, at) VALUES (?, ?, ?, ?)",
                (subject, ACCOUNT_SCOPE, ERASED, at),
            )
            tombstone = ConsentChange(e164=e164, scope=ACCOUNT_SCOPE, opted_out=True, source=ERASED, at=at)
            self._note_consent(conn, subject, tombstone)

        self._write(work, suppressing=True)

    # -- idempotency ------------------------------------------------------------------------
    def claim(self, key: str, fingerprint: str, *, ttl_seconds: float) -> Claim:
        def work(conn: sqlite3.Connection, now: float) -> Claim:
            row = conn.execute(
                "SELECT fingerprint, state, result FROM claims WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            if row is not None:
                state = cast("Literal['pending', 'done', 'unknown']", row[1])
                return Claim(won=False, state=state, fingerprint=row[0], result=row[2])
            token = secrets.token_hex(8)
            conn.execute(  # replaces an expired claim: a lapsed lease may be won again
                "INSERT INTO claims (key, fingerprint, state, token, result, expires_at) VALUES (?, ?, 'pending', ?,"
                " NULL, ?) ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, state = 'pending',"
                " token = excluded.token, result = NULL, expires_at = excluded.expires_at",
                (key, fingerprint, token, now + ttl_seconds),
            )
            self._purge(conn, "claims", now)
            return Claim(won=True, state="pending", fingerprint=fingerprint, token=token)

        return self._write(work)

    def _settle(self, key: str, token: str, state: str | None, result: bytes | None, ttl_seconds: float) -> None:
        """Only the owner (the token) of a live claim settles it: ``state`` None deletes it."""

        def work(conn: sqlite3.Connection, now: float) -> None:
            if state is None:
                conn.execute("DELETE FROM claims WHERE key = ? AND token = ?", (key, token))
            else:
                conn.execute(
                    "UPDATE claims SET state = ?, result = coalesce(?, result), expires_at = ?"
                    " WHERE key = ? AND token = ? AND expires_at > ?",
                    (state, result, now + ttl_seconds, key, token, now),
                )

        self._write(work)

    def complete(self, key: str, token: str, result: bytes, *, ttl_seconds: float) -> None:
        self._settle(key, token, "done", result, ttl_seconds)

    def abandon(self, key: str, token: str) -> None:
        self._settle(key, token, None, None, 0)

    def mark_unknown(self, key: str, token: str, *, ttl_seconds: float) -> None:
        self._settle(key, token, "unknown", None, ttl_seconds)

    # -- delivery statuses ------------------------------------------------------------------
    def apply_status(
        self,
        sid: str,
        status: str,
        rank: int,
        *,
        error_code: int | None,
        at: float,
        to_hash: str | None = None,
        ttl_seconds: float,
    ) -> bool:
        def work(conn: sqlite3.Connection, now: float) -> bool:
            applied = conn.execute(  # never moves back: a stored rank at or above this one (and alive) wins
                "INSERT INTO statuses (sid, status, rank, error_code, at, to_hash, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sid) DO UPDATE SET status = excluded.status,"
                " rank = excluded.rank, error_code = excluded.error_code, at = excluded.at,"
                " to_hash = excluded.to_hash, expires_at = excluded.expires_at"
                " WHERE statuses.rank < excluded.rank OR statuses.expires_at <= ?",
                (sid, status, rank, error_code, at, to_hash, now + ttl_seconds, now),
            ).rowcount
            self._purge(conn, "statuses", now)
            return applied == 1

        return self._write(work)

    def status_of(self, sid: str) -> StatusRecord | None:
        rows = self._read(
            "SELECT status, error_code, at, to_hash FROM statuses WHERE sid = ? AND expires_at > ?",
            (sid, self._clock()),
        )
        if not rows:
            return None
        status, code, at, to_hash = rows[0]
        return StatusRecord(sid=sid, status=status, error_code=code, updated_at=at, to_hash=to_hash)

    # -- rate limits (GCRA) -----------------------------------------------------------------
    def reserve(self, bucket: str, *, rate_per_second: float, burst: int, now: float) -> float:
        """Reserve a permit on the caller's ``now`` (every process on one host shares its clock)."""
        return self.take(bucket, rate_per_second=rate_per_second, burst=burst, now=now, max_wait=float("inf"))[1]

    def take(
        self, bucket: str, *, rate_per_second: float, burst: int, now: float, max_wait: float
    ) -> tuple[bool, float]:
        """A permit if due within ``max_wait`` (a pause honoured), in one transaction: see ``stores.base.Budget``."""

        def work(conn: sqlite3.Connection, clock_now: float) -> tuple[bool, float]:
            row = conn.execute("SELECT tat FROM rates WHERE bucket = ?", (bucket,)).fetchone()
            paused = conn.execute("SELECT until FROM pauses WHERE bucket = ?", (bucket,)).fetchone()
            wait, tat = gcra(row[0] if row else None, paused[0] if paused else 0.0, now, rate_per_second, burst)
            if wait > max_wait:
                return False, wait
            conn.execute(
                "INSERT INTO rates (bucket, tat, expires_at) VALUES (?, ?, ?) ON CONFLICT (bucket) DO UPDATE"
                " SET tat = excluded.tat, expires_at = excluded.expires_at",
                (bucket, tat, clock_now + (tat - now) + burst / rate_per_second + 1),
            )
            self._purge(conn, "rates", clock_now)
            return True, wait

        return self._write(work, durable=False)

    def pause(self, bucket: str, *, until: float) -> None:
        def work(conn: sqlite3.Connection, _: float) -> None:
            if until > 0:
                conn.execute(
                    "INSERT INTO pauses (bucket, until) VALUES (?, ?) ON CONFLICT (bucket) DO UPDATE"
                    " SET until = excluded.until",
                    (bucket, until),
                )
            else:
                conn.execute("DELETE FROM pauses WHERE bucket = ?", (bucket,))

        self._write(work, durable=False)

    def paused_until(self, bucket: str) -> float:
        rows = self._read("SELECT until FROM pauses WHERE bucket = ?", (bucket,))
        return float(rows[0][0]) if rows else 0.0

    # -- audit ------------------------------------------------------------------------------
    def record(self, entry: AuditEntry) -> None:
        """Append one record: one statement, its own transaction (it runs on every decision). Every
        ``_PURGE_BATCH``-th record also trims the ring to ``max_audit`` and, with a retention, deletes at most
        ``2 * _PURGE_BATCH`` records past it (twice the pace they arrive at, so a backlog drains)."""
        record = json.dumps(entry.as_dict(), default=str)

        def work(conn: sqlite3.Connection, now: float) -> None:
            newest = (
                conn.execute(
                    "INSERT INTO audit (at, to_hash, entry) VALUES (?, ?, ?)", (entry.at, entry.to_hash, record)
                ).lastrowid
                or 0
            )
            if newest % _PURGE_BATCH == 0:  # a ring of max_audit records (and fewer than _PURGE_BATCH more)
                conn.execute("DELETE FROM audit WHERE id <= ?", (newest - self._max_audit,))
                if self._audit_max_age is not None:
                    conn.execute(
                        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ? LIMIT ?)",
                        (now - self._audit_max_age, 2 * _PURGE_BATCH),
                    )

        self._write(work, durable=False, single=True)

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest records, newest first; none older than the retention, deleted yet or not."""
        if limit <= 0:
            return []
        if self._audit_max_age is None:
            rows = self._read("SELECT entry FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        else:  # "+at": walk the ids down from the newest, not the time index (nearly every record is inside)
            rows = self._read(
                "SELECT entry FROM audit WHERE +at >= ? ORDER BY id DESC LIMIT ?",
                (self._clock() - self._audit_max_age, limit),
            )
        return [json.loads(row[0]) for row in rows]
