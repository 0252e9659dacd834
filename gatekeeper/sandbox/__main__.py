"""Run the sandbox as a standalone server: ``python -m gatekeeper.sandbox --port 8099``.

Other processes then point at it (``GATEKEEPER_SANDBOX_URL=http://127.0.0.1:8099``) and
steer it through ``/_sandbox`` (:class:`gatekeeper.sandbox.SandboxControlClient`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from werkzeug.serving import make_server

from gatekeeper.sandbox.app import create_app
from gatekeeper.sandbox.config import CallbackConfig, SandboxConfig
from gatekeeper.sandbox.numbers import TEST_ACCOUNT_SID
from gatekeeper.sandbox.server import MaskingRequestHandler


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m gatekeeper.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8099, help="port, 0 for any free one (default 8099)")
    parser.add_argument(
        "--callbacks",
        choices=("auto", "manual"),
        default="auto",
        help="auto: deliver status callbacks in the background; manual: on POST /_sandbox/callbacks/flush",
    )
    parser.add_argument("--numbers", type=Path, help="JSON file: {E.164: {NumberProfile fields}} overrides")
    args = parser.parse_args(argv)
    numbers = json.loads(args.numbers.read_text(encoding="utf-8")) if args.numbers else {}
    config = SandboxConfig(numbers=numbers, callbacks=CallbackConfig(mode=args.callbacks))
    app = create_app(config)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MaskingRequestHandler)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # The token is a published test value, but it stays out of output like any token.
    sys.stdout.write(
        f"Twilio sandbox on http://{args.host}:{server.server_port} "
        f"(account {TEST_ACCOUNT_SID}; token: gatekeeper.sandbox.TEST_AUTH_TOKEN)\n"
    )
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.extensions["sandbox"].close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
