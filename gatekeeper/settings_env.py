"""Settings from environment variables: every setting by its nested name, a few by a well-known one.

Every setting has a variable, named the way pydantic-settings names nested fields: ``GATEKEEPER_``, then the
setting's dotted name upper-cased with ``__`` between its parts. ``policy.mode`` is ``GATEKEEPER_POLICY__MODE``,
``policy.mfa.voip`` is ``GATEKEEPER_POLICY__MFA__VOIP``, ``redis.url`` is ``GATEKEEPER_REDIS__URL``. A list, a
mapping or a table of values is written as JSON (``GATEKEEPER_WEBHOOKS__ALLOWED_HOSTS='["a.example.com"]'``),
anything else as plain text (``observe``, ``3000``, ``true``), validated like the same value in the file. An empty
variable is unset. Names are matched without regard to case.

A variable that starts with ``GATEKEEPER_`` and holds a ``__`` but names no setting (``GATEKEEPER_POLICY__MODEE``)
is a :class:`~gatekeeper.errors.ConfigError` naming it: a typo is never silently ignored.

A few settings also have a well-known variable (:data:`WELL_KNOWN`: ``TWILIO_ACCOUNT_SID``, the names the twilio
SDK reads, and Gatekeeper's own short ones such as ``GATEKEEPER_REDIS_URL``), and two secrets are read from a
variable another setting names (:data:`NAMED_BY`). Precedence, lowest first: built-in defaults, the TOML file,
the nested variables, the well-known variables. The well-known ones win because they are the ones deployments
and the twilio SDK already set, and the ones Gatekeeper documented first; when both kinds set one setting to
different values, a warning names the two variables (never their values).

A secret's variable (a ``SecretStr`` setting, nested or well-known) whose value is the path of an existing file
(``/…`` or ``./…``) is read from that file: Docker and Kubernetes secrets.
"""

from __future__ import annotations

import difflib
import json
import logging
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from gatekeeper.errors import ConfigError

PREFIX = "GATEKEEPER_"
DELIMITER = "__"

#: Settings that also have a well-known variable of their own, which wins over the file and the nested name.
WELL_KNOWN: dict[tuple[str, ...], str] = {
    ("twilio", "account_sid"): "TWILIO_ACCOUNT_SID",
    ("twilio", "auth_token"): "TWILIO_AUTH_TOKEN",
    ("twilio", "api_key", "sid"): "TWILIO_API_KEY_SID",
    ("twilio", "region"): "TWILIO_REGION",  # as the twilio SDK reads them
    ("twilio", "edge"): "TWILIO_EDGE",
    ("twilio", "sandbox_url"): "GATEKEEPER_SANDBOX_URL",
    ("redis", "url"): "GATEKEEPER_REDIS_URL",
    ("store", "path"): "GATEKEEPER_STORE_PATH",
}

#: Secrets read from the variable another setting names (unset there: its default; empty: none), winning likewise.
NAMED_BY: dict[tuple[str, ...], tuple[str, ...]] = {
    ("twilio", "api_key", "secret"): ("twilio", "api_key", "secret_env"),
    ("audit", "hash_key"): ("audit", "hash_key_env"),
}

Kind = Literal["text", "json", "secret"]
log = logging.getLogger("gatekeeper.settings")


def env_name(path: tuple[str, ...]) -> str:
    """The nested variable of the setting at ``path``: ``("policy", "mode")`` -> ``GATEKEEPER_POLICY__MODE``."""
    return PREFIX + DELIMITER.join(part.upper() for part in path)


def section_of(annotation: Any) -> type[BaseModel] | None:
    """The model of a field that is a table of settings (``[policy.mfa]``), else None."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def settings_of(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """Every setting under ``model``, depth first in declaration order: (its path, its field)."""
    for name, field in model.model_fields.items():
        section = section_of(field.annotation)
        if section is None:
            yield (*prefix, name), field
        else:
            yield from settings_of(section, (*prefix, name))


def sections_of(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, field in model.model_fields.items():
        section = section_of(field.annotation)
        if section is not None:
            yield (*prefix, name)
            yield from sections_of(section, (*prefix, name))


def kind_of(annotation: Any) -> Kind:
    """How a variable's text becomes the setting's value: JSON for lists, mappings and tables; a secret (maybe
    read from a file) for ``SecretStr``; else the text itself, which validation converts (``"3000"`` -> 3000)."""
    union = get_origin(annotation) in (Union, types.UnionType)
    members = [a for a in get_args(annotation) if a is not type(None)] if union else [annotation]
    for member in members:
        origin = get_origin(member) or member
        if origin in (list, dict, set, frozenset, tuple) or section_of(origin) is not None:
            return "json"
    return "secret" if SecretStr in members else "text"


def read_secret(value: str | None) -> str | None:
    """A secret variable's value: the contents of the file it names, if it names an existing one."""
    if not value:
        return None
    if value.startswith(("/", "./")) and Path(value).is_file():
        return Path(value).read_text().strip()
    return value


