"""The SQLite store passes the shared contract, keeps an opt-out through ``kill -9`` and across processes, and
fails as documented: ConfigError for a file it cannot use, StoreUnavailable from a verb that fails."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from stores.contract import E164, FROM, T0, OnFakeClock, audit_entry, entry
from support import FakeClock, clean_env

from gatekeeper import Action, Gatekeeper, Settings, Stores
from gatekeeper.aio import AsyncGatekeeper
from gatekeeper.cli import main
from gatekeeper.errors import ConfigError, StoreUnavailable
from gatekeeper.sandbox import Sandbox, SandboxServer
from gatekeeper.stores.base import (
    ACCOUNT_SCOPE,
    AuditEntry,
    Erasure,
    SecretKeeper,
    SuppressionVersion,
    blocking,
    lookup_key,
    subject_key,
    version_reader,
)
from gatekeeper.stores.sqlite import SCHEMA_VERSION, SQLiteStore
from gatekeeper.wiring import build_stores

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MOBILE = "+14155550100"  # the sandbox's mobile
AUDIT = AuditEntry(T0, "notify", "+1415555****", "h", "sms", None, ("r",), None, True, False, None, (0.0,) * 5)


class TestSQLiteContract(OnFakeClock):
    @pytest.fixture
    def store(self, clock: FakeClock, tmp_path: Path) -> Iterator[SQLiteStore]:
        store = SQLiteStore(tmp_path / "gk.db", clock=clock)
        yield store
        store.close()

    @pytest.fixture
    def stored_text(self, store: SQLiteStore) -> Callable[[], str]:
        """Every byte of the database file and its WAL (where the latest commits are until a checkpoint), as
        latin-1 text: the live rows and any stale page copies alike."""
        wal = Path(f"{store.path}-wal")
        return lambda: "".join(p.read_bytes().decode("latin-1") for p in (store.path, wal) if p.exists())

    def test_stored_text_sees_what_the_store_holds(self, store: SQLiteStore, stored_text: Callable[[], str]) -> None:
        """The raw-bytes reading is not blind: a number the store does keep (in the Lookup cache) is found in it, so
        the contract's check that consent and failures are not kept under the number can fail."""
        assert E164.lstrip("+") not in stored_text()
        store.opt_out(E164, source="sms:STOP", at=T0)
        store.put_lookup(lookup_key(E164, "h", "US"), entry(), ttl_seconds=60)
        assert E164.lstrip("+") in stored_text()
        subject = subject_key(store.secret("consent"), E164)
        assert subject in stored_text()  # the opt-out is there, under the subject


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "gk.db"


def raw(path: Path) -> sqlite3.Connection:
    """A connection of its own to the file: what another process sees."""
    return sqlite3.connect(path, isolation_level=None)


def query(path: Path, sql: str) -> list[Any]:
    """``sql``'s rows, read by a connection of its own."""
    with closing(raw(path)) as conn:
        return conn.execute(sql).fetchall()


# -- the file -----------------------------------------------------------------------------------
def test_a_new_file_is_a_versioned_private_wal_database(db: Path) -> None:
    """A new file gets the meta table (application, schema version), WAL mode and owner-only permissions; the store
    reports no durability risk."""
    store = SQLiteStore(db)
    assert store.durability() == []
    store.close()
    meta = {"application": "gatekeeper", "schema_version": str(SCHEMA_VERSION)}
    assert dict(query(db, "SELECT key, value FROM meta")) == meta
    assert query(db, "PRAGMA journal_mode") == [("wal",)]
    assert db.stat().st_mode & 0o777 == 0o600


