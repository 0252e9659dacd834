"""Settings: a TOML file plus environment variables, validated at load.

Source order, lowest first: built-in defaults, the TOML file, each setting's nested variable
(``GATEKEEPER_POLICY__MODE``), the well-known variables (``TWILIO_ACCOUNT_SID``, ``GATEKEEPER_REDIS_URL`` …).
``settings_env`` reads the environment (a typo in a nested name is a ConfigError naming it) and says why this
order; ``docs/settings.md``, generated from these models by ``python -m gatekeeper.settings_doc``, lists every
setting with its variable, type and default. ``GATEKEEPER_CONFIG`` names the TOML file when ``load()`` gets none.
Pass ``env=`` to :meth:`Settings.load` to read a mapping instead of ``os.environ`` (tests do). Secrets are
``SecretStr``: they never appear in ``repr``, logs or error messages; a secret variable whose value is the path
of an existing file is read from that file (Docker and Kubernetes secrets).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gatekeeper.errors import ConfigError, InvalidArgument
from gatekeeper.models import CHANNELS, LOOKUP_FIELDS
from gatekeeper.policy import Policy, expand_line_types
from gatekeeper.settings_env import apply_env
from gatekeeper.settings_guard import GuardSettings, QuietSettings, SpendSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_fields(fields: list[str]) -> list[str]:
    unknown = [f for f in fields if f not in LOOKUP_FIELDS]
    if unknown:
        raise InvalidArgument(f"unknown Lookup field(s) {unknown} (allowed: {', '.join(sorted(LOOKUP_FIELDS))})")
    return list(dict.fromkeys(fields))


def _check_channels(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in CHANNELS]
    if unknown:
        raise InvalidArgument(f"unknown channel(s) {unknown} (allowed: {', '.join(sorted(CHANNELS))})")
    return list(dict.fromkeys(names))


def _check_countries(codes: list[str]) -> list[str]:
    out = [c.strip().upper() for c in codes]
    bad = [c for c in out if len(c) != 2 or not c.isalpha()]
    if bad:
        raise InvalidArgument(f"country codes must be ISO 3166 alpha-2, like 'US': {bad}")
    return out


class ApiKeySettings(_Section):
    sid: str | None = None  # an API key (SK…): with its secret and account_sid, preferred over the auth token
    secret_env: str = "TWILIO_API_KEY_SECRET"  # noqa: S105 - the name of a variable, not a secret
    secret: SecretStr | None = None  # the API key's secret: better in the variable secret_env names than in a file


class TwilioSettings(_Section):
    account_sid: str | None = None  # the account (AC…) every request is made for
    auth_mode: Literal["api_key", "auth_token"] | None = None
    auth_token: SecretStr | None = None  # the account's auth token; it also checks webhook signatures
    api_key: ApiKeySettings = ApiKeySettings()
    region: str | None = None
    edge: str | None = None
    timeout_ms: int = Field(10_000, gt=0)
    max_send_retries: int = Field(2, ge=0, le=10)
    sandbox_url: str | None = None
    # Hosts besides Twilio's and loopback that lookup.base_url and sandbox_url may name: they receive the
    # account's credentials with every request.
    allowed_hosts: list[str] = []

    @field_validator("account_sid")
    @classmethod
    def _sid_shape(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("AC") and len(v) == 34):
            raise InvalidArgument("an account SID starts with 'AC' and has 34 characters")
        return v


class LookupSettings(_Section):
    enabled: bool = True
    base_url: str = "https://lookups.twilio.com"
    default_country_code: str = "US"
    default_fields: list[str] = ["line_type_intelligence"]
    timeout_ms: int = Field(3_000, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    retry_backoff_ms: int = Field(200, ge=0)
    retry_jitter_ms: int = Field(100, ge=0)
    max_retry_after_ms: int = Field(10_000, ge=0)
    fill_wait_ms: int = Field(10_000, ge=0)
    field_ttl_seconds: dict[str, int] = {
        "sms_pumping_risk": 3_600, "sim_swap": 3_600, "line_status": 86_400, "reassigned_number": 86_400
    }
    max_concurrent: int = Field(50, ge=1)  # Lookups in flight at once, per process; more wait for a turn
    breaker_failures: int = Field(5, ge=1)  # failed Lookups in a row (after retries) that open the breaker
    breaker_interval_seconds: float = Field(30.0, gt=0)  # while open: no Lookup but one probe per interval

    _fields = field_validator("default_fields")(_check_fields)

    @field_validator("default_country_code")
    @classmethod
    def _country(cls, v: str) -> str:
        return _check_countries([v])[0]

    @field_validator("field_ttl_seconds")
    @classmethod
    def _ttl_fields(cls, v: dict[str, int]) -> dict[str, int]:
        _check_fields(list(v))
        if any(t <= 0 for t in v.values()):
            raise InvalidArgument("TTLs must be positive")
        return v


class CacheSettings(_Section):
    enabled: bool = True  # false: no Lookup answer is kept, every decision that needs facts makes a Lookup
    backend: Literal["sqlite", "memory", "redis"] | None = None  # None: the [store] backend
    ttl_seconds: int = Field(7 * 86_400, gt=0)
    negative_ttl_seconds: int = Field(3_600, gt=0)
    max_entries: int = Field(100_000, gt=0)
    facts_memo_entries: int = Field(10_000, ge=0)  # Lookup answers held in process in front of the store; 0: off
    route_memo_entries: int = Field(10_000, ge=0)  # routes kept per number and way of asking; 0: off


class StoreSettings(_Section):
    """Where opt-outs, failures, idempotency claims, statuses, the Lookup cache and the audit are kept."""

    backend: Literal["sqlite", "memory", "redis"] | None = None  # None: Redis when [redis] url is set, else SQLite
    path: str | None = None  # the SQLite file; None: default_store_path()
    busy_timeout_ms: int = Field(5_000, ge=0)  # a write waits this long for another process's write


class RateSettings(_Section):
    """Budgets per Twilio API and account, shared by every process through the store (0: no limit)."""

    lookups_per_second: float = Field(0.0, ge=0)
    messages_per_second: float = Field(0.0, ge=0)
    calls_per_second: float = Field(0.0, ge=0)
    verify_per_second: float = Field(0.0, ge=0)
    burst_seconds: float = Field(1.0, gt=0)  # a bucket holds this many seconds' worth of permits
    max_wait_ms: int = Field(2_000, ge=0)  # a caller waits at most this long for a permit or a pause to end


class RedisSettings(_Section):
    # standalone: url names the server. cluster: url names any node of a Redis Cluster. sentinel: the Sentinels
    # name the primary of service_name; url gives only its database and password (its host is not connected to).
    url: SecretStr | None = None
    mode: Literal["standalone", "cluster", "sentinel"] = "standalone"
    key_prefix: str = "gk:"
    timeout_ms: int = Field(2_000, gt=0)
    # Connections per process (per node on a cluster). A command finding them all busy waits up to pool_timeout_ms
    # for one, then fails: StoreUnavailable, which the gate reports as store:pool_exhausted.
    max_connections: int = Field(50, ge=1)
    pool_timeout_ms: int = Field(2_000, ge=0)
    # Standalone: Redis pushes every write to consent keys to each process, which then screens a repeated number
    # without a round trip while it has heard from Redis within this many ms. 0: consent read on every send.
    consent_watch_ms: int = Field(1_000, ge=0)
    sentinels: list[str] = []  # sentinel: "host:port" of each Sentinel
    service_name: str | None = None  # sentinel: the name the Sentinels monitor the primary under
    sentinel_password: SecretStr | None = None  # sentinel: the Sentinels' own requirepass, if any
    # Refuse to start (ConfigError) when the stores may lose an acknowledged opt-out: a Redis without AOF, an
    # allkeys-* eviction policy, the memory store. False: the risks are logged and reported by health().
    require_persistence: bool = False

    @field_validator("sentinels")
    @classmethod
    def _sentinel_addresses(cls, v: list[str]) -> list[str]:
        for address in v:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise InvalidArgument(f"a Sentinel is 'host:port', like '10.0.0.5:26379': {address!r}")
        return v

    @model_validator(mode="after")
    def _mode_needs(self) -> RedisSettings:
        if self.mode == "sentinel" and not (self.sentinels and self.service_name):
            raise InvalidArgument("mode = 'sentinel' needs sentinels = ['host:port', …] and service_name")
        if self.mode != "standalone" and self.url is None:
            raise InvalidArgument(
                f"mode = {self.mode!r} needs url (or GATEKEEPER_REDIS_URL): "
                + ("any node of the cluster" if self.mode == "cluster" else "redis://[:password@]service/db")
            )
        return self


class PurposeSettings(_Section):
    """Per-purpose overrides of ``[policy]``; unset keys inherit."""

    allow_countries: list[str] | None = None
    deny_countries: list[str] | None = None
    deny_line_types: list[str] | None = None
    flag_line_types: list[str] | None = None
    landline: Literal["voice", "refuse"] | None = None
    # mfa only (notify lets VoIP through): "totp", "email", "refuse" (60205) or "allow"; unset: "totp"
    voip: Literal["totp", "email", "refuse", "allow"] | None = None
    # Lookup down: "allow_local" routes from the local parse, "refuse" (20503); unset: notify allow_local, mfa refuse
    on_lookup_error: Literal["refuse", "allow_local"] | None = None
    carrier_error: Literal["allow", "refuse"] | None = None
    max_sms_pumping_risk: int | None = None
    sim_swap: Literal["ignore", "flag", "refuse"] | None = None
    reassigned: Literal["ignore", "flag", "refuse"] | None = None
    refuse_line_statuses: list[str] | None = None
    max_age_seconds: int | None = Field(None, gt=0)  # facts older than this are looked up again; unset: mfa a day
    mode: Literal["enforce", "observe"] | None = None
    fields: list[str] | None = None  # the Lookup fields this purpose asks for; unset: [lookup] default_fields
    deny_channels: list[str] | None = None

    @field_validator("deny_channels")
    @classmethod
    def _channels(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_channels(v)

    @field_validator("allow_countries", "deny_countries")
    @classmethod
    def _countries(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_countries(v)

    @field_validator("deny_line_types", "flag_line_types")
    @classmethod
    def _line_types(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            expand_line_types(v)
        return v

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_fields(v)


class PolicySettings(_Section):
    allow_countries: list[str] = []
    deny_countries: list[str] = []
    deny_line_types: list[str] = []
    flag_line_types: list[str] = []
    landline: Literal["voice", "refuse"] = "voice"
    mode: Literal["enforce", "observe"] = "enforce"
    carrier_error: Literal["allow", "refuse"] = "allow"
    max_sms_pumping_risk: int | None = None
    # Lookup's sim_swap (a SIM changed in 24 h): "ignore", "flag" (a reason), "refuse"; set, the field is fetched
    sim_swap: Literal["ignore", "flag", "refuse"] = "ignore"
    # Lookup's reassigned_number, asked only when a caller gives last_verified= (US numbers): refused by default
    reassigned: Literal["ignore", "flag", "refuse"] = "refuse"
    # Lookup's line_status values refused, e.g. ["inactive", "unreachable"]; set, the field is fetched
    refuse_line_statuses: list[str] = []
    opt_out_blocks_mfa: bool = False
    deny_channels: list[str] = []
    notify: PurposeSettings = PurposeSettings()
    mfa: PurposeSettings = PurposeSettings()

    _countries = field_validator("allow_countries", "deny_countries")(_check_countries)
    _channels = field_validator("deny_channels")(_check_channels)

    @field_validator("deny_line_types", "flag_line_types")
    @classmethod
    def _line_types(cls, v: list[str]) -> list[str]:
        expand_line_types(v)
        return v

    def resolve(self, purpose: str, default_fields: list[str]) -> Policy:
        """The effective :class:`Policy` of one purpose: its overrides on top of the shared keys."""
        p: PurposeSettings = getattr(self, purpose)
        # Documented defaults: VoIP gets TOTP on mfa; Lookup down allows local facts on notify,
        # refuses on mfa; mfa re-checks facts older than a day.
        defaults = {"notify": ("allow", "allow_local", None), "mfa": ("totp", "refuse", 86_400)}[purpose]

        def pick(name: str, fallback: Any) -> Any:
            value = getattr(p, name)
            return fallback if value is None else value

        return Policy(
            allow_countries=frozenset(pick("allow_countries", self.allow_countries)),
            deny_countries=frozenset(pick("deny_countries", self.deny_countries)),
            deny_line_types=expand_line_types(pick("deny_line_types", self.deny_line_types)),
            flag_line_types=expand_line_types(pick("flag_line_types", self.flag_line_types)),
            landline=pick("landline", self.landline),
            voip=pick("voip", defaults[0]) if purpose == "mfa" else "allow",
            on_lookup_error=pick("on_lookup_error", defaults[1]),
            carrier_error=pick("carrier_error", self.carrier_error),
            max_sms_pumping_risk=pick("max_sms_pumping_risk", self.max_sms_pumping_risk),
            sim_swap=pick("sim_swap", self.sim_swap),
            reassigned=pick("reassigned", self.reassigned),
            refuse_line_statuses=frozenset(pick("refuse_line_statuses", self.refuse_line_statuses)),
            max_age_seconds=pick("max_age_seconds", defaults[2]),
            mode=pick("mode", self.mode),
            opt_outs_block=True if purpose == "notify" else self.opt_out_blocks_mfa,
            fields=_with_risk_fields(tuple(pick("fields", default_fields)), p, self),
            deny_channels=frozenset(pick("deny_channels", self.deny_channels)),
        )


def _with_risk_fields(fields: tuple[str, ...], purpose: PurposeSettings, policy: PolicySettings) -> tuple[str, ...]:
    """The Lookup fields a purpose asks for, with those its risk rules read: fetched only when a rule needs them."""
    wanted = list(fields)
    if (purpose.max_sms_pumping_risk or policy.max_sms_pumping_risk) is not None:
        wanted.append("sms_pumping_risk")
    if (purpose.sim_swap or policy.sim_swap) != "ignore":
        wanted.append("sim_swap")
    if purpose.refuse_line_statuses or policy.refuse_line_statuses:
        wanted.append("line_status")
    return tuple(dict.fromkeys(wanted))


class RoutingSettings(_Section):
    dropin_reroute: bool = False
    voice: str = "Polly.Joanna"
    language: str = "en-US"
    status_callback: str | None = None  # messages: added to every send whose caller gave none
    call_status_callback: str | None = None  # calls, the voice fallback included: likewise
    passthrough: list[str] = []  # creating SDK calls the drop-in may pass ungated, e.g. "verify.v2.service.create"


class IdempotencySettings(_Section):
    window_seconds: int = Field(86_400, gt=0)
    wait_ms: int = Field(2_000, ge=0)


class AuditSettings(_Section):
    enabled: bool = True  # false: decisions are counted in the metrics but no audit record is written
    hash_key_env: str | None = None  # name of an env var holding a key for the number pseudonyms
    hash_key: SecretStr | None = None  # the pseudonyms' HMAC key; unset: a random key the store makes and keeps
    max_entries: int = Field(10_000, gt=0)
    retention_seconds: int | None = Field(90 * 86_400, gt=0)  # records older than this are dropped; None: kept


class Replies(_Section):
    stop: str = "You have been unsubscribed and will receive no more messages. Reply START to resubscribe."
    start: str = "You have been resubscribed. Reply STOP to unsubscribe."
    help: str = "Reply STOP to unsubscribe, START to resubscribe."


class Keywords(_Section):
    stop: list[str] = []
    start: list[str] = []
    help: list[str] = []


class WebhookSettings(_Section):
    public_base_url: str | None = None
    # Without public_base_url: the Host names a request may carry (the port aside); see webhooks/signature.py.
    allowed_hosts: list[str] = []
    trusted_proxy_hops: int = Field(0, ge=0, le=10)
    max_body_bytes: int = Field(64 * 1024, gt=0)  # a larger request is refused (413)
    auth_tokens: list[SecretStr] = []  # more tokens signatures may be made with (an auth-token rotation)
    # Secrets of the shared keys Twilio signs webhooks with (Webhooks configuration API, beta), by key id
    shared_keys: dict[str, SecretStr] = {}
    advanced_opt_out: bool = False
    replies: Replies = Replies()
    keywords: Keywords = Keywords()
    consent_phrases: bool = True
    # Hard failures: unreachable, unknown, landline, filtered, opted out, not SMS-capable, invalid, unroutable,
    # and fraud blocks (Messaging's SMS pumping protection 30450/30453, Verify's Fraud Guard 60410).
    failure_codes: list[int] = [30003, 30005, 30006, 30007, 21610, 21614, 21211, 21612, 30450, 30453, 60410]
    failure_threshold: int = Field(3, ge=1)
    failure_window_seconds: int = Field(7 * 86_400, gt=0)
    suppression_ttl_seconds: int = Field(30 * 86_400, gt=0)
    status_ttl_seconds: int = Field(30 * 86_400, gt=0)
    event_ttl_seconds: int = Field(7 * 86_400, gt=0)
    opt_out_scope: Literal["account", "sender"] = "account"
    # A STOP on WhatsApp (or another channel with opt-outs of its own) silences that channel only, or all.
    channel_opt_outs: Literal["channel", "account"] = "channel"
    # Events the shared store cannot take are kept in a local journal and answered 2xx (see stores/journal.py):
    # "auto" when the store is Redis (on another host), "on", "off" (503, and Twilio may not retry).
    journal: Literal["auto", "on", "off"] = "auto"
    journal_path: str | None = None  # None: journal.db beside the SQLite store's default file
    journal_retry_seconds: float = Field(2.0, gt=0)  # how often a waiting journal is offered to the shared store
    # The connection overrides to put on every webhook URL (a fragment): how often Twilio retries, and on what.
    connection_overrides: str = "rc=5&rp=all"


class MetricsSettings(_Section):
    """Where Prometheus scrapes ``/metrics``: never the public webhook port without a token (docs/deploy.md)."""

    # A port of its own for /metrics (gatekeeper serve; gunicorn's master with deploy/gunicorn.conf.py); 0: none
    port: int = Field(0, ge=0, le=65_535)
    host: str = "127.0.0.1"  # the address that port listens on: loopback unless Prometheus scrapes from elsewhere
    # Scrapes must carry "Authorization: Bearer <token>". With port 0 it is what serves /metrics on the webhook
    # port; with neither, /metrics is not served at all.
    bearer_token: SecretStr | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v.strip():
            raise InvalidArgument("metrics.host is an address to listen on, like '127.0.0.1' or '0.0.0.0'")
        return v.strip()

    @field_validator("bearer_token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        text = None if v is None else v.get_secret_value()
        if text is not None and (len(text) < 16 or any(c.isspace() for c in text)):
            raise InvalidArgument("a bearer token has at least 16 characters and no spaces (openssl rand -hex 32)")
        return v


class SandboxSettings(_Section):
    numbers: dict[str, dict[str, Any]] = {}


class Settings(BaseSettings):
    """Every option Gatekeeper reads. ``Settings()`` is the built-in defaults, reading nothing."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    twilio: TwilioSettings = TwilioSettings()
    lookup: LookupSettings = LookupSettings()
    cache: CacheSettings = CacheSettings()
    store: StoreSettings = StoreSettings()
    redis: RedisSettings = RedisSettings()
    rates: RateSettings = RateSettings()
    policy: PolicySettings = PolicySettings()
    routing: RoutingSettings = RoutingSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    audit: AuditSettings = AuditSettings()
    webhooks: WebhookSettings = WebhookSettings()
    metrics: MetricsSettings = MetricsSettings()
    guard: GuardSettings = GuardSettings()
    spend: SpendSettings = SpendSettings()
    quiet: QuietSettings = QuietSettings()
    sandbox: SandboxSettings = SandboxSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what load() merged explicitly: Settings() alone must read no file and no env.
        return (init_settings,)

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.cache.backend == "redis" and self.redis.url is None:
            raise InvalidArgument("cache.backend = 'redis' needs [redis] url or GATEKEEPER_REDIS_URL")
        if self.store.backend == "redis" and self.redis.url is None:
            raise InvalidArgument("store.backend = 'redis' needs [redis] url or GATEKEEPER_REDIS_URL")
        if self.twilio.auth_mode == "api_key" and self.twilio.api_key.sid and self.twilio.account_sid is None:
            raise InvalidArgument("twilio.account_sid is required with API-key auth")
        allowed = self.twilio.allowed_hosts
        for key, url in (("lookup.base_url", self.lookup.base_url), ("twilio.sandbox_url", self.twilio.sandbox_url)):
            why = None if url is None else _not_for_credentials(url, allowed)
            if why is not None:
                raise InvalidArgument(f"{key}: {why}")
        return self

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``path`` (or ``GATEKEEPER_CONFIG``; none: env only) and the environment.

        Raises :class:`~gatekeeper.errors.ConfigError` naming the key at fault.
        """
        environ = os.environ if env is None else env
        chosen = path if path is not None else environ.get("GATEKEEPER_CONFIG") or None
        data: dict[str, Any] = {}
        if chosen is not None:
            file = Path(chosen)
            if not file.is_file():
                raise ConfigError(f"config file not found: {file}", key="GATEKEEPER_CONFIG")
            try:
                data = TomlConfigSettingsSource(cls, toml_file=file)()
            except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
                raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        origins = apply_env(cls, data, environ)  # {dotted setting: the variable that set it}
        try:
            return cls(**data)
        except ValidationError as exc:
            raise _config_error(exc, chosen, origins) from None

    def policies(self) -> dict[str, Policy]:
        return {p: self.policy.resolve(p, self.lookup.default_fields) for p in ("notify", "mfa")}

    def store_backend(self) -> Literal["sqlite", "memory", "redis"]:
        """``[store] backend``; unset: Redis when a Redis URL is set, else the SQLite file."""
        return self.store.backend or ("redis" if self.redis.url is not None else "sqlite")

    def cache_backend(self) -> Literal["sqlite", "memory", "redis"]:
        return self.cache.backend or self.store_backend()

    def store_path(self) -> Path:
        """The SQLite store's file: ``[store] path`` (``~`` expanded), else :func:`default_store_path`."""
        return Path(self.store.path).expanduser() if self.store.path else default_store_path()

    def journal_path(self) -> Path | None:
        """The webhooks' journal file, or None when there is none: ``[webhooks] journal`` "on", or "auto" with
        a Redis store (a SQLite store is on this host's disk already)."""
        wh = self.webhooks
        if wh.journal == "off" or (wh.journal == "auto" and self.store_backend() != "redis"):
            return None
        return Path(wh.journal_path).expanduser() if wh.journal_path else default_store_path().with_name("journal.db")

    def credentials(self) -> tuple[str, str, str] | None:
        """(username, password, account_sid) for the twilio Client; API-key auth preferred when both are given."""
        t = self.twilio
        key_ok = t.api_key.sid is not None and t.api_key.secret is not None and t.account_sid is not None
        token_ok = t.auth_token is not None and t.account_sid is not None
        mode = t.auth_mode or ("api_key" if key_ok else "auth_token" if token_ok else None)
        if mode == "api_key":
            if not key_ok:
                raise ConfigError(
                    "API-key auth needs twilio.account_sid, twilio.api_key.sid and the secret "
                    f"in ${t.api_key.secret_env}",
                    key="twilio.api_key",
                )
            assert t.api_key.sid is not None
            assert t.api_key.secret is not None
            assert t.account_sid is not None
            return t.api_key.sid, t.api_key.secret.get_secret_value(), t.account_sid
        if mode == "auth_token":
            if not token_ok:
                raise ConfigError(
                    "auth-token auth needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN", key="twilio.auth_token"
                )
            assert t.auth_token is not None
            assert t.account_sid is not None
            return t.account_sid, t.auth_token.get_secret_value(), t.account_sid
        return None


