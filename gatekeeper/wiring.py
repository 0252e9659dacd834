"""Building what the gate runs on from :class:`~gatekeeper.settings.Settings`: the twilio client and the stores.

The only module that turns settings into connections, and the only product module that reaches the
sandbox (its HTTP transport, when ``GATEKEEPER_SANDBOX_URL`` is set, and an in-process emulator for
the CLI's ``--sandbox``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from twilio.rest import Client

from gatekeeper.errors import ConfigError, StoreUnavailable
from gatekeeper.settings import Settings
from gatekeeper.stores.base import DurabilityReport, Risk, Stores

if TYPE_CHECKING:
    from gatekeeper.sandbox import SandboxServer
    from gatekeeper.stores.redis_connect import RedisTarget

_quiet_http_log = logging.getLogger("gatekeeper.twilio_http")
# twilio's HttpClient logs every request URL at INFO, and a Lookup URL holds the full number.
_quiet_http_log.setLevel(logging.WARNING)
_quiet_async_http_log = logging.getLogger("gatekeeper.twilio_async_http")
_quiet_async_http_log.setLevel(logging.WARNING)


def build_twilio_client(settings: Settings) -> Client:
    """A twilio Client for ``settings``: credentials, timeout, region/edge, or the sandbox."""
    return _build(settings, asynchronous=False)


def build_async_twilio_client(settings: Settings) -> Client:
    """A twilio Client for the SDK's ``*_async`` calls (aiohttp), for ``settings`` as :func:`build_twilio_client`.
    It may be built outside an event loop: its session opens in the loop of its first request."""
    return _build(settings, asynchronous=True)


def _build(settings: Settings, *, asynchronous: bool) -> Client:
    t = settings.twilio
    creds = settings.credentials()
    timeout = t.timeout_ms / 1000
    log = _quiet_async_http_log if asynchronous else _quiet_http_log
    http: Any
    if t.sandbox_url:
        from gatekeeper.sandbox import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
        from gatekeeper.sandbox.transport import AsyncSandboxHttpClient, SandboxHttpClient

        kind = AsyncSandboxHttpClient if asynchronous else SandboxHttpClient
        http = kind(t.sandbox_url, timeout=timeout, logger=log)
        creds = creds or (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID)
    elif creds is None:
        raise _no_credentials()
    elif asynchronous:
        from gatekeeper.transport import LazyAsyncHttpClient

        http = LazyAsyncHttpClient(timeout=timeout, logger=log)
    else:
        from requests.adapters import HTTPAdapter
        from twilio.http.http_client import TwilioHttpClient

        http = TwilioHttpClient(timeout=timeout, logger=log)
        if http.session is not None:
            # twilio sizes its pool to the CPU count; batch enrichment runs more Lookups than that at once,
            # and a connection beyond the pool is opened and dropped for every request.
            http.session.mount("https://", HTTPAdapter(pool_maxsize=64))
    return _client(settings, creds, http)


def _no_credentials() -> ConfigError:
    return ConfigError(
        "no Twilio credentials: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID and "
        "TWILIO_API_KEY_SECRET), or GATEKEEPER_SANDBOX_URL to use a local sandbox",
        key="twilio",
    )


def _client(settings: Settings, creds: tuple[str, str, str], http: Any) -> Client:
    """The twilio Client over ``http``, with the region and edge settings give. Settings read ``TWILIO_REGION``
    and ``TWILIO_EDGE``; the SDK is given an environment of its own, so it reads nothing from the process's
    (an empty one would make it read ``os.environ``)."""
    t = settings.twilio
    username, password, account_sid = creds
    env = {"GATEKEEPER": "settings"}  # non-empty: the SDK reads no TWILIO_* variable behind settings' back
    client = Client(username, password, account_sid, region=t.region, edge=t.edge, http_client=http, environment=env)
    if settings.lookup.base_url.rstrip("/") != "https://lookups.twilio.com":
        client.lookups.base_url = settings.lookup.base_url.rstrip("/")
    return client


def build_stores(settings: Settings, *, asynchronous: bool = False) -> Stores:
    """The stores ``settings`` name (``[store] backend``, ``[cache] backend``): by default one SQLite file, durable
    and shared by every process of the host (the async gate runs its verbs in worker threads); Redis when a Redis
    URL is set (``redis.asyncio`` for the async gate); the memory store only when asked for."""
    built: dict[str, Any] = {}

    def backend(name: str) -> Any:
        if name not in built:
            built[name] = _backend(settings, name, asynchronous=asynchronous)
        return built[name]

    stores = Stores.using(backend(settings.store_backend()))
    stores.cache = backend(settings.cache_backend())
    stores.closers.extend(store.close for name, store in built.items() if name != "memory")
    journal_path = settings.journal_path()
    if journal_path is not None:
        from gatekeeper.stores.journal import Journal

        if settings.webhooks.journal_path is None:
            _private_directory(journal_path, "webhooks.journal_path")
        stores.journal = journal = Journal(journal_path, busy_timeout_ms=settings.store.busy_timeout_ms)
        stores.closers.append(journal.close)
    try:
        _check_durability(settings, built[settings.store_backend()])
    except ConfigError:
        for name, store in built.items():
            done = store.close() if name != "memory" else None
            if inspect.iscoroutine(done):  # an async store that has not connected yet: nothing to await
                done.close()
        raise
    return stores


def _private_directory(path: Path, setting: str) -> None:
    """Make the default directory of a file Gatekeeper keeps, private to the user (mode 0700)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        section, key = setting.split(".")
        raise ConfigError(f"cannot create {path.parent} ({exc.strerror}): set [{section}] {key}", key=setting) from exc