def test_everything_survives_reopening(db: Path, clock: FakeClock) -> None:
    """What one store wrote, a store opened later on the file reads: consent, failures, claims, statuses, cache."""
    first = SQLiteStore(db, clock=clock)
    first.opt_out(E164, source="sms:STOP", at=T0)
    first.record_failure(E164, "SM1:failed", at=T0, window_seconds=100)
    claim = first.claim("order-1", "fp", ttl_seconds=60)
    first.complete("order-1", claim.token, b"outcome", ttl_seconds=60)
    first.apply_status("SM" + "a" * 32, "delivered", 5, error_code=None, at=T0, ttl_seconds=60)
    first.put_lookup(lookup_key(E164, "h", "US"), entry(), ttl_seconds=60)
    first.close()
    again = SQLiteStore(db, clock=clock)
    assert again.opted_out_scope(E164, ["*"]) == "*"
    assert [c.source for c in again.consent_history(E164)] == ["sms:STOP"]
    assert again.suppression(E164, now=T0, window_seconds=100, threshold=1) == "failures:1"
    assert again.claim("order-1", "fp", ttl_seconds=60).result == b"outcome"
    assert again.status_of("SM" + "a" * 32).status == "delivered"
    assert again.get_lookup(lookup_key(E164, "h", "US")) == entry()


def test_expired_rows_are_ignored_then_purged_a_few_per_write(db: Path, clock: FakeClock) -> None:
    """Expired cache rows read as absent at once; each write deletes at most 8 of them: no call does unbounded work."""
    store = SQLiteStore(db, clock=clock)
    keys = [lookup_key(f"+1415555{i:04d}", "h", "US") for i in range(20)]
    for key in keys:
        store.put_lookup(key, entry(), ttl_seconds=10)
    clock.advance(11)
    assert all(store.get_lookup(key) is None for key in keys)
    count = lambda: query(db, "SELECT count(*) FROM lookups")[0][0]  # noqa: E731
    assert count() == 20
    store.put_lookup(lookup_key(E164, "h", "US"), entry(), ttl_seconds=10)
    assert count() == 20 + 1 - 8
    store.put_lookup(lookup_key(E164, "h", "GB"), entry(), ttl_seconds=10)
    store.put_lookup(lookup_key(E164, "h", "CA"), entry(), ttl_seconds=10)
    assert count() == 3  # the 20 expired rows are gone; the three live ones stay


def test_the_audit_is_a_ring(db: Path) -> None:
    """The audit keeps about max_audit records (at most 8 more), newest first."""
    store = SQLiteStore(db, max_audit=10)
    for i in range(40):
        store.record(AUDIT._replace(at=T0 + i))
    assert 10 <= len(store.recent(100)) < 18
    assert [r["at"] for r in store.recent(2)] == [T0 + 39, T0 + 38]


