"""compose.yaml agrees with the rest of the deployment recipe.

This machine has no container runtime, so ``docker compose up`` is never run here (tests/test_deploy.py runs the
same processes on loopback instead). What can be checked without one is checked: the file's variables are
substituted as compose would, every Gatekeeper variable it or the Dockerfile sets loads into the settings it
means, and the ports, paths and files the three services name line up with each other and with the repository.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import PYPROJECT

from gatekeeper import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "compose.yaml").read_text()
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
SID = "AC" + "4" * 32
GIVEN = {  # what a person exports before `docker compose up` (compose.yaml's header)
    "REDIS_PASSWORD": "s3cret-pass",
    "TWILIO_ACCOUNT_SID": SID,
    "TWILIO_AUTH_TOKEN": "0" * 32,
    "PUBLIC_BASE_URL": "https://hooks.example.com",
}
_REFERENCE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::\?(?P<error>[^}]*))?\}|\$(?P<bare>[A-Za-z_])")


class Unset(Exception):
    """A required variable (``${NAME:?message}``) is unset: compose refuses to start with ``message``."""


def interpolate(text: str, environ: dict[str, str]) -> str:
    """compose's substitution of the forms this file may use: ``$$`` (a literal ``$``), ``${NAME}`` and
    ``${NAME:?message}`` (required). Any other form fails the test, so the file stays within what is checked."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("bare"):
            pytest.fail(f"compose.yaml uses a form of substitution this test does not know: {match.group(0)}")
        name, error = match.group("name"), match.group("error")
        if error is not None and not environ.get(name):
            raise Unset(error)
        return environ.get(name, "")

    return _REFERENCE.sub(one, text)


def _substituted(node: Any, environ: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _substituted(value, environ) for key, value in node.items()}
    if isinstance(node, list):
        return [_substituted(value, environ) for value in node]
    return interpolate(node, environ) if isinstance(node, str) else node


def compose(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml as compose reads it: parsed (comments gone), then the values substituted."""
    loaded = _substituted(yaml.safe_load(COMPOSE_TEXT), GIVEN if environ is None else environ)
    assert isinstance(loaded, dict)
    return loaded


def dockerfile_env() -> dict[str, str]:
    """The ``ENV`` lines of deploy/Dockerfile (continuations joined), as the image sets them."""
    joined = DOCKERFILE.replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[len("ENV ") :]):
                name, _, value = pair.partition("=")
                found[name] = value
    return found


def container_env() -> dict[str, str]:
    """The webhooks container's environment: the image's ENV, then compose's ``environment`` over it."""
    return {**dockerfile_env(), **compose()["services"]["webhooks"]["environment"]}


def test_the_three_services_and_the_variables_the_header_asks_for() -> None:
    services = compose()["services"]
    assert set(services) == {"webhooks", "redis", "prometheus"}
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE_TEXT))
    assert required == set(GIVEN)
    header = "\n".join(line for line in COMPOSE_TEXT.splitlines() if line.startswith("#"))
    assert all(name in header for name in required)  # the comment on top says what to set


@pytest.mark.parametrize("missing", sorted(GIVEN))
def test_each_required_variable_stops_compose_when_unset(missing: str) -> None:
    with pytest.raises(Unset, match=missing):
        compose({k: v for k, v in GIVEN.items() if k != missing})


def test_the_webhooks_containers_environment_loads_into_the_settings_it_means() -> None:
    """Every GATEKEEPER_ variable the image and compose.yaml set names a setting (a typo would be a ConfigError),
    and each lands where the recipe says."""
    env = container_env()
    settings = Settings.load(env=env)
    assert settings.redis.url is not None
    assert settings.redis.url.get_secret_value() == f"redis://:{GIVEN['REDIS_PASSWORD']}@redis:6379/0"
    assert settings.store_backend() == "redis"
    assert settings.redis.require_persistence is True
    assert settings.webhooks.public_base_url == GIVEN["PUBLIC_BASE_URL"]
    assert settings.metrics.port == 9464
    assert settings.metrics.host == "0.0.0.0"  # inside the compose network, and not published
    assert str(settings.webhooks.journal_path) == "/var/lib/gatekeeper/journal.db"
    assert settings.twilio.account_sid == SID


def test_ports_paths_and_files_line_up() -> None:
    services = compose()["services"]
    webhooks, redis_service, prometheus = services["webhooks"], services["redis"], services["prometheus"]
    env = container_env()
    # The webhooks: published on the host's loopback only, at the port the image's gunicorn binds.
    cmd = re.search(r"^CMD (.+)$", DOCKERFILE, re.MULTILINE)
    assert cmd is not None
    bind = yaml.safe_load(cmd.group(1))  # a JSON array
    assert bind[bind.index("--bind") + 1] == "0.0.0.0:8080"
    assert webhooks["ports"] == ["127.0.0.1:8080:8080"]
    assert (ROOT / webhooks["build"]["context"] / webhooks["build"]["dockerfile"]).is_file()
    # /metrics: Prometheus scrapes the metrics port on the webhooks service; that port is not published.
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"webhooks:{env['GATEKEEPER_METRICS__PORT']}"]
    assert all(env["GATEKEEPER_METRICS__PORT"] not in port for port in webhooks["ports"])
    # The journal lives on the volume; prometheus-client's multiprocess files in the tmpfs emptied at each start.
    assert "journal:/var/lib/gatekeeper" in webhooks["volumes"]
    assert Path(env["GATEKEEPER_WEBHOOKS__JOURNAL_PATH"]).parent == Path("/var/lib/gatekeeper")
    assert any(Path(env["PROMETHEUS_MULTIPROC_DIR"]).is_relative_to(tmpfs) for tmpfs in webhooks["tmpfs"])
    assert webhooks["depends_on"]["redis"]["condition"] == "service_healthy"
    # Redis: the recipe's own config file (AOF on, no eviction), its data on a volume, the password required.
    mounted = {v.split(":")[1]: v.split(":")[0] for v in redis_service["volumes"] if v.startswith("./")}
    conf = mounted[redis_service["command"][1]]
    redis_conf = (ROOT / conf).read_text()
    assert re.search(r"^appendonly yes$", redis_conf, re.MULTILINE)
    assert re.search(r"^maxmemory-policy noeviction$", redis_conf, re.MULTILINE)
    assert "redis-data:/data" in redis_service["volumes"]
    command = redis_service["command"]
    assert command[command.index("--requirepass") + 1] == GIVEN["REDIS_PASSWORD"]
    assert "$REDIS_PASSWORD" in redis_service["healthcheck"]["test"][1]  # compose's $$, left for the shell
    assert redis_service["environment"]["REDIS_PASSWORD"] == GIVEN["REDIS_PASSWORD"]
    # Prometheus: the repository's scrape config, mounted where the image reads it.
    assert {v.split(":")[0] for v in prometheus["volumes"] if v.startswith("./")} == {"./deploy/prometheus.yml"}
    for service in services.values():  # every file a service mounts from the repository exists
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (ROOT / volume.split(":")[0]).is_file(), volume


def test_the_image_copies_what_its_install_and_command_need() -> None:
    copied = [line.split()[1:-1] for line in DOCKERFILE.splitlines() if line.startswith("COPY ")]
    sources = {source for sources in copied for source in sources}
    for source in sources:
        assert (ROOT / source).exists(), source
    assert {"pyproject.toml", "README.md", "LICENSE", "gatekeeper", "deploy/gunicorn.conf.py"} <= sources
    assert "'.[deploy]'" in DOCKERFILE
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(requirement.startswith("gunicorn") for requirement in extras["deploy"])
