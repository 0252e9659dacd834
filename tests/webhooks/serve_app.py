"""A webhook app in its own process, for the cross-process test: ``python serve_app.py REDIS_URL PREFIX``.

It builds its own Gatekeeper on the given Redis prefix, serves the blueprint on
a free local port, prints ``PORT <n>`` once it is listening, and serves until
terminated. The auth token comes from ``GK_TEST_TOKEN``.
"""

from __future__ import annotations

import os
import sys

from flask import Flask
from twilio.rest import Client
from werkzeug.serving import make_server

from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import Settings
from gatekeeper.stores.base import Stores
from gatekeeper.stores.redis import RedisStore
from gatekeeper.webhooks import init_app


def main() -> None:
    redis_url, prefix = sys.argv[1], sys.argv[2]
    token = os.environ["GK_TEST_TOKEN"]
    store = RedisStore.from_url(redis_url, prefix=prefix)
    gate = Gatekeeper(
        Client("AC" + "0" * 32, token, environment={}),
        settings=Settings(lookup={"enabled": False}, webhooks={"allowed_hosts": ["127.0.0.1"]}),
        stores=Stores.using(store),
    )
    app = Flask("webhooks-subprocess")
    init_app(app, gate)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
