"""HTTP Basic auth: account token, API key pair, wrong or missing credentials, path account."""

from __future__ import annotations

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gatekeeper.sandbox import (
    TEST_ACCOUNT_SID,
    TEST_API_KEY_SECRET,
    TEST_API_KEY_SID,
    TEST_AUTH_TOKEN,
    Account,
    SandboxConfig,
    SandboxServer,
    sandbox_client,
)

OTHER_SID = "AC" + "b" * 32


def test_account_sid_and_token_authenticate(client: Client) -> None:
    """The documented test account's SID and token open the API."""
    assert client.lookups.v2.phone_numbers("+14155550100").fetch().valid is True


def test_api_key_pair_authenticates(sandbox_server: SandboxServer, sandbox: object) -> None:
    """An API key SID and secret belonging to the account open the API; the key is what is recorded."""
    client = sandbox_client(sandbox_server.url, TEST_ACCOUNT_SID, TEST_API_KEY_SECRET, username=TEST_API_KEY_SID)
    message = client.messages.create(to="+14155550100", from_="+15005550006", body="hi")
    assert message.account_sid == TEST_ACCOUNT_SID
    assert sandbox_server.sandbox.requests("messages")[0].username == TEST_API_KEY_SID


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (TEST_ACCOUNT_SID, "wrong-token"),
        (TEST_API_KEY_SID, TEST_AUTH_TOKEN),
        ("AC" + "0" * 32, TEST_AUTH_TOKEN),
        (TEST_API_KEY_SID, "wrong-secret"),
    ],
)
def test_wrong_credentials_are_401_20003(
    sandbox_server: SandboxServer, sandbox: object, username: str, password: str
) -> None:
    """Wrong token, a key with the account token, an unknown account, or a wrong secret: 401 / 20003."""
    client = sandbox_client(sandbox_server.url, TEST_ACCOUNT_SID, password, username=username)
    with pytest.raises(TwilioRestException) as caught:
        client.lookups.v2.phone_numbers("+14155550100").fetch()
    assert (caught.value.status, caught.value.code) == (401, 20003)


def test_missing_credentials_get_twilio_error_body(sandbox_server: SandboxServer, sandbox: object) -> None:
    """No Authorization header: 401 with Twilio's error JSON and a Basic challenge."""
    response = requests.get(f"{sandbox_server.url}/v2/PhoneNumbers/+14155550100", timeout=5)
    assert response.status_code == 401
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_path_account_must_match_credentials(sandbox_server: SandboxServer, sandbox: object) -> None:
    """Valid credentials on another account's path answer 404 / 20404, and nothing is stored."""
    client = sandbox_client(sandbox_server.url, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
    with pytest.raises(TwilioRestException) as caught:
        client.api.v2010.accounts(OTHER_SID).messages.create(to="+14155550100", from_="+15005550006", body="x")
    assert (caught.value.status, caught.value.code) == (404, 20404)
    assert sandbox_server.sandbox.messages() == []


def test_configured_accounts_replace_the_default() -> None:
    """A SandboxConfig with its own account accepts it and refuses the test account."""
    config = SandboxConfig(accounts=[Account(OTHER_SID, "other-token")])
    with SandboxServer(config) as server:
        ok = server.client(OTHER_SID, "other-token").messages.create(to="+14155550100", from_="+15005550006", body="hi")
        assert ok.account_sid == OTHER_SID
        with pytest.raises(TwilioRestException) as caught:
            server.client().lookups.v2.phone_numbers("+14155550100").fetch()
        assert caught.value.status == 401


def test_account_repr_hides_secrets() -> None:
    """An Account's repr never shows the auth token or key secrets."""
    text = repr(Account(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, {TEST_API_KEY_SID: TEST_API_KEY_SECRET}))
    assert TEST_AUTH_TOKEN not in text
    assert TEST_API_KEY_SECRET not in text
