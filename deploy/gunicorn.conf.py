"""gunicorn settings for Gatekeeper's webhooks: ``gunicorn -c deploy/gunicorn.conf.py`` (docs/deploy.md).

The workers are separate processes, so prometheus-client's multiprocess mode is on: each process writes its
samples to files in ``PROMETHEUS_MULTIPROC_DIR`` and the master serves ``/metrics`` on ``[metrics] host:port``
(``GATEKEEPER_METRICS__PORT``), every worker's files merged. The webhook port serves no ``/metrics`` (unless
``[metrics] port`` is 0 and ``[metrics] bearer_token`` is set: then each worker answers it, behind the token).
Everything Gatekeeper reads comes from ``GATEKEEPER_CONFIG`` and the environment, as ``gatekeeper serve`` reads it.
Options given on gunicorn's command line (``--bind``, ``--workers`` …) override this file.
"""

import os
import tempfile
from pathlib import Path

# prometheus-client picks its mode when first imported, from this variable: it must be set before the app (or
# anything that imports prometheus_client) loads, and be inherited by every worker. Unset, a fresh directory.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gatekeeper-metrics-")

wsgi_app = "gatekeeper.webhooks.wsgi:create_app()"
bind = ["127.0.0.1:8080"]  # behind the proxy on this host; a container passes --bind 0.0.0.0:8080
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))  # processes; each keeps its own Redis pool
worker_class = "gthread"  # threads: a slow client holds a thread, not a whole worker
threads = 4
timeout = 30  # a worker silent this long is killed and replaced (child_exit below tidies its metrics)
graceful_timeout = 20  # on SIGTERM, requests in flight get this long; Twilio waits 15 s per webhook at most
keepalive = 5
max_requests = 10_000  # workers are recycled now and then; jitter keeps them from all restarting at once
max_requests_jitter = 1_000
# gunicorn >= 25.1's control socket sits at one path per user ($XDG_RUNTIME_DIR or ~/.gunicorn), shared by every
# gunicorn that user runs; the recipe needs none (older gunicorn ignores the name).
control_socket_disable = True
accesslog = "-"
# The worker's pid on every line (which worker answered); the URL only: webhook bodies, which hold the phone
# numbers, are never logged.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)sB %(M)sms pid=%(p)s'  # gunicorn writes pid=<1234>

_served = {}  # the master's metrics server, closed on exit


def on_starting(server):
    """In the master, before any worker: no samples left in the multiprocess directory by an earlier run (they
    would be counted again). Only prometheus-client's own files (``*.db``) are removed."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def when_ready(server):
    """In the master, once it listens: ``/metrics`` on ``[metrics] port`` (none when it is 0)."""
    from gatekeeper.settings import Settings
    from gatekeeper.webhooks.wsgi import metrics_note, serve_metrics

    settings = Settings.load()
    metrics_server = serve_metrics(settings)
    if metrics_server is not None:
        _served["metrics"] = metrics_server
    server.log.info("%s", metrics_note(settings, metrics_server))


def child_exit(server, worker):
    """A worker died or was recycled: its live samples (gauges) stop counting; its counters stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    metrics_server = _served.pop("metrics", None)
    if metrics_server is not None:
        metrics_server.close()
