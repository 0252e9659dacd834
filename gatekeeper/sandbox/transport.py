"""Point the real twilio SDK at a sandbox: ``HttpClient``s that rewrite Twilio's hosts.

The SDK builds absolute ``https://<product>.twilio.com/...`` URLs; these clients swap the
scheme and host of the Twilio products the sandbox emulates for ``base_url`` and leave
every other URL untouched. Nothing else changes, so the SDK's own request building, auth,
error parsing and exceptions are exercised for real. :class:`SandboxHttpClient` serves the
SDK's blocking methods (``requests``); :class:`AsyncSandboxHttpClient` its ``*_async`` ones
(``aiohttp``).
"""

from __future__ import annotations

import re
from typing import Any

from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped, unused-ignore]
from twilio.rest import Client  # type: ignore[import-untyped, unused-ignore]

from gatekeeper.sandbox.numbers import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from gatekeeper.transport import DEFAULT_TIMEOUT_SECONDS, LazyAsyncHttpClient

#: Twilio products whose requests go to the sandbox.
SANDBOX_PRODUCTS: tuple[str, ...] = ("api", "lookups", "verify", "messaging", "studio")
# With edge/region set, the SDK writes hosts like ``lookups.dublin.us1.twilio.com``.
_TWILIO_PREFIX = re.compile(rf"^https://(?:{'|'.join(SANDBOX_PRODUCTS)})(?:\.[a-z0-9-]+)*\.twilio\.com(?=[/?]|$)")


def rewrite_url(base_url: str, url: str) -> str:
    """``url`` with an emulated Twilio host (any edge/region) replaced by ``base_url`` (no trailing ``/``)."""
    match = _TWILIO_PREFIX.match(url)
    return base_url + url[match.end() :] if match else url


class SandboxHttpClient(TwilioHttpClient):  # type: ignore[misc, unused-ignore]  # twilio is untyped
    """A ``TwilioHttpClient`` that sends Twilio-host requests to ``base_url``.

    Keyword arguments go to ``TwilioHttpClient`` (``timeout`` defaults to
    :data:`DEFAULT_TIMEOUT_SECONDS`). Proxy environment variables are ignored: sandbox
    traffic is local and must not leave the machine through a proxy.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", DEFAULT_TIMEOUT_SECONDS)
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")
        if self.session is not None:
            self.session.trust_env = False

    def rewrite(self, url: str) -> str:
        """``url`` with an emulated Twilio host (any edge/region) replaced by ``base_url``."""
        return rewrite_url(self.base_url, url)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        """Send the request, rewritten to the sandbox when it targets an emulated Twilio host."""
        return super().request(method, self.rewrite(url), *args, **kwargs)


def sandbox_client(
    base_url: str,
    account_sid: str | None = None,
    auth_token: str | None = None,
    *,
    username: str | None = None,
    **kwargs: Any,
) -> Client:
    """A real ``twilio.rest.Client`` whose HTTP goes to the sandbox at ``base_url``.

    Defaults to the sandbox test account. ``username`` lets you authenticate with an API key
    (``username="SK…"``, ``auth_token=<secret>``) on ``account_sid``. ``TWILIO_REGION``/``TWILIO_EDGE``
    in the process environment are kept out of the URLs. Other keyword arguments go to
    :class:`SandboxHttpClient`.
    """
    sid = account_sid or TEST_ACCOUNT_SID
    token = auth_token if auth_token is not None else TEST_AUTH_TOKEN
    http = SandboxHttpClient(base_url, **kwargs)
    return Client(username or sid, token, account_sid=sid, environment=_no_env(), http_client=http)


def _no_env() -> dict[str, str]:
    """The environment a sandbox client is built with: none of the SDK's variables, and not empty, since the
    SDK reads ``os.environ`` instead of an empty one (so ``environment={}`` let ``TWILIO_REGION`` in)."""
    return {"GATEKEEPER_SANDBOX": "1"}


class AsyncSandboxHttpClient(LazyAsyncHttpClient):
    """The gate's async HTTP client (:class:`~gatekeeper.transport.LazyAsyncHttpClient`: twilio's
    ``AsyncTwilioHttpClient``, its session opened in the loop of the first request) sending Twilio-host
    requests to ``base_url``.

    The URL is rewritten where the request is received, so the SDK still builds the aiohttp request
    (form data, headers) itself. It never trusts proxy environment variables and serves one event
    loop: close it with ``await client.close()`` or ``async with client:`` before the loop ends.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def rewrite(self, url: str) -> str:
        """``url`` with an emulated Twilio host (any edge/region) replaced by ``base_url``."""
        return rewrite_url(self.base_url, url)


def async_sandbox_client(
    base_url: str,
    account_sid: str | None = None,
    auth_token: str | None = None,
    *,
    username: str | None = None,
    **kwargs: Any,
) -> Client:
    """A real ``twilio.rest.Client`` for the SDK's ``*_async`` methods, talking to the sandbox.

    Same arguments as :func:`sandbox_client`; other keyword arguments go to
    :class:`AsyncSandboxHttpClient`. Close its session when done:
    ``await client.http_client.close()`` (or ``async with client.http_client: ...``).
    """
    sid = account_sid or TEST_ACCOUNT_SID
    token = auth_token if auth_token is not None else TEST_AUTH_TOKEN
    http = AsyncSandboxHttpClient(base_url, **kwargs)
    return Client(username or sid, token, account_sid=sid, environment=_no_env(), http_client=http)
