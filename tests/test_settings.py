"""Settings: TOML plus environment, validated at load, secrets never shown."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gatekeeper import Gatekeeper, Settings
from gatekeeper.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SID = "AC" + "1" * 32


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gk.toml"
    path.write_text(text)
    return path


def test_shipped_configs_load() -> None:
    """config/gatekeeper.toml (every option) and the classic config/lookup.toml load unchanged."""
    full = Settings.load(ROOT / "config" / "gatekeeper.toml", env={})
    assert full.policies()["mfa"].voip == "totp"
    classic = Settings.load(ROOT / "config" / "lookup.toml", env={"TWILIO_API_KEY_SECRET": "s3cret"})
    assert classic.twilio.auth_mode == "api_key"
    assert classic.lookup.default_fields == ["line_type_intelligence"]
    assert classic.policies()["notify"].deny_line_types == {"premium", "sharedCost", "fixedVoip", "nonFixedVoip"}
    assert classic.policies()["notify"].allow_countries == {"US", "CA"}


def test_shipped_config_states_the_defaults() -> None:
    """config/gatekeeper.toml documents every option with its default: loading it gives Settings() exactly
    (so a default changed in code, such as a failure code added, cannot be undone by the shipped file)."""
    shipped, built_in = Settings.load(ROOT / "config" / "gatekeeper.toml", env={}), Settings()
    assert shipped.model_dump(exclude={"policy"}) == built_in.model_dump(exclude={"policy"})
    assert shipped.policies() == built_in.policies()  # the file spells out per-purpose defaults Settings() implies


def test_defaults_read_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() and Gatekeeper(client) use built-in defaults and ignore the environment."""
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
    monkeypatch.setenv("GATEKEEPER_REDIS_URL", "redis://example.invalid:6379/0")
    assert Settings().twilio.account_sid is None
    assert Settings().redis.url is None


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[lookup]\ndefault_fields = ["line_type_inteligence"]\n', "lookup.default_fields"),
        ("[lookup]\ntimeout_ms = -5\n", "lookup.timeout_ms"),
        ('[policy]\ndeny_line_types = ["landlin"]\n', "policy.deny_line_types"),
        ('[policy]\nallow_countries = ["USA"]\n', "policy.allow_countries"),
        ('[policy.mfa]\nvoip = "sms"\n', "policy.mfa.voip"),
        ("[cache]\nttl_secs = 5\n", "cache.ttl_secs"),
        ('[cache]\nbackend = "redis"\n', "<root>"),
        ('[twilio]\naccount_sid = "XX123"\n', "twilio.account_sid"),
        ("[nonsense]\nx = 1\n", "nonsense"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, key: str) -> None:
    """A typo or a bad value fails at load with a ConfigError whose message names the key."""
    with pytest.raises(ConfigError) as info:
        Settings.load(write(tmp_path, toml), env={})
    assert info.value.key == key
    if key != "<root>":
        assert key in str(info.value)


