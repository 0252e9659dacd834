"""Every setting from the environment by its nested name; typos fail; the well-known variables keep winning."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from gatekeeper import Settings
from gatekeeper.cli import main
from gatekeeper.errors import ConfigError
from gatekeeper.settings_env import env_name, kind_of, settings_of

SID = "AC" + "1" * 32


def as_variable(value: Any, annotation: Any) -> str:
    """How a person would write ``value`` in the setting's variable."""
    if kind_of(annotation) == "json":  # an array of tables ([[guard.rules]]) as a list of objects
        return json.dumps(value, default=lambda model: model.model_dump())
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_every_setting_reads_its_nested_variable() -> None:
    """Each setting's GATEKEEPER_X__Y variable is read: its default written there loads to the same settings, and
    a value that is not the default moves the setting."""
    seen = 0
    for path, field in settings_of(Settings):
        default = field.get_default(call_default_factory=True)
        if default is None:
            continue
        seen += 1
        loaded = Settings.load(env={env_name(path): as_variable(default, field.annotation)})
        assert loaded.model_dump() == Settings().model_dump(), path
    assert seen > 60  # the walk reached the nested tables ([policy.mfa], [webhooks.replies] …)


@pytest.mark.parametrize(
    ("variable", "text", "read", "expected"),
    [
        ("GATEKEEPER_POLICY__MODE", "observe", lambda s: s.policies()["notify"].mode, "observe"),
        ("GATEKEEPER_POLICY__MFA__VOIP", "email", lambda s: s.policies()["mfa"].voip, "email"),
        (
            "GATEKEEPER_WEBHOOKS__ALLOWED_HOSTS",
            '["a.example.com"]',
            lambda s: s.webhooks.allowed_hosts,
            ["a.example.com"],
        ),
        ("GATEKEEPER_LOOKUP__TIMEOUT_MS", "1500", lambda s: s.lookup.timeout_ms, 1500),
        ("GATEKEEPER_CACHE__ENABLED", "false", lambda s: s.cache.enabled, False),
        (
            "GATEKEEPER_LOOKUP__FIELD_TTL_SECONDS",
            '{"sim_swap": 60}',
            lambda s: s.lookup.field_ttl_seconds,
            {"sim_swap": 60},
        ),
        (
            "GATEKEEPER_WEBHOOKS__REPLIES__HELP",
            "Text STOP to stop.",
            lambda s: s.webhooks.replies.help,
            "Text STOP to stop.",
        ),
        ("gatekeeper_policy__landline", "refuse", lambda s: s.policy.landline, "refuse"),  # names ignore case
        ("GATEKEEPER_POLICY__MODE", "", lambda s: s.policy.mode, "enforce"),  # empty is unset
    ],
)
def test_nested_variables_set_their_setting(variable: str, text: str, read: Any, expected: Any) -> None:
    assert read(Settings.load(env={variable: text})) == expected


def test_redis_url_by_its_nested_name_shares_the_stores() -> None:
    s = Settings.load(env={"GATEKEEPER_REDIS__URL": "redis://:pa55@h:1/0"})
    assert s.redis.url is not None and s.redis.url.get_secret_value() == "redis://:pa55@h:1/0"
    assert s.store_backend() == "redis"
    assert "pa55" not in repr(s)


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("GATEKEEPER_POLICY__MODEE", "GATEKEEPER_POLICY__MODE"),
        ("GATEKEEPER_WEBHOOK__ALLOWED_HOSTS", "GATEKEEPER_WEBHOOKS__ALLOWED_HOSTS"),
        ("GATEKEEPER_POLICY__MFA__VOPI", "GATEKEEPER_POLICY__MFA__VOIP"),
        ("GATEKEEPER_NOTHING__LIKE_IT", None),
    ],
)
def test_a_misspelt_nested_variable_fails_naming_it(variable: str, suggestion: str | None) -> None:
    """A GATEKEEPER_X__Y variable that names no setting is a ConfigError naming it, never silently ignored."""
    with pytest.raises(ConfigError) as info:
        Settings.load(env={variable: "observe"})
    assert info.value.key == variable
    assert variable in str(info.value)
    assert (suggestion in str(info.value)) if suggestion else "did you mean" not in str(info.value)


def test_a_table_is_not_a_setting() -> None:
    with pytest.raises(ConfigError, match=r"GATEKEEPER_POLICY__MFA names the table \[policy\.mfa\]") as info:
        Settings.load(env={"GATEKEEPER_POLICY__MFA": '{"voip": "email"}'})
    assert info.value.key == "GATEKEEPER_POLICY__MFA"