def _check_durability(settings: Settings, store: Any) -> None:
    """At start: log each way the consent store may lose an acknowledged opt-out, or, with ``[redis]
    require_persistence``, refuse to start. An async Redis store is checked through a blocking connection
    (there may be no event loop yet)."""
    from gatekeeper.stores.redis import RedisStore
    from gatekeeper.stores.redis_async import AsyncRedisStore

    log = logging.getLogger("gatekeeper.stores")
    probe = store
    if isinstance(store, AsyncRedisStore):
        probe = RedisStore.connect(redis_target(settings), prefix=settings.redis.key_prefix)
    try:
        risks = probe.durability() if isinstance(probe, DurabilityReport) else []
    except StoreUnavailable as exc:
        risks = [Risk("durability:unchecked", f"the store could not be asked how it keeps what it stores: {exc}")]
    finally:
        if probe is not store:
            probe.close()
    for risk in risks:
        log.warning("store durability: %s: %s", risk.code, risk.detail)
    if risks and settings.redis.require_persistence:
        raise ConfigError(
            "[redis] require_persistence is set, but the store may lose an acknowledged opt-out: "
            + "; ".join(f"{r.code} ({r.detail})" for r in risks),
            key="redis.require_persistence",
        )


def _backend(settings: Settings, name: str, *, asynchronous: bool) -> Any:
    keep = settings.audit.retention_seconds  # how long audit records are kept (None: until the ring is full)
    if name == "sqlite":
        from gatekeeper.stores.sqlite import SQLiteStore

        path = settings.store_path()
        if settings.store.path is None:  # the default place is ours to make, private to the user
            _private_directory(path, "store.path")
        return SQLiteStore(
            path,
            busy_timeout_ms=settings.store.busy_timeout_ms,
            max_audit=settings.audit.max_entries,
            audit_max_age_seconds=keep,
        )
    if name == "redis":
        target, prefix = redis_target(settings), settings.redis.key_prefix
        if asynchronous:
            from gatekeeper.stores.redis_async import AsyncRedisStore

            return AsyncRedisStore.connect(target, prefix=prefix, audit_max_age_seconds=keep)
        from gatekeeper.stores.redis import RedisStore

        return RedisStore.connect(target, prefix=prefix, audit_max_age_seconds=keep)
    from gatekeeper.stores.memory import MemoryStore

    return MemoryStore(
        max_entries=settings.cache.max_entries, max_audit=settings.audit.max_entries, audit_max_age_seconds=keep
    )


def redis_target(settings: Settings) -> RedisTarget:
    """Where ``[redis]`` says the Redis stores connect: the server, cluster or Sentinels, timeouts and the pool."""
    from gatekeeper.stores.redis_connect import RedisTarget

    r = settings.redis
    assert r.url is not None  # Settings refuses a Redis backend (or a cluster or sentinel mode) without a URL
    sentinels = tuple((host, int(port)) for host, _, port in (s.rpartition(":") for s in r.sentinels))
    return RedisTarget(
        r.url.get_secret_value(),
        mode=r.mode,
        sentinels=sentinels,
        service_name=r.service_name,
        sentinel_password=r.sentinel_password.get_secret_value() if r.sentinel_password else None,
        timeout_seconds=r.timeout_ms / 1000,
        max_connections=r.max_connections,
        pool_timeout_seconds=r.pool_timeout_ms / 1000,
        consent_watch_seconds=r.consent_watch_ms / 1000,
    )


@contextmanager
def in_process_sandbox(settings: Settings) -> Iterator[SandboxServer]:
    """A Twilio emulator on a free loopback port for as long as the block runs, with ``[sandbox]``'s numbers."""
    from gatekeeper.sandbox import SandboxConfig, SandboxServer

    with SandboxServer(SandboxConfig(numbers=settings.sandbox.numbers)) as server:
        yield server


def serve_sandbox(settings: Settings, *, host: str, port: int, out: TextIO) -> None:
    """Run the emulator alone until interrupted (``gatekeeper sandbox``), with the configured account if
    there is one, else the published test credentials, which it prints (real ones it never prints)."""
    from gatekeeper.sandbox import (
        TEST_ACCOUNT_SID,
        TEST_API_KEY_SECRET,
        TEST_API_KEY_SID,
        TEST_AUTH_TOKEN,
        Account,
        CallbackConfig,
        SandboxConfig,
        SandboxServer,
    )

    t = settings.twilio
    keys = {t.api_key.sid: t.api_key.secret.get_secret_value()} if t.api_key.sid and t.api_key.secret else {}
    if t.account_sid is not None and (t.auth_token is not None or keys):
        token = t.auth_token.get_secret_value() if t.auth_token else TEST_AUTH_TOKEN
        account = Account(t.account_sid, token, keys)
        pair = f"account {t.account_sid}, the auth token or API key from your environment"
    else:
        account = Account(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, {TEST_API_KEY_SID: TEST_API_KEY_SECRET})
        pair = f"account {TEST_ACCOUNT_SID} / auth token {TEST_AUTH_TOKEN} (published test values)"
    config = SandboxConfig(accounts=[account], numbers=settings.sandbox.numbers, callbacks=CallbackConfig(mode="auto"))
    server = SandboxServer(config, host=host, port=port).start()
    out.write(f"Twilio sandbox on {server.url}\ncredentials: {pair}\nuse it: GATEKEEPER_SANDBOX_URL={server.url}\n")
    out.flush()
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