def apply_env(model: type[BaseModel], data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Put what the environment sets onto ``data`` (the file's settings), in precedence order; return, for each
    dotted setting it set, the variable that set it (for error messages). Raises ConfigError for a variable that
    names no setting, a table instead of a setting, or JSON that does not parse."""
    fields = dict(settings_of(model))
    by_name = {env_name(path): path for path in fields}
    sections = {env_name(path) for path in sections_of(model)}
    origins: dict[str, str] = {}
    unknown: list[str] = []
    for var, text in sorted(environ.items()):
        name = var.upper()
        if not name.startswith(PREFIX) or DELIMITER not in name[len(PREFIX) :]:
            continue
        path = by_name.get(name)
        if path is None:
            if name in sections:
                raise ConfigError(
                    f"{var} names the table [{'.'.join(_path_of(name))}], not a setting: set each of its "
                    f"settings by its own variable ({name}{DELIMITER}…); see docs/settings.md",
                    key=var,
                )
            unknown.append(var)
            continue
        dotted = ".".join(path)
        if dotted in origins:
            raise ConfigError(f"{origins[dotted]} and {var} both set {dotted}: keep one", key=var)
        value = _parse(var, dotted, text, kind_of(fields[path].annotation))
        if value is not None:
            _put(data, path, value)
            origins[dotted] = var
    named = {str(n) for p in NAMED_BY.values() if (n := _get(data, p, fields[p].default))}
    unknown = [var for var in unknown if var not in named]  # hash_key_env may name a GATEKEEPER_X__Y variable
    if unknown:
        var = unknown[0]
        suffixes = {name[len(PREFIX) :]: name for name in by_name}  # the shared prefix would make all look alike
        close = difflib.get_close_matches(var.upper()[len(PREFIX) :], suffixes, n=1, cutoff=0.8)
        hint = f" (did you mean {suffixes[close[0]]}?)" if close else ""
        raise ConfigError(
            f"{var} names no setting{hint}: every setting's variable is listed in docs/settings.md", key=var
        )
    for path, var in _well_known(data, fields):
        kind = kind_of(fields[path].annotation)
        value = read_secret(environ.get(var)) if kind == "secret" else environ.get(var) or None
        if value is None:
            continue
        dotted = ".".join(path)
        before = origins.get(dotted)
        if before is not None and before != var and _get(data, path, None) != value:
            log.warning("%s overrides %s for %s: the well-known variable wins", var, before, dotted)
        _put(data, path, value)
        origins[dotted] = var
    return origins


def _path_of(name: str) -> tuple[str, ...]:
    return tuple(part.lower() for part in name[len(PREFIX) :].split(DELIMITER))


def _well_known(
    data: Mapping[str, Any], fields: Mapping[tuple[str, ...], FieldInfo]
) -> Iterator[tuple[tuple[str, ...], str]]:
    yield from WELL_KNOWN.items()
    for path, naming in NAMED_BY.items():
        var = _get(data, naming, fields[naming].default)  # read after the nested variables: they may rename it
        if var:
            yield path, str(var)


def _parse(var: str, dotted: str, text: str, kind: Kind) -> Any:
    if not text:
        return None  # empty is unset, as for the well-known variables
    if kind == "secret":
        return read_secret(text)
    if kind == "text":
        return text
    try:
        return json.loads(text)
    except ValueError:
        # The value is not repeated: it may be a secret (webhooks.auth_tokens).
        raise ConfigError(
            f'{var} ({dotted}) is not valid JSON: a list is written \'["a", "b"]\', a table \'{{"key": 1}}\'',
            key=dotted,
        ) from None


def _get(data: Mapping[str, Any], path: tuple[str, ...], default: Any) -> Any:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set one setting, replacing what the file gave it (a list or a mapping whole, not merged)."""
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value