def test_a_secret_is_kept_in_the_file_and_shared_by_every_connection(db: Path) -> None:
    """Two stores on one file (two connections, as two processes have) get the same secret, made once and kept in
    the meta table; a store opened later reads it back; a subprocess opening the file sees the same bytes."""
    first, second = SQLiteStore(db), SQLiteStore(db)
    assert isinstance(first, SecretKeeper)
    made = second.secret("consent")
    assert first.secret("consent") == made and len(made) == 32
    assert first.secret("audit") not in (made, second.secret("consent"))
    assert second.secret("audit") == first.secret("audit")
    assert dict(query(db, "SELECT key, value FROM meta WHERE key LIKE 'secret:%'")) == {
        "secret:consent": made.hex(),
        "secret:audit": first.secret("audit").hex(),
    }
    first.close()
    second.close()
    assert SQLiteStore(db).secret("consent") == made
    script = (
        "import sys\nfrom gatekeeper.stores.sqlite import SQLiteStore\n"
        "print(SQLiteStore(sys.argv[1]).secret('consent').hex())"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    other = subprocess.run(
        [sys.executable, "-c", script, str(db)], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == made.hex()


def test_consent_is_shared_across_stores_on_one_file_under_its_subject(db: Path) -> None:
    """An opt-out one store records, another store on the file finds (both key it by the file's secret), and the
    consent tables name only the subject."""
    first, second = SQLiteStore(db), SQLiteStore(db)
    first.opt_out(E164, source="sms:STOP", at=T0)
    first.record_failure(E164, "SM1:failed", at=T0, window_seconds=100)
    assert second.opted_out_scope(E164, ["*"]) == "*"
    assert [(c.e164, c.source) for c in second.consent_history(E164)] == [(E164, "sms:STOP")]
    assert second.suppression(E164, now=T0, window_seconds=100, threshold=1) == "failures:1"
    subject = subject_key(first.secret("consent"), E164)
    assert query(db, "SELECT subject FROM opt_outs UNION ALL SELECT subject FROM consent") == [(subject,), (subject,)]
    assert query(db, "SELECT subject FROM failures") == [(subject,)]


def test_audit_retention_on_the_stores_clock(db: Path, clock: FakeClock) -> None:
    """With audit_max_age_seconds, records older than the store's clock minus it are not read at once, and go from
    the file at most 16 per 8 records (bounded work per record) until none is left; younger ones stay."""
    store = SQLiteStore(db, clock=clock, audit_max_age_seconds=100)

    def count() -> int:
        """Records in the file older than the retention."""
        with closing(raw(db)) as conn:
            return int(conn.execute("SELECT count(*) FROM audit WHERE at < ?", (clock() - 100,)).fetchone()[0])

    start = clock()
    for i in range(20):
        store.record(audit_entry(start - 50 + i, "old"))
    assert len(store.recent(100)) == 20 and count() == 0
    clock.advance(60)  # the first 10 are now older than 100 s
    assert [r["at"] for r in store.recent(100)] == [start - 50 + i for i in range(19, 9, -1)]
    assert count() == 10
    for _ in range(4):  # ids 21..24: the 24th record purges
        store.record(audit_entry(clock(), "new"))
    assert count() == 0
    for _ in range(16):
        store.record(audit_entry(clock(), "new"))
    clock.advance(1000)  # all 30 in the file are past the retention
    assert store.recent(100) == [] and count() == 30
    for _ in range(8):  # one purge: at most 16 of the 30 go
        store.record(audit_entry(clock(), "newer"))
    assert count() == 30 - 16
    for _ in range(8):
        store.record(audit_entry(clock(), "newer"))
    assert count() == 0
    assert len(store.recent(100)) == 16
    with pytest.raises(ValueError, match="audit_max_age_seconds"):
        SQLiteStore(db, audit_max_age_seconds=0)


def test_erase_is_a_durable_suppressing_write_that_leaves_other_numbers(db: Path, clock: FakeClock) -> None:
    """erase moves the suppression version (a gate that found the number clear must read it again), as seen by
    another store on the file too; the Lookup keys of a number whose prefix differs by one digit stay (a range,
    no wildcard); it deletes through indexes, in one transaction."""
    store, other = SQLiteStore(db, clock=clock), SQLiteStore(db, clock=clock)
    assert isinstance(store, Erasure)
    mine = lookup_key(E164, "h", "US")
    near = [lookup_key(n, "h", "US") for n in (E164 + "1", E164[:-1], "+14155552672")]
    for key in (mine, *near):
        store.put_lookup(key, entry(), ttl_seconds=60)
    before, theirs_before = store.suppression_version(), other.suppression_version()
    statements: list[str] = []
    assert store._conn is not None
    store.secret("consent")
    store._conn.set_trace_callback(statements.append)
    store.erase(E164, to_hash="h", at=T0)
    store._conn.set_trace_callback(None)
    assert store.suppression_version() != before and other.suppression_version() != theirs_before
    assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
    assert store.get_lookup(mine) is None and all(store.get_lookup(k) == entry() for k in near)
    assert other.opted_out_scope(E164, ["*"]) == "*"
    assert [(c.e164, c.source, c.at) for c in other.consent_history(E164)] == [(E164, "erased", T0)]
    with closing(raw(db)) as conn:
        plans = [
            conn.execute(f"EXPLAIN QUERY PLAN DELETE FROM {table} WHERE to_hash = 'h'").fetchall()[0][3]  # noqa: S608
            for table in ("audit", "statuses")
        ]
    assert plans == [f"SEARCH {t} USING INDEX {t}_by_hash (to_hash=?)" for t in ("audit", "statuses")]


def test_suppression_version_follows_other_connections_and_reads_no_table(db: Path, clock: FakeClock) -> None:
    """The version moves when another store on the file (another process) suppresses a number, and when this one
    does; its own non-suppressing writes leave it; reading it runs one PRAGMA and no query of any table."""
    mine, theirs = SQLiteStore(db, clock=clock), SQLiteStore(db, clock=clock)
    assert isinstance(mine, SuppressionVersion)
    assert version_reader(mine, "opt_outs") is not None and version_reader(mine, "failures") is not None
    before = mine.suppression_version()
    mine.put_lookup(lookup_key(E164, "h", "US"), entry(), ttl_seconds=60)
    mine.claim("k", "fp", ttl_seconds=60)
    assert mine.suppression_version() == before
    theirs.opt_out(E164, source="sms:STOP", at=T0)
    after_theirs = mine.suppression_version()
    assert after_theirs != before
    mine.suppress(E164, ttl_seconds=60, reason="manual", at=T0)
    assert mine.suppression_version() not in (before, after_theirs)
    statements: list[str] = []
    assert mine._conn is not None
    mine._conn.set_trace_callback(statements.append)
    mine.suppression_version()
    assert statements == ["PRAGMA data_version"]


def test_suppression_version_is_cheap(db: Path) -> None:
    """It runs on every send: its median is a few microseconds (bench/decide.py measures it), far under a read."""
    store = SQLiteStore(db)
    samples = []
    for _ in range(2000):
        t0 = time.perf_counter()
        store.suppression_version()
        samples.append(time.perf_counter() - t0)
    assert sorted(samples)[len(samples) // 2] < 50e-6


def test_a_forked_child_opens_its_own_connection(db: Path) -> None:
    """A process forked with the store open (gunicorn --preload) writes through a connection of its own; the
    parent's keeps working."""
    store = SQLiteStore(db)
    store.opt_out(E164, source="parent", at=T0)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            inherited = store._conn
            store.opt_out("+14155552672", source="child", at=T0)
            code = 0 if store._conn is not inherited and store.opted_out_scope(E164, ["*"]) == "*" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.opted_out_scope("+14155552672", ["*"]) == "*"
    assert [c.source for c in store.consent_history(E164)] == ["parent"]


def open_and_opt_out(path: str, barrier: Any, answers: Any) -> None:
    barrier.wait(timeout=30)
    try:
        SQLiteStore(path).opt_out(E164, source=str(os.getpid()), at=T0)
        answers.put("ok")
    except Exception as exc:  # reported to the test
        answers.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Eight processes opening one new file at the same moment all get a store (one creates the tables; SQLite's
    immediate "locked" while another switches the file to WAL is waited out, not raised)."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(10):
        path = tmp_path / f"new-{round_}.db"
        barrier, answers = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=open_and_opt_out, args=(str(path), barrier, answers)) for _ in range(8)]
        for proc in procs:
            proc.start()
        assert [answers.get(timeout=30) for _ in procs] == ["ok"] * 8
        for proc in procs:
            proc.join(10)
        assert len(SQLiteStore(path).consent_history(E164)) == 8


# -- files it cannot use: ConfigError at open -------------------------------------------------------
def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    """A path in a directory that does not exist fails at open, naming the setting."""
    with pytest.raises(ConfigError) as info:
        SQLiteStore(tmp_path / "nowhere" / "gk.db")
    assert info.value.key == "store.path" and "does not exist" in str(info.value)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"this is not a database, just some bytes " * 200, "as a Gatekeeper database (file is not a database)"),
        ("CREATE TABLE users (id INTEGER PRIMARY KEY)", "not a Gatekeeper database"),
        (
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES ('application', 'other')",
            "not a Gatekeeper database",
        ),
        (
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES ('application', "
            "'gatekeeper'), ('schema_version', '999')",
            "newer than this Gatekeeper",
        ),
    ],
    ids=["garbage", "another-database", "another-application", "newer-schema"],
)
def test_a_file_that_is_not_ours_is_a_config_error(db: Path, content: bytes | str, says: str) -> None:
    """A file that is not a SQLite database, or is another program's, or a newer Gatekeeper's, is refused and left
    as it was."""
    if isinstance(content, bytes):
        db.write_bytes(content)
    else:
        with closing(raw(db)) as conn:
            conn.executescript(content)
    before = db.read_bytes()
    with pytest.raises(ConfigError) as info:
        SQLiteStore(db)
    assert info.value.key == "store.path" and says in str(info.value)
    assert db.read_bytes() == before


