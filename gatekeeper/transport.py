"""The async HTTP client the gate builds for twilio's ``*_async`` calls: twilio's own, opened lazily.

twilio's ``AsyncTwilioHttpClient`` opens its aiohttp session when it is built, which needs a running
event loop: an application that builds its gate at startup, before ``asyncio.run``, cannot. This
client opens the pooled session with the first request, inside the loop that makes it, and serves
that loop only (a second loop gets a clear error, not aiohttp's). It sends the credentials as the
``Authorization: Basic`` header (aiohttp 3.14 deprecates the ``BasicAuth`` object twilio builds;
the bytes on the wire are the same) and has a default timeout (twilio's has none). Everything else
is twilio's: request building, logging, ``max_retries`` through ``aiohttp_retry``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from aiohttp import ClientSession
from aiohttp_retry import ExponentialRetry, RetryClient
from twilio.http.async_http_client import AsyncTwilioHttpClient  # type: ignore[import-untyped, unused-ignore]

from gatekeeper.errors import InvalidArgument

#: Seconds; the SDK's own default is no timeout at all.
DEFAULT_TIMEOUT_SECONDS = 10.0


class LazyAsyncHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc, unused-ignore]  # twilio is untyped
    """An ``AsyncTwilioHttpClient`` that can be built outside an event loop (see the module docstring).

    Close it with ``await client.close()`` (or ``async with client:``) before its loop ends.
    """

    session: Any  # aiohttp ClientSession (or aiohttp_retry RetryClient), None until the first request

    def __init__(
        self,
        *,
        pool_connections: bool = True,
        trace_configs: Any = None,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        logger: logging.Logger | None = None,
        max_retries: int | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"logger": logger} if logger is not None else {}
        # No session yet: the base would open one here, which needs a running loop.
        super().__init__(pool_connections=False, trace_configs=trace_configs, timeout=timeout, **kwargs)
        self.pool_connections = pool_connections
        self.max_retries = max_retries
        self._loop: asyncio.AbstractEventLoop | None = None

    def rewrite(self, url: str) -> str:
        """The URL actually requested for ``url`` (as is; a sandbox's client points Twilio's hosts elsewhere)."""
        return url

    def _open_session(self) -> None:
        loop = asyncio.get_running_loop()
        if self.session is not None:
            if self._loop is not loop:
                raise InvalidArgument(f"a {type(self).__name__} serves one event loop: make one client per loop")
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
        """Send the request (twilio builds it), the session opened in this loop on first use."""
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

    async def __aenter__(self) -> LazyAsyncHttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
