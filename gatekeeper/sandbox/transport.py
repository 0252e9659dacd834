"""Point the real twilio SDK at a sandbox: ``HttpClient``s that rewrite Twilio's hosts.

The SDK builds absolute ``https://<product>.twilio.com/...`` URLs; these clients swap the
scheme and host of the Twilio products the sandbox emulates for ``base_url`` and leave
every other URL untouched. Nothing else changes, so the SDK's own request building, auth,
error parsing and exceptions are exercised for real. :class:`SandboxHttpClient` serves the
SDK's blocking methods (``requests``); :class:`AsyncSandboxHttpClient` its ``*_async`` ones
(``aiohttp``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from typing import Any

from aiohttp import ClientSession
from aiohttp_retry import ExponentialRetry, RetryClient
from twilio.http.async_http_client import AsyncTwilioHttpClient  # type: ignore[import-untyped, unused-ignore]
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped, unused-ignore]
from twilio.rest import Client  # type: ignore[import-untyped, unused-ignore]

from gatekeeper.sandbox.numbers import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

#: Twilio products whose requests go to the sandbox.
SANDBOX_PRODUCTS: tuple[str, ...] = ("api", "lookups", "verify", "messaging", "studio")
# With edge/region set, the SDK writes hosts like ``lookups.dublin.us1.twilio.com``.
_TWILIO_PREFIX = re.compile(rf"^https://(?:{'|'.join(SANDBOX_PRODUCTS)})(?:\.[a-z0-9-]+)*\.twilio\.com(?=[/?]|$)")
#: Seconds; the SDK's own default is no timeout at all.
DEFAULT_TIMEOUT_SECONDS = 10.0


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
    (``username="SK…"``, ``auth_token=<secret>``) on ``account_sid``. ``environment={}`` keeps
    ``TWILIO_REGION``/``TWILIO_EDGE`` from the process environment out of the URLs. Other
    keyword arguments go to :class:`SandboxHttpClient`.
    """
    sid = account_sid or TEST_ACCOUNT_SID
    token = auth_token if auth_token is not None else TEST_AUTH_TOKEN
    return Client(
        username or sid,
        token,
        account_sid=sid,
        environment={},
        http_client=SandboxHttpClient(base_url, **kwargs),
    )


class AsyncSandboxHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc, unused-ignore]  # twilio is untyped
    """An ``AsyncTwilioHttpClient`` (aiohttp) that sends Twilio-host requests to ``base_url``.

    The URL is rewritten where ``AsyncTwilioHttpClient.request`` receives it, so the SDK still
    builds the aiohttp request (form data, headers) itself; the credentials go in as the
    ``Authorization: Basic`` header (aiohttp 3.14 deprecates the ``BasicAuth`` object the SDK
    would build; the bytes on the wire are the same). ``timeout`` defaults to
    :data:`DEFAULT_TIMEOUT_SECONDS` and applies when the SDK passes none. The pooled aiohttp
    session is opened by the first request, inside the running event loop (so the client can be
    built outside one), never trusts proxy environment variables, and serves that loop only:
    close it with ``await client.close()`` or ``async with client:`` before the loop ends.
    """

    session: Any  # aiohttp ClientSession (or aiohttp_retry RetryClient), None until the first request

    def __init__(
        self,
        base_url: str,
        *,
        pool_connections: bool = True,
        trace_configs: Any = None,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        logger: logging.Logger | None = None,
        max_retries: int | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"logger": logger} if logger is not None else {}
        # No session yet (the base would open one here, which needs a running loop), no proxy.
        super().__init__(pool_connections=False, trace_configs=trace_configs, timeout=timeout, **kwargs)
        self.base_url = base_url.rstrip("/")
        self.pool_connections = pool_connections
        self.max_retries = max_retries
        self._loop: asyncio.AbstractEventLoop | None = None

    def rewrite(self, url: str) -> str:
        """``url`` with an emulated Twilio host (any edge/region) replaced by ``base_url``."""
        return rewrite_url(self.base_url, url)

    def _open_session(self) -> None:
        loop = asyncio.get_running_loop()
        if self.session is not None:
            if self._loop is not loop:
                raise RuntimeError("an AsyncSandboxHttpClient serves one event loop: make one client per loop")
            return
        session: Any = ClientSession(trust_env=False, trace_configs=self.trace_configs)
        if self.max_retries is not None:
            session = RetryClient(client_session=session, retry_options=ExponentialRetry(attempts=self.max_retries))
        self.session, self._loop = session, loop

    async def request(  # noqa: PLR0917  (AsyncTwilioHttpClient.request's own signature)
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Any:
        """Send the request, rewritten to the sandbox when it targets an emulated Twilio host."""
        if self.pool_connections:
            self._open_session()
        if auth is not None:  # the header aiohttp's deprecated BasicAuth would write, without the warning
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        return await super().request(
            method,
            self.rewrite(url),
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=self.timeout if timeout is None else timeout,
            allow_redirects=allow_redirects,
        )

    async def close(self) -> None:
        """Close the aiohttp session, if one was opened."""
        session, self.session, self._loop = self.session, None, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> AsyncSandboxHttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


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
    return Client(
        username or sid,
        token,
        account_sid=sid,
        environment={},
        http_client=AsyncSandboxHttpClient(base_url, **kwargs),
    )
