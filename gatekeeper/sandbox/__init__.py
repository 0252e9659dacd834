"""A local Twilio-compatible emulator, so the whole flow runs offline through the real SDK.

::

    from gatekeeper.sandbox import SandboxServer

    with SandboxServer() as server:
        client = server.client()                     # a real twilio.rest.Client
        client.lookups.v2.phone_numbers("+14155550100").fetch(fields="line_type_intelligence")
        assert server.sandbox.lookup_count("+14155550100") == 1

See ``gatekeeper/sandbox/README.md`` for the fixture numbers and the default credentials.
"""

from gatekeeper.sandbox.app import create_app
from gatekeeper.sandbox.callbacks import CallbackDelivery
from gatekeeper.sandbox.config import Account, CallbackConfig, SandboxConfig
from gatekeeper.sandbox.control import SandboxControlClient
from gatekeeper.sandbox.errors import TwilioApiError
from gatekeeper.sandbox.faults import Fault
from gatekeeper.sandbox.numbers import (
    FIXTURES,
    TEST_ACCOUNT_SID,
    TEST_API_KEY_SECRET,
    TEST_API_KEY_SID,
    TEST_AUTH_TOKEN,
    TEST_SUBACCOUNT_AUTH_TOKEN,
    TEST_SUBACCOUNT_SID,
    NumberBook,
    NumberProfile,
)
from gatekeeper.sandbox.server import BackgroundServer, SandboxServer
from gatekeeper.sandbox.state import RecordedRequest, Sandbox
from gatekeeper.sandbox.transport import (
    AsyncSandboxHttpClient,
    SandboxHttpClient,
    async_sandbox_client,
    sandbox_client,
)

__all__ = [
    "FIXTURES",
    "TEST_ACCOUNT_SID",
    "TEST_API_KEY_SECRET",
    "TEST_API_KEY_SID",
    "TEST_AUTH_TOKEN",
    "TEST_SUBACCOUNT_AUTH_TOKEN",
    "TEST_SUBACCOUNT_SID",
    "Account",
    "AsyncSandboxHttpClient",
    "BackgroundServer",
    "CallbackConfig",
    "CallbackDelivery",
    "Fault",
    "NumberBook",
    "NumberProfile",
    "RecordedRequest",
    "Sandbox",
    "SandboxConfig",
    "SandboxControlClient",
    "SandboxHttpClient",
    "SandboxServer",
    "TwilioApiError",
    "async_sandbox_client",
    "create_app",
    "sandbox_client",
]
