"""Serve the emulator on a free loopback port from a daemon thread."""

from __future__ import annotations

import functools
import logging
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from flask import Flask
from twilio.rest import Client  # type: ignore[import-untyped, unused-ignore]
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from gatekeeper.sandbox.app import create_app
from gatekeeper.sandbox.config import SandboxConfig
from gatekeeper.sandbox.numbers import mask_path
from gatekeeper.sandbox.state import Sandbox
from gatekeeper.sandbox.transport import async_sandbox_client, sandbox_client

if TYPE_CHECKING:
    from typing_extensions import Self

_log = logging.getLogger("gatekeeper.sandbox.server")


class MaskingRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, but the access log never shows a full phone number."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        _log.debug("%s %s -> %s", self.command, mask_path(self.path), code)

    def log_error(self, format: str, *args: Any) -> None:
        _log.debug("server error on %s %s", self.command, mask_path(getattr(self, "path", "")))


class BackgroundServer:
    """Any WSGI app on ``host:port`` (port 0 = a free one) from a daemon thread: for the sandbox,
    and for the webhook app the demo and the tests run beside it.
    """

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0, *, name: str = "gatekeeper-server") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` once started."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        self._server = make_server(self.host, self.port, self.app, threaded=True, request_handler=MaskingRequestHandler)
        # A short poll interval makes stop() quick; the loop is idle between requests anyway.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._thread.start()
        _log.info("%s serving on %s", self.name, self.url)
        return self

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C interrupts it)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SandboxServer(BackgroundServer):
    """Runs a sandbox app on ``host:port`` (port 0 = a free one) in a daemon thread.

    Use as a context manager or call :meth:`start`/:meth:`stop`. ``url`` is the base URL,
    ``sandbox`` the control object, :meth:`client` a real twilio ``Client`` wired to it.
    """

    def __init__(self, app: Flask | SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(app if isinstance(app, Flask) else create_app(app), host, port, name="sandbox-server")

    @property
    def sandbox(self) -> Sandbox:
        """The control object (``app.extensions["sandbox"]``)."""
        sandbox: Sandbox = self.app.extensions["sandbox"]
        return sandbox

    def stop(self) -> None:
        """Stop serving, close the socket, and stop the callback worker."""
        super().stop()
        self.sandbox.close()

    def client(self, account_sid: str | None = None, auth_token: str | None = None, **kwargs: Any) -> Client:
        """A real ``twilio.rest.Client`` whose requests go to this server (test account by default)."""
        return sandbox_client(self.url, account_sid, auth_token, **kwargs)

    def async_client(self, account_sid: str | None = None, auth_token: str | None = None, **kwargs: Any) -> Client:
        """A real ``twilio.rest.Client`` for the SDK's ``*_async`` methods (aiohttp), wired to this server.

        Close it in the event loop that used it: ``await client.http_client.close()``.
        """
        return async_sandbox_client(self.url, account_sid, auth_token, **kwargs)
