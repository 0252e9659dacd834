"""One SQLite file as Gatekeeper opens it: checked, WAL, one connection per process, fork-safe.

The mechanics shared by the store (:mod:`gatekeeper.stores.sqlite`, whose docstring says what each
setting buys) and the webhooks' journal (:mod:`gatekeeper.stores.journal`): a subclass names its
tables (``schema``), its ``application`` and ``schema_version``, and the setting that names its path.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from gatekeeper.errors import ConfigError, InvalidArgument, StoreUnavailable

T = TypeVar("T")

_OPEN: weakref.WeakSet[SQLiteFile] = weakref.WeakSet()
#: Connections a forked child inherited: kept referenced so they are never closed (closing one would
#: touch the parent's locks and WAL), and never used.
_INHERITED: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    for file in list(_OPEN):
        file._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class SQLiteFile:
    """A Gatekeeper SQLite file for every thread and process on a host (see the module docstring).

    Raises :class:`~gatekeeper.errors.ConfigError` (naming ``setting``) when the path cannot be used
    (no such directory, not writable, not this application's file, written by a newer version); a
    statement that fails later raises :class:`~gatekeeper.errors.StoreUnavailable`, never a ``sqlite3``
    error.
    """

    schema: ClassVar[tuple[str, ...]]
    application: ClassVar[str]
    application_id: ClassVar[int]
    label: ClassVar[str]  # what the file is, in an error: "Gatekeeper database"
    schema_version: ClassVar[int] = 1
    #: The statements that take a file of version ``v`` to ``v + 1``, for every ``v`` below ``schema_version``:
    #: run once, by the first process to open the older file, in the transaction that creates or checks it.
    migrations: ClassVar[dict[int, tuple[str, ...]]] = {}
    setting: ClassVar[str] = "store.path"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_ms: int = 5_000,
        lock_poll_seconds: float = 0.005,
    ) -> None:
        self.path = Path(path).expanduser()
        if str(path) == ":memory:" or busy_timeout_ms < 0:
            raise InvalidArgument(f"{type(self).__name__} needs a file path and busy_timeout_ms >= 0")
        self._clock = clock
        self._busy_timeout = busy_timeout_ms / 1000
        self._lock_poll = lock_poll_seconds
        self._lock = threading.Lock()
        self._durable: bool | None = None  # the connection's synchronous setting: FULL (True) or NORMAL
        self._generation = 0  # a new connection starts a new data_version sequence
        self._writes = 0  # this process's commits of writes marked ``suppressing`` (a subclass's version)
        self._closed = False
        self._conn: sqlite3.Connection | None = self._open()
        _OPEN.add(self)

    # -- the connection -----------------------------------------------------------------
    def _unusable(self, why: str) -> ConfigError:
        return ConfigError(f"{self.setting}: {self.path} {why}", key=self.setting)

    def _open(self) -> sqlite3.Connection:
        """A connection to a checked, WAL-mode Gatekeeper database; ConfigError when the file cannot be one."""
        if not self.path.parent.is_dir():
            raise self._unusable("is in a directory that does not exist (create it, or set [store] path)")
        if not os.access(self.path.parent, os.W_OK | os.X_OK):
            raise self._unusable("is in a directory this process cannot write (SQLite keeps -wal and -shm files there)")
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            raise self._unusable("is not readable and writable by this process")
        with suppress(FileExistsError):  # opt-outs hold phone numbers: the file (and its -wal, -shm) is ours only
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        conn = None
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
            self._check_schema(conn)  # first, read only: another program's file is refused as it was
            mode = self._wal(conn)
            if mode.lower() != "wal":
                raise self._unusable(f"cannot use SQLite's WAL mode (it stays {mode}): put it on a local filesystem")
            conn.execute("PRAGMA fullfsync = ON")
            conn.execute("PRAGMA checkpoint_fullfsync = ON")
            conn.execute("BEGIN IMMEDIATE")  # several processes opening a new file at once: one creates the tables
            try:
                self._prepare(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise StoreUnavailable(f"SQLite file {self.path} is locked by another process: {exc}") from exc
            if isinstance(exc, sqlite3.Error):
                raise self._unusable(f"cannot be opened as a {self.label} ({exc})") from exc
            raise
        self._durable = None
        return conn

    def _wal(self, conn: sqlite3.Connection) -> str:
        """Switch to WAL. Processes opening a new file at once contend for it, and SQLite answers "locked" at once,
        without waiting (the busy timeout does not apply): retry within the busy timeout."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(self._lock_poll)

    def _check_schema(self, conn: sqlite3.Connection) -> int:
        """The schema version of the file's tables (0: none yet); refuses a file that is not ours or is newer."""
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
        if tables and meta.get("application") != self.application:
            raise self._unusable(f"is not a {self.label}")
        version = int(meta.get("schema_version", self.schema_version))
        if version > self.schema_version:
            raise self._unusable(f"has schema {meta['schema_version']}, newer than this Gatekeeper's: upgrade it")
        return version if tables else 0

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Make the tables of a new file, or bring an older file's up to date (within the caller's transaction)."""
        version = self._check_schema(conn)
        if not version:
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            for statement in self.schema:
                conn.execute(statement)
            meta = [("application", self.application), ("schema_version", str(self.schema_version))]
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta)
            conn.execute(f"PRAGMA application_id = {self.application_id}")
        elif version < self.schema_version:
            self._migrate(conn, version)

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        """Take a file of an older ``version`` to this one (within the caller's transaction)."""
        for v in range(version, self.schema_version):
            for statement in self.migrations[v]:
                conn.execute(statement)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(self.schema_version),))

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (opened again after a fork); call with the lock held."""
        if self._conn is None:
            if self._closed:
                raise StoreUnavailable(f"SQLite file {self.path} is closed")
            try:
                self._conn = self._open()
            except ConfigError as exc:
                raise StoreUnavailable(str(exc)) from exc
        return self._conn

    def _forked(self) -> None:
        """In a forked child: a fresh lock (another thread may have held the parent's), and a new connection later."""
        self._lock = threading.Lock()
        if self._conn is not None:
            _INHERITED.append(self._conn)
            self._conn = None
            self._generation += 1

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        return StoreUnavailable(f"SQLite file {self.path} unavailable: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Close this process's connection; later verbs raise StoreUnavailable."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                conn, self._conn = self._conn, None
                with suppress(sqlite3.Error):
                    conn.close()
        _OPEN.discard(self)

    def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc

    def _write(
        self,
        work: Callable[[sqlite3.Connection, float], T],
        *,
        durable: bool = True,
        suppressing: bool = False,
        single: bool = False,
    ) -> T:
        """Run ``work(conn, now)`` as one ``BEGIN IMMEDIATE`` transaction (``single``: its one statement is its own
        transaction); ``durable``: commit with FULL."""
        with self._lock:
            conn = self._connection()
            try:
                if self._durable is not durable:
                    conn.execute("PRAGMA synchronous = FULL" if durable else "PRAGMA synchronous = NORMAL")
                    self._durable = durable
                if not single:
                    conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn, self._clock())
                    if not single:
                        conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
            if suppressing:  # after the commit: a version read before it must not already count it
                self._writes += 1
            return result

    def _data_version(self) -> tuple[int, int]:
        """This connection's generation and ``PRAGMA data_version`` (moves when another connection commits)."""
        conn = self._connection()
        return (self._generation, int(conn.execute("PRAGMA data_version").fetchone()[0]))
