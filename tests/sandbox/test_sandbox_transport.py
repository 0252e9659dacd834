"""The SDK-to-sandbox transport and the threaded server."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from gatekeeper.sandbox import TEST_AUTH_TOKEN, SandboxHttpClient, SandboxServer, async_sandbox_client, sandbox_client
from gatekeeper.sandbox.transport import DEFAULT_TIMEOUT_SECONDS


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://lookups.twilio.com/v2/PhoneNumbers/+1", "http://sb:1/v2/PhoneNumbers/+1"),
        (
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json",
            "http://sb:1/2010-04-01/Accounts/AC1/Messages.json",
        ),
        (
            "https://verify.twilio.com/v2/Services/VA1/Verifications",
            "http://sb:1/v2/Services/VA1/Verifications",
        ),
        ("https://messaging.twilio.com/v1/Services", "http://sb:1/v1/Services"),
        ("https://studio.twilio.com/v2/Flows/FW1/Executions", "http://sb:1/v2/Flows/FW1/Executions"),
        ("https://lookups.dublin.ie1.twilio.com/v2/PhoneNumbers/+1", "http://sb:1/v2/PhoneNumbers/+1"),
        ("https://conversations.twilio.com/v1/x", "https://conversations.twilio.com/v1/x"),
        ("https://api.twilio.com.evil.example/x", "https://api.twilio.com.evil.example/x"),
        ("https://example.com/api.twilio.com", "https://example.com/api.twilio.com"),
    ],
)
def test_rewrite_only_emulated_twilio_hosts(url: str, expected: str) -> None:
    """Lookup/API/Verify/Messaging/Studio URLs (any edge/region) go to the sandbox; anything else is untouched."""
    assert SandboxHttpClient("http://sb:1/").rewrite(url) == expected


def test_default_timeout() -> None:
    """The transport has a timeout by default (the SDK's own default is none)."""
    assert SandboxHttpClient("http://sb:1").timeout == DEFAULT_TIMEOUT_SECONDS
    assert SandboxHttpClient("http://sb:1", timeout=2).timeout == 2


def test_region_env_vars_do_not_leak(
    sandbox_server: SandboxServer, sandbox: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TWILIO_REGION/TWILIO_EDGE in the environment never mangle sandbox URLs."""
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    client = sandbox_client(sandbox_server.url)
    assert client.lookups.v2.phone_numbers("+14155550100").fetch().valid is True


def test_explicit_region_still_reaches_the_sandbox(sandbox_server: SandboxServer, sandbox: object) -> None:
    """A client built with edge/region (as production config may be) still talks to the sandbox."""
    client = sandbox_client(sandbox_server.url)
    client.region, client.edge = "ie1", "dublin"
    assert client.lookups.v2.phone_numbers("+14155550100").fetch().valid is True


def test_proxy_env_vars_are_ignored(
    sandbox_server: SandboxServer, sandbox: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP(S)_PROXY in the environment does not divert local sandbox traffic."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    assert sandbox_server.client().lookups.v2.phone_numbers("+14155550100").fetch().valid is True


def test_server_lifecycle() -> None:
    """A server binds a free loopback port, serves, and refuses connections after stop()."""
    server = SandboxServer()
    with pytest.raises(RuntimeError):
        _ = server.url
    server.start()
    url = server.url
    assert url.startswith("http://127.0.0.1:")
    assert server.client().lookups.v2.phone_numbers("+14155550100").fetch().valid is True
    server.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url, timeout=2)


def test_module_runs_a_standalone_server() -> None:
    """`python -m gatekeeper.sandbox --port 0` serves the API to another process."""
    command = [sys.executable, "-m", "gatekeeper.sandbox", "--port", "0", "--callbacks", "manual"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline()
            url = banner.split(" on ", 1)[1].split(" ", 1)[0]
            assert sandbox_client(url).lookups.v2.phone_numbers("+14155550100").fetch().valid is True
            assert TEST_AUTH_TOKEN not in banner
        finally:
            proc.terminate()


def test_shell_twilio_variables_stay_out_of_sandbox_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads os.environ in place of an empty ``environment``: the sandbox clients are built so that
    TWILIO_REGION, TWILIO_EDGE and TWILIO_AUTH_TOKEN in the shell reach neither their hosts nor their auth."""
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "from-the-shell")
    clients = [
        sandbox_client("http://sb:1"),
        async_sandbox_client("http://sb:1"),
        sandbox_client("http://sb:1", None, ""),
    ]
    assert [(c.region, c.edge) for c in clients] == [(None, None)] * 3
    assert [c.get_hostname("https://api.twilio.com/x") for c in clients] == ["https://api.twilio.com/x"] * 3
    assert [c.password for c in clients] == [TEST_AUTH_TOKEN, TEST_AUTH_TOKEN, None]
