"""The SQLite store's tables for the guard: sliding windows (velocity rules) and the spend ledger, as a part of
:class:`~gatekeeper.stores.sqlite.SQLiteStore` (apart only to keep modules small)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from gatekeeper.stores.guard_verbs import check_window
from gatekeeper.stores.sqlite_file import SQLiteFile

_WINDOWS = (  # schema 3: the guard's sliding windows
    "CREATE TABLE windows (key TEXT NOT NULL, event TEXT NOT NULL, at REAL NOT NULL, expires_at REAL NOT NULL,"
    " PRIMARY KEY (key, event))",
    "CREATE INDEX windows_by_time ON windows (key, at)",
    "CREATE INDEX windows_expiry ON windows (expires_at)",
)
_LEDGER = (  # schema 4: spend totals
    "CREATE TABLE ledger (key TEXT PRIMARY KEY, total REAL NOT NULL, expires_at REAL NOT NULL)",
    "CREATE INDEX ledger_expiry ON ledger (expires_at)",
)


class GuardTables(SQLiteFile):
    """``Windows`` and ``Ledger`` on the store's file; the store gives ``_purge`` (its tables' expiry)."""

    _purge: Callable[[sqlite3.Connection, str, float], None]

    # -- ledger -----------------------------------------------------------------------------
    def spend(self, caps: Sequence[tuple[str, float]], amount: float, *, ttl_seconds: float) -> str | None:
        """Every cap's total, all or none, in one transaction (see ``stores.base.Ledger``)."""

        def work(conn: sqlite3.Connection, now: float) -> str | None:
            self._purge(conn, "ledger", now)
            for key, cap in caps:
                row = conn.execute("SELECT total FROM ledger WHERE key = ?", (key,)).fetchone()
                if (row[0] if row else 0.0) + amount > cap:
                    return key
            conn.executemany(
                "INSERT INTO ledger (key, total, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET total = total + excluded.total, expires_at = excluded.expires_at",
                [(key, amount, now + ttl_seconds) for key, _ in caps],
            )
            return None

        return self._write(work, durable=True)

    # -- windows ----------------------------------------------------------------------------
    def hit(self, key: str, event: str, *, at: float, window_seconds: float, limit: int) -> tuple[int, float | None]:
        """One event of a sliding window (see ``stores.base.Windows``), in one transaction."""
        check_window(window_seconds, limit)

        def work(conn: sqlite3.Connection, now: float) -> tuple[int, float | None]:
            conn.execute(
                "INSERT INTO windows (key, event, at, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (key, event, at, now + window_seconds),
            )
            conn.execute("DELETE FROM windows WHERE key = ? AND at <= ?", (key, at - window_seconds))
            self._purge(conn, "windows", now)
            count = int(conn.execute("SELECT count(*) FROM windows WHERE key = ?", (key,)).fetchone()[0])
            if count <= limit:
                return count, None
            row = conn.execute(
                "SELECT at FROM windows WHERE key = ? ORDER BY at LIMIT 1 OFFSET ?", (key, count - limit)
            ).fetchone()
            return count, float(row[0]) + window_seconds

        return self._write(work, durable=False)

    def tally(self, ranges: Sequence[tuple[str, float, float]]) -> list[int]:
        """Events per ``(key, since, until)`` (see ``stores.base.WindowTally``), in one read."""
        if not ranges:
            return []
        sql = " UNION ALL ".join(["SELECT count(*) FROM windows WHERE key = ? AND at > ? AND at <= ?"] * len(ranges))
        return [int(row[0]) for row in self._read(sql, [value for r in ranges for value in r])]
