"""The webhooks as a WSGI app built from the settings, for gunicorn and ``gatekeeper serve``.

::

    gunicorn -c deploy/gunicorn.conf.py            # wsgi_app = "gatekeeper.webhooks.wsgi:create_app()"
    gunicorn 'gatekeeper.webhooks.wsgi:create_app(url_prefix="/hooks")'

Each worker builds its own Gatekeeper from ``Settings.load()`` (``GATEKEEPER_CONFIG`` and the environment,
as ``gatekeeper serve`` reads them). The app answers the routes of :mod:`gatekeeper.webhooks.blueprint` and,
only when ``[metrics] bearer_token`` is set and ``[metrics] port`` is 0, ``GET /metrics`` to requests carrying
that token: the webhook port is public (Twilio must reach it), and the metrics say how much traffic, from
where, fails how. With ``[metrics] port`` set, :func:`serve_metrics` serves them on that port instead
(``gatekeeper serve`` itself; gunicorn's master through ``deploy/gunicorn.conf.py``). See ``docs/deploy.md``.
"""

from __future__ import annotations

import atexit
import logging

from flask import Flask, Response, request

from gatekeeper import metrics
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import Settings
from gatekeeper.webhooks.blueprint import init_app

log = logging.getLogger("gatekeeper.webhooks")


def create_app(gate: Gatekeeper | None = None, *, url_prefix: str = "/twilio") -> Flask:
    """A Flask app serving the webhooks under ``url_prefix`` for ``gate`` (None: one built from
    ``Settings.load()``, closed when the process exits).

    Raises :class:`~gatekeeper.errors.ConfigError` as the blueprint does: no token to check signatures, or
    no ``[webhooks] public_base_url``/``allowed_hosts`` to check them against.
    """
    if gate is None:
        gate = Gatekeeper.from_settings(Settings.load())
        atexit.register(gate.close)
    app = Flask("gatekeeper")
    init_app(app, gate, url_prefix=url_prefix)
    settings = gate.settings.metrics
    if settings.port == 0 and settings.bearer_token is not None:
        token = settings.bearer_token.get_secret_value()

        @app.get("/metrics")
        def scrape() -> Response:
            if not metrics.authorized(request.headers.get("Authorization"), token):
                return Response("a bearer token is required\n", 401, {"WWW-Authenticate": "Bearer"}, "text/plain")
            body, content_type = metrics.exposition()
            return Response(body, 200, content_type=content_type)

    return app


def serve_metrics(settings: Settings) -> metrics.MetricsServer | None:
    """``/metrics`` on ``[metrics] host:port`` (behind ``bearer_token`` when set), or None when the port is 0.
    In a gunicorn master it shows every worker's samples (``PROMETHEUS_MULTIPROC_DIR``: :mod:`gatekeeper.metrics`)."""
    m = settings.metrics
    if m.port == 0:
        return None
    token = m.bearer_token.get_secret_value() if m.bearer_token is not None else None
    server = metrics.serve(m.host, m.port, bearer_token=token)
    log.info("metrics on %s%s", server.url, " (bearer token required)" if token else "")
    return server


def metrics_note(settings: Settings, server: metrics.MetricsServer | None) -> str:
    """One line saying where ``/metrics`` is served, if anywhere (never the token)."""
    m = settings.metrics
    if server is not None:
        return f"Metrics on {server.url}" + (" (bearer token required)" if m.bearer_token else "")
    if m.bearer_token is not None:
        return "Metrics at /metrics on this port, for requests with the [metrics] bearer token"
    return "Metrics not served: set [metrics] port (a port of its own) or bearer_token"
