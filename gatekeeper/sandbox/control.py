"""The control API over HTTP, under ``/_sandbox``, and a small client for it.

Same verbs as the Python :class:`~gatekeeper.sandbox.state.Sandbox`, so a demo or a test in
another process can steer a running sandbox. No authentication: the server binds loopback.

=======  ==========================================  =============================================
Method   Path                                        Does
=======  ==========================================  =============================================
POST     /_sandbox/reset                             forget everything (204)
GET      /_sandbox/requests?route=&number=           received requests
GET      /_sandbox/lookups                           Lookup requests per number
GET      /_sandbox/lookups/<number>                  Lookup requests for one number
GET      /_sandbox/messages[/<sid>]                  stored messages
GET      /_sandbox/calls[/<sid>]                     stored calls, with ``twiml``
GET      /_sandbox/verifications                     verifications, with ``code``
GET      /_sandbox/executions[/<sid>]                stored Studio executions
GET      /_sandbox/verifications/code?to=            the code the latest verification expects
PUT      /_sandbox/verifications/code                ``{"code", "to"?, "sid"?}``: set the code (204)
GET      /_sandbox/faults                            active faults
POST     /_sandbox/faults                            ``{"kind", ...Fault fields}`` (201)
DELETE   /_sandbox/faults                            clear faults and rate limit (204)
PUT      /_sandbox/rate_limit                        ``{"rate_per_second", "burst"?, "route"?, "strict"?}``
DELETE   /_sandbox/rate_limit                        lift the rate limit (204)
POST     /_sandbox/numbers                           ``{e164: {fields}}`` overrides (204)
GET      /_sandbox/numbers/<number>?country=         the profile used for a number
GET      /_sandbox/callbacks                         settings, pending count, deliveries
PUT      /_sandbox/callbacks                         change settings (204)
POST     /_sandbox/callbacks/flush                   deliver queued events now
=======  ==========================================  =============================================
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import requests
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import BadRequest

if TYPE_CHECKING:
    from gatekeeper.sandbox.state import Sandbox


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _sandbox() -> Sandbox:
    sandbox: Sandbox = current_app.extensions["sandbox"]
    return sandbox


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ValueError("send a JSON object")
    return data


def _resource_routes(bp: Blueprint) -> None:
    """``GET`` the stored messages, calls and Studio executions: all, or one by SID."""

    @bp.get("/messages")
    def messages() -> Response:
        return _json({"messages": _sandbox().messages()})

    @bp.get("/messages/<sid>")
    def message(sid: str) -> Response:
        found = _sandbox().message(sid)
        return _json(found) if found else _json({"error": "no such message"}, 404)

    @bp.get("/calls")
    def calls() -> Response:
        return _json({"calls": _sandbox().calls()})

    @bp.get("/calls/<sid>")
    def call(sid: str) -> Response:
        found = _sandbox().call(sid)
        return _json(found) if found else _json({"error": "no such call"}, 404)

    @bp.get("/executions")
    def executions() -> Response:
        return _json({"executions": _sandbox().executions()})

    @bp.get("/executions/<sid>")
    def execution(sid: str) -> Response:
        found = _sandbox().execution(sid)
        return _json(found) if found else _json({"error": "no such execution"}, 404)


def control_blueprint() -> Blueprint:
    """The ``/_sandbox`` routes."""
    bp = Blueprint("sandbox_control", __name__, url_prefix="/_sandbox")

    @bp.errorhandler(ValueError)
    def _bad_value(exc: ValueError) -> Response:
        return _json({"error": str(exc)}, 400)

    @bp.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest) -> Response:
        return _json({"error": exc.description}, 400)

    @bp.post("/reset")
    def reset() -> Response:
        _sandbox().reset()
        return Response(status=204)

    @bp.get("/requests")
    def list_requests() -> Response:
        found = _sandbox().requests(request.args.get("route") or None, request.args.get("number") or None)
        return _json({"requests": [r.to_dict() for r in found]})

    @bp.get("/lookups")
    def lookup_counts() -> Response:
        return _json({"counts": _sandbox().lookup_counts()})

    @bp.get("/lookups/<number>")
    def lookup_count(number: str) -> Response:
        sandbox = _sandbox()
        return _json({"number": sandbox.normalize(number), "count": sandbox.lookup_count(number)})

    _resource_routes(bp)

    @bp.get("/verifications")
    def verifications() -> Response:
        return _json({"verifications": _sandbox().verifications()})

    @bp.get("/verifications/code")
    def verification_code() -> Response:
        to = request.args.get("to", "")
        code = _sandbox().verification_code(to, request.args.get("service_sid") or None)
        return _json({"to": to, "code": code}) if code else _json({"error": "no verification"}, 404)

    @bp.put("/verifications/code")
    def set_verification_code() -> Response:
        body = _body()
        _sandbox().set_verify_code(body.get("code", ""), to=body.get("to"), sid=body.get("sid"))
        return Response(status=204)

    @bp.get("/faults")
    def faults() -> Response:
        return _json({"faults": [f.to_dict() for f in _sandbox().faults.faults()]})

    @bp.post("/faults")
    def add_fault() -> Response:
        body = _body()
        kind = body.pop("kind", "")
        return _json(_sandbox().add_fault(str(kind), **body).to_dict(), 201)

    @bp.delete("/faults")
    def clear_faults() -> Response:
        _sandbox().clear_faults()
        return Response(status=204)

    @bp.put("/rate_limit")
    def set_rate_limit() -> Response:
        body = _body()
        rate = body.get("rate_per_second")
        burst = body.get("burst")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise ValueError("rate_per_second must be a number")
        if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int)):
            raise ValueError("burst must be an integer")
        strict = body.get("strict", False)
        if not isinstance(strict, bool):
            raise ValueError("strict must be true or false")
        _sandbox().set_rate_limit(float(rate), burst, str(body.get("route", "*")), strict=strict)
        return Response(status=204)

    @bp.delete("/rate_limit")
    def clear_rate_limit() -> Response:
        _sandbox().faults.clear_rate_limit()
        return Response(status=204)

    @bp.post("/numbers")
    def override_numbers() -> Response:
        _sandbox().override_numbers(_body())
        return Response(status=204)

    @bp.get("/numbers/<number>")
    def profile(number: str) -> Response:
        found = _sandbox().profile(number, request.args.get("country") or None)
        return _json(dataclasses.asdict(found))

    @bp.get("/callbacks")
    def callbacks() -> Response:
        sandbox = _sandbox()
        return _json(
            {
                "config": dataclasses.asdict(sandbox.callback_config),
                "pending": sandbox.dispatcher.pending(),
                "deliveries": [d.to_dict() for d in sandbox.callback_deliveries()],
            }
        )

    @bp.put("/callbacks")
    def configure_callbacks() -> Response:
        _sandbox().configure_callbacks(**_body())
        return Response(status=204)

    @bp.post("/callbacks/flush")
    def flush_callbacks() -> Response:
        return _json({"deliveries": [d.to_dict() for d in _sandbox().flush_callbacks()]})

    return bp


class SandboxControlClient:
    """Drives a sandbox in another process over ``/_sandbox``; answers are plain JSON values."""

    def __init__(self, base_url: str, *, timeout_seconds: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/") + "/_sandbox"
        self.timeout_seconds = timeout_seconds
        self._session = requests.Session()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._session.request(method, self.base_url + path, timeout=self.timeout_seconds, **kwargs)
        if response.status_code >= 400:
            detail = response.json().get("error", response.text) if response.content else response.reason
            raise ValueError(f"sandbox control {method} {path} failed ({response.status_code}): {detail}")
        return response.json() if response.content else None

    def reset(self) -> None:
        """Forget everything."""
        self._call("POST", "/reset")

    def requests(self, route: str | None = None, number: str | None = None) -> list[dict[str, Any]]:
        """Received requests (dicts)."""
        params = {k: v for k, v in (("route", route), ("number", number)) if v}
        found: list[dict[str, Any]] = self._call("GET", "/requests", params=params)["requests"]
        return found

    def lookup_count(self, number: str) -> int:
        """Lookup requests received for ``number``."""
        count: int = self._call("GET", f"/lookups/{number}")["count"]
        return count

    def messages(self) -> list[dict[str, Any]]:
        """Stored messages."""
        found: list[dict[str, Any]] = self._call("GET", "/messages")["messages"]
        return found

    def calls(self) -> list[dict[str, Any]]:
        """Stored calls, with ``twiml``."""
        found: list[dict[str, Any]] = self._call("GET", "/calls")["calls"]
        return found

    def executions(self) -> list[dict[str, Any]]:
        """Stored Studio executions."""
        found: list[dict[str, Any]] = self._call("GET", "/executions")["executions"]
        return found

    def verification_code(self, to: str) -> str:
        """The code the latest verification to ``to`` expects."""
        code: str = self._call("GET", "/verifications/code", params={"to": to})["code"]
        return code

    def set_verify_code(self, code: str, *, to: str | None = None, sid: str | None = None) -> None:
        """Set the code one verification (``sid``), one number (``to``) or everyone expects."""
        self._call("PUT", "/verifications/code", json={"code": code, "to": to, "sid": sid})

    def add_fault(self, kind: str, **options: Any) -> dict[str, Any]:
        """Inject a fault; see :class:`gatekeeper.sandbox.faults.Fault`."""
        fault: dict[str, Any] = self._call("POST", "/faults", json={"kind": kind, **options})
        return fault

    def clear_faults(self) -> None:
        """Remove faults and the rate limit."""
        self._call("DELETE", "/faults")

    def set_rate_limit(
        self, rate_per_second: float, burst: int | None = None, route: str = "*", *, strict: bool = False
    ) -> None:
        """Answer 20429 beyond ``rate_per_second`` (``strict``: in any one-second window, no burst)."""
        body = {"rate_per_second": rate_per_second, "burst": burst, "route": route, "strict": strict}
        self._call("PUT", "/rate_limit", json=body)

    def override_numbers(self, overrides: dict[str, dict[str, Any]]) -> None:
        """Add or change fixture numbers."""
        self._call("POST", "/numbers", json=overrides)

    def configure_callbacks(self, **changes: Any) -> None:
        """Change callback delivery settings."""
        self._call("PUT", "/callbacks", json=changes)

    def flush_callbacks(self) -> list[dict[str, Any]]:
        """Deliver queued status events now; returns the deliveries."""
        found: list[dict[str, Any]] = self._call("POST", "/callbacks/flush")["deliveries"]
        return found

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()