def test_bad_values_name_the_setting_and_the_variable_and_not_the_value() -> None:
    with pytest.raises(ConfigError) as bad_json:
        Settings.load(env={"GATEKEEPER_WEBHOOKS__AUTH_TOKENS": "hunter2,hunter3"})
    assert bad_json.value.key == "webhooks.auth_tokens"
    assert "GATEKEEPER_WEBHOOKS__AUTH_TOKENS" in str(bad_json.value) and "JSON" in str(bad_json.value)
    assert "hunter2" not in str(bad_json.value)
    with pytest.raises(ConfigError) as bad_value:
        Settings.load(env={"GATEKEEPER_POLICY__MODE": "observer"})
    assert bad_value.value.key == "policy.mode"
    assert "GATEKEEPER_POLICY__MODE" in str(bad_value.value)
    with pytest.raises(ConfigError) as bad_list:
        Settings.load(env={"GATEKEEPER_POLICY__ALLOW_COUNTRIES": '["USA"]'})
    assert bad_list.value.key == "policy.allow_countries"


def test_precedence_file_then_nested_then_well_known(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Lowest first: the file, the nested variables, the well-known variables; a clash is logged by name only."""
    file = tmp_path / "gk.toml"
    file.write_text(
        '[redis]\nurl = "redis://file:1/0"\nkey_prefix = "file:"\ntimeout_ms = 100\n'
        '[policy]\nmode = "observe"\nallow_countries = ["US", "CA"]\n'
    )
    nested = {
        "GATEKEEPER_REDIS__URL": "redis://nested:1/0",
        "GATEKEEPER_REDIS__KEY_PREFIX": "nested:",
        "GATEKEEPER_POLICY__ALLOW_COUNTRIES": '["GB"]',
    }
    s = Settings.load(file, env=nested)
    assert s.redis.url is not None and s.redis.url.get_secret_value() == "redis://nested:1/0"
    assert (s.redis.key_prefix, s.redis.timeout_ms, s.policy.mode) == ("nested:", 100, "observe")
    assert s.policy.allow_countries == ["GB"]  # a list is replaced whole, not merged with the file's
    with caplog.at_level(logging.WARNING, logger="gatekeeper.settings"):
        s = Settings.load(file, env={**nested, "GATEKEEPER_REDIS_URL": "redis://well-known:1/0"})
    assert s.redis.url is not None and s.redis.url.get_secret_value() == "redis://well-known:1/0"
    assert "GATEKEEPER_REDIS_URL overrides GATEKEEPER_REDIS__URL" in caplog.text
    assert "nested:1" not in caplog.text and "well-known:1" not in caplog.text


def test_the_well_known_twilio_variables_win_over_nested_ones() -> None:
    env = {
        "GATEKEEPER_TWILIO__ACCOUNT_SID": "AC" + "2" * 32,
        "GATEKEEPER_TWILIO__AUTH_TOKEN": "nested-token",
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": "tok",
    }
    assert Settings.load(env=env).credentials() == (SID, "tok", SID)
    only_nested = {k: v for k, v in env.items() if k.startswith("GATEKEEPER_")}
    assert Settings.load(env=only_nested).credentials() == ("AC" + "2" * 32, "nested-token", "AC" + "2" * 32)


def test_a_nested_secret_is_read_from_the_file_it_names(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    s = Settings.load(env={"GATEKEEPER_TWILIO__ACCOUNT_SID": SID, "GATEKEEPER_TWILIO__AUTH_TOKEN": str(secret)})
    assert s.credentials() == (SID, "from-a-file", SID)


def test_a_variable_named_by_a_setting_is_not_a_typo() -> None:
    """hash_key_env may name a variable shaped like a nested one; it is read, not refused."""
    env = {"GATEKEEPER_AUDIT__HASH_KEY_ENV": "GATEKEEPER_AUDIT__PEPPER", "GATEKEEPER_AUDIT__PEPPER": "k3y"}
    s = Settings.load(env=env)
    assert s.audit.hash_key is not None and s.audit.hash_key.get_secret_value() == "k3y"
    env = {"GATEKEEPER_TWILIO__API_KEY__SECRET_ENV": "MY_KEY_SECRET", "MY_KEY_SECRET": "s3cret"}
    s = Settings.load(env={**env, "TWILIO_API_KEY_SID": "SK" + "3" * 32, "TWILIO_ACCOUNT_SID": SID})
    assert s.credentials() == ("SK" + "3" * 32, "s3cret", SID)


def test_settings_alone_reads_no_nested_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEKEEPER_POLICY__MODE", "observe")
    monkeypatch.setenv("GATEKEEPER_POLICY__MODEE", "observe")
    assert Settings().policy.mode == "enforce"


def test_the_command_line_reports_a_misspelt_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], root_logging_restored: None
) -> None:
    monkeypatch.delenv("GATEKEEPER_CONFIG", raising=False)
    monkeypatch.setenv("GATEKEEPER_POLICY__MODEE", "observe")
    assert main(["check", "+14155550100", "--sandbox"]) == 1
    assert "GATEKEEPER_POLICY__MODEE names no setting" in capsys.readouterr().err
