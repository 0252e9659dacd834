"""Point the real twilio SDK at a sandbox: an ``HttpClient`` that rewrites Twilio's hosts.

The SDK builds absolute ``https://<product>.twilio.com/...`` URLs; this client swaps the
scheme and host of the Twilio products the sandbox emulates for ``base_url`` and leaves
every other URL untouched. Nothing else changes, so the SDK's own request building, auth,
error parsing and exceptions are exercised for real.
"""

from __future__ import annotations

import re
from typing import Any

from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped, unused-ignore]
from twilio.rest import Client  # type: ignore[import-untyped, unused-ignore]

from gatekeeper.sandbox.numbers import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

#: Twilio products whose requests go to the sandbox.
SANDBOX_PRODUCTS: tuple[str, ...] = ("api", "lookups", "verify", "messaging")
# With edge/region set, the SDK writes hosts like ``lookups.dublin.us1.twilio.com``.
_TWILIO_PREFIX = re.compile(rf"^https://(?:{'|'.join(SANDBOX_PRODUCTS)})(?:\.[a-z0-9-]+)*\.twilio\.com(?=[/?]|$)")
#: Seconds; the SDK's own default is no timeout at all.
DEFAULT_TIMEOUT_SECONDS = 10.0


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
        match = _TWILIO_PREFIX.match(url)
        return self.base_url + url[match.end() :] if match else url

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