def test_a_file_of_the_previous_schema_is_brought_up_to_date_keeping_its_opt_outs(db: Path) -> None:
    """A file written by the release before the shared pauses (schema 1: no ``pauses`` table) opens: the first
    process migrates it in the transaction that checks it, its opt-outs kept, and the budget verbs work."""
    first = SQLiteStore(db)
    first.opt_out(E164, source="sms:STOP", at=T0)
    first.close()
    with closing(raw(db)) as conn:  # made a schema 1 file, as the release before wrote it, with an opt-out in it
        conn.execute("DROP TABLE pauses")
        conn.execute("DROP TABLE windows")
        conn.execute("DROP TABLE ledger")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        conn.commit()
    store = SQLiteStore(db)
    try:
        assert store.opted_out_scope(E164, [ACCOUNT_SCOPE]) == ACCOUNT_SCOPE
        store.pause("b", until=T0 + 5)
        assert store.paused_until("b") == T0 + 5
        assert store.take("b", rate_per_second=1, burst=1, now=T0, max_wait=0) == (False, pytest.approx(5.0))
    finally:
        store.close()
    with closing(raw(db)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` read-only for this process: by its mode, or for root (whom modes do not stop) the immutable flag."""
    path.chmod(0o444)
    immutable = False
    try:
        if os.access(path, os.W_OK):
            chattr = shutil.which("chattr")
            immutable = chattr is not None and subprocess.run([chattr, "+i", str(path)], check=False).returncode == 0
            if not immutable:
                pytest.skip("running as root, and chattr cannot make a file read-only here")
        yield
    finally:
        if immutable:
            subprocess.run([str(shutil.which("chattr")), "-i", str(path)], check=True)
        path.chmod(0o600)


def test_a_read_only_file_is_a_config_error(db: Path) -> None:
    """A database the process cannot write fails at open (a store that could not record a STOP is no store)."""
    SQLiteStore(db).close()
    with read_only(db), pytest.raises(ConfigError) as info:
        SQLiteStore(db)
    assert info.value.key == "store.path" and "not readable and writable" in str(info.value)


# -- verbs that fail: StoreUnavailable, and the gate fails safe ---------------------------------------
def test_a_file_corrupted_under_an_open_store_makes_verbs_unavailable(
    db: Path, sandbox_server: SandboxServer, sandbox: Sandbox
) -> None:
    """Bytes scribbled over an open store's files: every verb raises StoreUnavailable (never a sqlite3 error), the
    version vouches for nothing, and the gate refuses to send rather than risk an opt-out it cannot read."""
    store = SQLiteStore(db)
    gate = Gatekeeper(sandbox_server.client(), stores=Stores.using(store))
    assert gate.notify(MOBILE, "hi", from_=FROM).action is Action.SMS
    for name in (db.name, db.name + "-wal", db.name + "-shm"):
        with (db.parent / name).open("r+b") as f:
            f.write(os.urandom(8192))
    with pytest.raises(StoreUnavailable):
        store.opted_out_scope(E164, ["*"])
    with pytest.raises(StoreUnavailable):
        store.opt_out(E164, source="sms:STOP", at=T0)
    with pytest.raises(StoreUnavailable):
        store.claim("k", "fp", ttl_seconds=60)
    assert store.suppression_version() != store.suppression_version()
    refused = gate.notify(MOBILE, "hi", from_=FROM)
    assert (refused.action, refused.decision.reasons) == (Action.REFUSE, ("store:unavailable",))
    assert len(sandbox.messages()) == 1


def test_a_write_blocked_past_the_busy_timeout_is_unavailable_while_reads_go_on(db: Path) -> None:
    """Another process holding the write lock: a write waits busy_timeout_ms, then raises StoreUnavailable; reads
    are not blocked (WAL)."""
    store = SQLiteStore(db, busy_timeout_ms=100)
    store.opt_out(E164, source="sms:STOP", at=T0)
    other = raw(db)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            store.opt_out("+14155552672", source="sms:STOP", at=T0)
        assert 0.09 < time.monotonic() - started < 2
        assert store.opted_out_scope(E164, ["*"]) == "*"
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.opt_out("+14155552672", source="sms:STOP", at=T0) is True


def test_a_closed_store_is_unavailable(db: Path) -> None:
    """After close() every verb raises StoreUnavailable."""
    store = SQLiteStore(db)
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.opted_out_scope(E164, ["*"])


# -- settings and wiring ------------------------------------------------------------------------------
def test_settings_choose_sqlite_by_default_and_the_others_on_request(tmp_path: Path, data_home: Path) -> None:
    """build_stores gives one SQLiteStore in every role by default, in the per-user data directory (also for the
    async gate); [store] path moves it; backend = "memory" gives the memory store; Gatekeeper(client) keeps memory."""
    stores = build_stores(Settings())
    assert {type(getattr(stores, role)).__name__ for role in ("cache", "opt_outs", "idempotency", "audit")} == {
        "SQLiteStore"
    }
    assert stores.opt_outs.path == data_home / "gatekeeper" / "gatekeeper.db"  # type: ignore[attr-defined]
    assert isinstance(build_stores(Settings(), asynchronous=True).opt_outs, SQLiteStore)
    moved = build_stores(Settings(store={"path": str(tmp_path / "elsewhere.db")}))
    assert moved.opt_outs.path == tmp_path / "elsewhere.db"  # type: ignore[attr-defined]
    assert type(build_stores(Settings(store={"backend": "memory"})).opt_outs).__name__ == "MemoryStore"
    with pytest.raises(ConfigError, match=r"store\.path"):
        build_stores(Settings(store={"path": str(tmp_path / "missing" / "gk.db")}))
    loaded = Settings.load(env={"GATEKEEPER_STORE_PATH": str(tmp_path / "env.db")})
    assert loaded.store_path() == tmp_path / "env.db"
    config = tmp_path / "gk.toml"
    config.write_text('[store]\nbackend = "redis"\n')
    with pytest.raises(ConfigError, match=r"needs \[redis\] url"):
        Settings.load(config, env={})
    from gatekeeper.sandbox import sandbox_client

    assert type(Gatekeeper(sandbox_client("http://127.0.0.1:9")).stores.opt_outs).__name__ == "MemoryStore"


def test_the_cli_keeps_its_lookup_cache_in_the_default_file(
    data_home: Path, capsys: pytest.CaptureFixture[str], root_logging_restored: None
) -> None:
    """gatekeeper check, run twice (each run a new in-process sandbox), pays one Lookup: the second answer comes
    from the SQLite file in the user's data directory."""
    sources = []
    for _ in range(2):
        assert main(["check", MOBILE, "--sandbox", "--json"]) == 0
        sources.append(json.loads(capsys.readouterr().out)["facts"]["source"])
    assert sources == ["lookup", "cache"]
    assert (data_home / "gatekeeper" / "gatekeeper.db").is_file()


def test_the_async_gate_runs_the_store_in_worker_threads(db: Path, sandbox_server: SandboxServer) -> None:
    """build_stores(asynchronous=True) gives the same SQLiteStore; the async gate calls it in worker threads (it
    declares nothing about blocking) and refuses a number once it opted out."""
    stores = build_stores(Settings(store={"path": str(db)}), asynchronous=True)
    assert isinstance(stores.opt_outs, SQLiteStore) and blocking(stores.opt_outs)

    async def run() -> tuple[Any, Any]:
        gate = AsyncGatekeeper(sandbox_server.async_client(), stores=stores)
        try:
            sent = await gate.notify(MOBILE, "hi", from_=FROM)
            await gate.opt_out(MOBILE)
            return sent, await gate.notify(MOBILE, "hi", from_=FROM)
        finally:
            await gate.close()

    sent, refused = asyncio.run(run(), debug=True)
    assert sent.action is Action.SMS
    assert (refused.action, refused.decision.twilio_code) == (Action.REFUSE, 21610)
    assert SQLiteStore(db).opted_out_scope(MOBILE, ["*"]) == "*"


# -- processes ------------------------------------------------------------------------------------------
def test_an_opt_out_survives_kill_9(sandbox_server: SandboxServer, sandbox: Sandbox, data_home: Path) -> None:
    """A process opts a number out through a gate built from settings (the default store) and is killed with
    SIGKILL right after the call returns; a new process with the same settings refuses to notify it (21610)."""
    env = clean_env(GATEKEEPER_SANDBOX_URL=sandbox_server.url, PYTHONPATH=str(ROOT))
    worker = [sys.executable, str(HERE / "sqlite_worker.py")]
    with subprocess.Popen([*worker, "opt-out", MOBILE], stdout=subprocess.PIPE, text=True, env=env) as first:
        try:
            assert first.stdout is not None
            assert first.stdout.readline().strip() == "done"
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
        finally:
            first.kill()
    second = subprocess.run(
        [*worker, "notify", MOBILE], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    seen = json.loads(second.stdout)
    assert (seen["action"], seen["code"], seen["reasons"]) == ("refuse", 21610, ["opted_out:account"])
    assert seen["store"] == str(data_home / "gatekeeper" / "gatekeeper.db")
    assert [m["to"] for m in sandbox.messages()] == [MOBILE]  # the one text sent before the STOP


@pytest.fixture
def workers(tmp_path: Path, sandbox_server: SandboxServer) -> Iterator[Any]:
    """Three spawned processes, each with a gate built from one config naming one SQLite file."""
    config = tmp_path / "gk.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "shared.db"}"\n')
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    pipes, procs = [], []
    from stores import sqlite_worker

    for _ in range(3):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=sqlite_worker.serve, args=(theirs, str(config), sandbox_server.url, barrier))
        proc.start()
        pipes.append(mine)
        procs.append(proc)

    def ask(i: int, *command: Any) -> Any:
        pipes[i].send(command)
        if not pipes[i].poll(60):
            raise TimeoutError(command)
        return pipes[i].recv()

    def ask_all(*command: Any) -> list[Any]:
        for pipe in pipes:
            pipe.send(command)
        return [pipe.recv() if pipe.poll(60) else TimeoutError(command) for pipe in pipes]

    try:
        assert {ask(i, "store") for i in range(3)} == {("SQLiteStore", str(tmp_path / "shared.db"))}
        yield ask, ask_all
    finally:
        for pipe in pipes:
            pipe.send(("stop",))
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


def test_three_processes_share_one_file(workers: Any, sandbox: Sandbox) -> None:
    """Three worker processes on one file: a number each has routed (and kept, trusting the version instead of
    reading consent) is refused by all three on their next send once one of them records its STOP; claims of one
    idempotency key made at once have exactly one winner; three misses of one new number make one Lookup."""
    ask, ask_all = workers
    for i in range(3):
        sends = [ask(i, "notify", MOBILE) for _ in range(4)]
        assert {s["action"] for s in sends} == {"sms"}
        assert sends[-1]["consent_reads"] == 0  # the route was kept and the store vouched nothing was written
    assert sandbox.lookup_count(MOBILE) == 1  # one Lookup, then the shared cache

    assert ask(0, "opt_out", MOBILE) is True
    for i in (1, 2, 0):
        seen = ask(i, "notify", MOBILE)
        assert (seen["action"], seen["code"], seen["reasons"]) == ("refuse", 21610, ["opted_out:account"]), i
    assert len(sandbox.messages()) == 12

    for n in range(10):
        won = ask_all("claim", f"order-{n}")
        assert sorted(won) == [False, False, True], won

    new = "+14155550123"
    sandbox.add_fault("latency", route="lookup", number=new, latency_seconds=0.3)
    sources = ask_all("decide", new)
    assert sandbox.lookup_count(new) == 1
    assert sorted(sources) == ["cache", "cache", "lookup"]

    other = "+14155550124"  # the same through three AsyncGatekeepers: the file's lease taken in a worker thread
    sandbox.add_fault("latency", route="lookup", number=other, latency_seconds=0.3)
    sources = ask_all("decide_async", other)
    assert sandbox.lookup_count(other) == 1
    assert sorted(sources) == ["cache", "cache", "lookup"]