def test_missing_file_and_broken_toml(tmp_path: Path) -> None:
    """A missing file or invalid TOML is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="not found"):
        Settings.load(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(write(tmp_path, "[lookup\n"), env={})


def test_environment_overrides_and_gatekeeper_config(tmp_path: Path) -> None:
    """GATEKEEPER_CONFIG picks the file; env variables override it; no file means env only."""
    path = write(tmp_path, f'[twilio]\naccount_sid = "{SID}"\n[redis]\nkey_prefix = "x:"\n')
    env = {"GATEKEEPER_CONFIG": str(path), "TWILIO_AUTH_TOKEN": "tok", "GATEKEEPER_REDIS_URL": "redis://h:1/0"}
    s = Settings.load(env=env)
    assert s.twilio.account_sid == SID
    assert s.credentials() == (SID, "tok", SID)
    assert s.store_backend() == "redis"
    assert s.redis.key_prefix == "x:"
    assert Settings.load(env={"TWILIO_ACCOUNT_SID": SID}).twilio.account_sid == SID


def test_api_key_preferred_when_both_given() -> None:
    """With an auth token and an API key pair, the API key authenticates."""
    env = {
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": "tok",
        "TWILIO_API_KEY_SID": "SK" + "2" * 32,
        "TWILIO_API_KEY_SECRET": "keysecret",
    }
    assert Settings.load(env=env).credentials() == ("SK" + "2" * 32, "keysecret", SID)


def test_api_key_mode_without_secret_is_a_config_error() -> None:
    """auth_mode = api_key with the secret variable unset names what is missing."""
    s = Settings.load(ROOT / "config" / "lookup.toml", env={})
    with pytest.raises(ConfigError, match="TWILIO_API_KEY_SECRET"):
        s.credentials()


def test_secret_from_file(tmp_path: Path) -> None:
    """A secret variable holding the path of an existing file is read from that file."""
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    s = Settings.load(env={"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": str(secret)})
    assert s.credentials() == (SID, "from-a-file", SID)


def test_secrets_never_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """repr, str and config errors never contain a secret value."""
    env = {
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": "hunter2-token",
        "GATEKEEPER_REDIS_URL": "redis://:pa55word@h:1/0",
    }
    s = Settings.load(env=env)
    for text in (repr(s), str(s), repr(s.twilio), s.model_dump_json()):
        assert "hunter2-token" not in text
        assert "pa55word" not in text
    with pytest.raises(ConfigError) as info:
        Settings.load(write(tmp_path, "[lookup]\ntimeout_ms = 0\n"), env=env)
    assert "hunter2" not in str(info.value)
    with caplog.at_level(logging.DEBUG):
        Gatekeeper.from_settings(s).decide("not a number")
    assert "hunter2" not in caplog.text


def test_per_purpose_overrides_inherit_the_rest(tmp_path: Path) -> None:
    """[policy.mfa] overrides only what it sets; the shared [policy] keys apply to both purposes."""
    s = Settings.load(
        write(
            tmp_path,
            '[policy]\nallow_countries = ["US"]\nmode = "observe"\n[policy.mfa]\nmode = "enforce"\nvoip = "email"\n',
        ),
        env={},
    )
    notify, mfa = s.policies()["notify"], s.policies()["mfa"]
    assert (notify.mode, mfa.mode) == ("observe", "enforce")
    assert notify.allow_countries == mfa.allow_countries == {"US"}
    assert (mfa.voip, mfa.on_lookup_error, notify.on_lookup_error) == ("email", "refuse", "allow_local")


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"GATEKEEPER_SANDBOX_URL": "http://169.254.169.254/latest"}, "twilio.sandbox_url"),
        ({"GATEKEEPER_SANDBOX_URL": "http://sandbox.internal:8099"}, "twilio.sandbox_url"),
        ({"GATEKEEPER_SANDBOX_URL": "file:///etc/passwd"}, "twilio.sandbox_url"),
        ({"GATEKEEPER_SANDBOX_URL": "http://twilio.com.evil.example"}, "twilio.sandbox_url"),
    ],
)
def test_credentials_go_only_to_twilio_loopback_or_listed_hosts(env: dict[str, str], key: str) -> None:
    """The sandbox URL (and lookup.base_url) receive the account's credentials: any other host is a ConfigError
    naming the key."""
    with pytest.raises(ConfigError) as refused:
        Settings.load(env=env)
    assert refused.value.key == key
    assert "credentials" in str(refused.value) or "URL" in str(refused.value)


def test_lookup_base_url_is_checked_and_an_allow_list_opens_a_host(tmp_path: Path) -> None:
    bad = write(tmp_path, '[lookup]\nbase_url = "http://lookups.twilio.com"\n')
    with pytest.raises(ConfigError, match="https only") as refused:
        Settings.load(bad, env={})
    assert refused.value.key == "lookup.base_url"
    listed = write(tmp_path, '[twilio]\nallowed_hosts = ["stub.internal"]\n[lookup]\nbase_url = "http://stub.internal:9"\n')
    assert Settings.load(listed, env={}).lookup.base_url == "http://stub.internal:9"
    for fine in ("https://lookups.dublin.ie1.twilio.com", "http://127.0.0.1:8099", "http://localhost:1", "http://[::1]:2"):
        assert Settings(lookup={"base_url": fine}).lookup.base_url == fine