def default_store_path(environ: Mapping[str, str] | None = None) -> Path:
    """The SQLite store's file when ``[store] path`` is unset: ``$XDG_DATA_HOME/gatekeeper/gatekeeper.db``, else
    ``~/.local/share/gatekeeper/gatekeeper.db`` (the XDG default). A per-user data directory rather than the
    working directory: every process of one user (the app's workers, ``gatekeeper serve``, the CLI) opens the
    same file, and so honours the same opt-outs, wherever it was started."""
    env = os.environ if environ is None else environ
    data_home = env.get("XDG_DATA_HOME", "")
    base = Path(data_home) if os.path.isabs(data_home) else Path(env.get("HOME") or Path.home()) / ".local" / "share"
    return base / "gatekeeper" / "gatekeeper.db"


def _not_for_credentials(url: str, allowed: list[str]) -> str | None:
    """Why ``url`` may not receive the account's credentials, or None: it must be a Twilio host over HTTPS, a
    loopback address, or a host in ``[twilio] allowed_hosts``."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return f"{url!r} is not a URL"
    if parts.scheme not in ("http", "https") or not host:
        return f"{url!r} is not an http(s) URL with a host"
    if host == "twilio.com" or host.endswith(".twilio.com"):
        return None if parts.scheme == "https" else "Twilio is reached over https only"
    if host == "localhost" or _loopback(host) or host in {h.lower().rstrip(".") for h in allowed}:
        return None
    return (
        f"{host} would receive the account's credentials with every request; only Twilio's hosts, loopback or "
        "a host listed in [twilio] allowed_hosts may"
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _config_error(
    exc: ValidationError, source: str | os.PathLike[str] | None, origins: Mapping[str, str]
) -> ConfigError:
    lines = []
    first_key = None
    for err in exc.errors(include_input=False, include_url=False):
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        named = re.match(r"([a-z_]+(?:\.[a-z_]+)+): ", msg) if key == "<root>" else None
        if named:  # a check across sections names its key first
            key, msg = named.group(1), msg[named.end() :]
        first_key = first_key or key
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling against config/gatekeeper.toml)"
        var = next((v for k, v in origins.items() if key == k or key.startswith(k + ".")), None)
        lines.append(f"  {key}: {msg}" + (f" (from ${var})" if var else ""))
    where = f" in {source}" if source else ""
    return ConfigError(f"invalid settings{where}:\n" + "\n".join(lines), key=first_key)
