"""The Twilio-compatible emulator: Lookup v2, Messages, Calls, Verify and Studio over HTTP.

``create_app()`` returns a Flask app that speaks Twilio's paths at its root (form-encoded
parameters, HTTP Basic auth, Twilio's JSON and error bodies), so the real twilio SDK can
talk to it through :class:`gatekeeper.sandbox.transport.SandboxHttpClient`. The control
API lives under ``/_sandbox`` (see :mod:`gatekeeper.sandbox.control`) and in
``app.extensions["sandbox"]``, a :class:`~gatekeeper.sandbox.state.Sandbox`.

Every request to a Twilio route is recorded, then passes the rate limit and the injected
faults, then authentication, then the handler.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from gatekeeper.models import LOOKUP_FIELDS
from gatekeeper.phone import mask
from gatekeeper.sandbox.addresses import channel_address, channel_profile, endpoint_profile, parse_address
from gatekeeper.sandbox.config import Account, SandboxConfig
from gatekeeper.sandbox.control import control_blueprint
from gatekeeper.sandbox.errors import (
    TwilioApiError,
    create_error,
    error_body,
    invalid_parameter,
    not_found,
    unauthorized,
    verify_error,
)
from gatekeeper.sandbox.faults import DROP_KEY, DropMiddleware
from gatekeeper.sandbox.numbers import MAGIC_FROM_ERRORS, NumberProfile
from gatekeeper.sandbox.resources import (
    Verification,
    account_json,
    attempt_channel,
    call_json,
    iso8601,
    lookup_json,
    message_json,
    new_sid,
    verify_lookup,
)
from gatekeeper.sandbox.state import RecordedRequest, Sandbox
from gatekeeper.sandbox.studio import FLOW_SID, check_contacts, execution_json, parse_parameters

_log = logging.getLogger("gatekeeper.sandbox")

_ENDPOINT_ROUTES = {
    "lookup": "lookup",
    "accounts_fetch": "accounts.fetch",
    "messages_create": "messages.create",
    "messages_fetch": "messages.fetch",
    "calls_create": "calls.create",
    "calls_fetch": "calls.fetch",
    "verifications_create": "verifications.create",
    "verification_checks_create": "verification_checks.create",
    **{f"executions_create_{v}": "executions.create" for v in ("v1", "v2")},
    **{f"executions_fetch_{v}": "executions.fetch" for v in ("v1", "v2")},
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CODE = re.compile(r"^[0-9A-Za-z]{4,10}$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")


def _sid_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{prefix}[0-9a-fA-F]{{32}}$")


_MG_SID, _VA_SID = _sid_pattern("MG"), _sid_pattern("VA")


def create_app(
    config: SandboxConfig | None = None,
    *,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Flask:
    """Build the emulator app. ``clock``/``sleep`` default to ``time.time``/``time.sleep``."""
    sandbox = Sandbox(config, clock=clock or time.time, sleep=sleep or time.sleep)
    app = Flask("gatekeeper.sandbox")
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    app.extensions["sandbox"] = sandbox
    app.before_request(_before)
    app.after_request(_after)
    app.register_error_handler(TwilioApiError, _twilio_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _crash)
    app.add_url_rule("/v2/PhoneNumbers/<number>", "lookup", _lookup, methods=["GET"])
    account = "/2010-04-01/Accounts/<account_sid>"
    app.add_url_rule(f"{account}.json", "accounts_fetch", _fetch_account, methods=["GET"])
    app.add_url_rule(f"{account}/Messages.json", "messages_create", _create_message, methods=["POST"])
    app.add_url_rule(f"{account}/Messages/<sid>.json", "messages_fetch", _fetch_message, methods=["GET"])
    app.add_url_rule(f"{account}/Calls.json", "calls_create", _create_call, methods=["POST"])
    app.add_url_rule(f"{account}/Calls/<sid>.json", "calls_fetch", _fetch_call, methods=["GET"])
    app.add_url_rule(
        "/v2/Services/<service_sid>/Verifications",
        "verifications_create",
        _create_verification,
        methods=["POST"],
    )
    app.add_url_rule(
        "/v2/Services/<service_sid>/VerificationCheck",
        "verification_checks_create",
        _check_verification,
        methods=["POST"],
    )
    for version in ("v1", "v2"):  # the same Executions resource; v1 lacks two fields
        flow = f"/{version}/Flows/<flow_sid>/Executions"
        app.add_url_rule(flow, f"executions_create_{version}", _create_execution, methods=["POST"])
        app.add_url_rule(f"{flow}/<sid>", f"executions_fetch_{version}", _fetch_execution, methods=["GET"])
    app.register_blueprint(control_blueprint())
    app.wsgi_app = DropMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _sandbox() -> Sandbox:
    sandbox: Sandbox = current_app.extensions["sandbox"]
    return sandbox


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON with keys in Twilio's order (Flask's jsonify would sort them)."""
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers.update(headers or {})
    return response


# -- request pipeline -----------------------------------------------------------------------------


def _before() -> Response | None:
    route = _ENDPOINT_ROUTES.get(request.endpoint or "")
    if route is None:  # control API, or a path with no route (answered 404 by Flask)
        return None
    sandbox = _sandbox()
    number = _request_number(sandbox, route)
    auth = request.authorization
    g.record = sandbox.record(
        RecordedRequest(
            id=0,
            method=request.method,
            path=request.path,
            route=route,
            number=number,
            query={k: request.args.getlist(k) for k in request.args},
            form={k: request.form.getlist(k) for k in request.form},
            username=auth.username if auth else None,
            received_at=sandbox.clock(),
        )
    )
    decision = sandbox.decide_faults(route, number)
    if decision.retry_after_seconds is not None:
        retry_after = str(decision.retry_after_seconds)
        raise TwilioApiError(429, 20429, "Too Many Requests", {"Retry-After": retry_after})
    if decision.latency_seconds > 0:
        sandbox.sleep(decision.latency_seconds)
    fault = decision.fault
    if fault is not None:
        _log.info("sandbox fault %s on %s", fault.kind, route)
        if fault.kind == "drop":
            request.environ[DROP_KEY] = True
            return Response(status=500)
        headers = {"Retry-After": str(fault.retry_after_seconds)} if fault.status == 429 else {}
        raise TwilioApiError(fault.status, fault.code, fault.message, headers)
    account = sandbox.authenticate(auth.username if auth else None, auth.password if auth else None)
    if account is None:
        raise unauthorized()
    owner = sandbox.owner(account, (request.view_args or {}).get("account_sid"))
    if owner is None:  # another account's path (a parent may act on its subaccounts')
        raise not_found(request.path)
    g.account = owner
    return None


def _request_number(sandbox: Sandbox, route: str) -> str | None:
    if route == "lookup":
        raw = (request.view_args or {}).get("number", "")
        country = request.args.get("CountryCode") or None
        return sandbox.normalize(raw, country if country and _COUNTRY.match(country) else None)
    to = request.form.get("To") if request.method == "POST" else None
    if not to:
        return None
    address = parse_address(to)
    return address.value if address.endpoint else sandbox.normalize(to)


def _after(response: Response) -> Response:
    record: RecordedRequest | None = g.get("record")
    if record is not None and not request.environ.get(DROP_KEY):
        record.status = response.status_code
    if record is not None:
        response.headers["Twilio-Request-Id"] = "RQ" + f"{record.id:032x}"
    return response


def _twilio_error(exc: TwilioApiError) -> Response:
    return json_response(exc.body(), exc.status, exc.headers)


_HTTP_CODES = {404: 20404, 405: 20004}


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 404:
        return json_response(not_found(request.path).body(), 404)
    message = exc.description or exc.name
    return json_response(error_body(status, _HTTP_CODES.get(status, 20001), message), status)


def _crash(exc: Exception) -> Response:
    # A real bug: say so in the log (type and route only; messages may hold numbers).
    _log.error(
        "sandbox bug: %s while handling %s %s",
        type(exc).__name__,
        request.method,
        request.endpoint or "unknown route",
        exc_info=_log.isEnabledFor(logging.DEBUG),
    )
    return json_response(error_body(500, 20500, "Internal Server Error"), 500)


# -- Lookup v2 ------------------------------------------------------------------------------------


def _lookup(number: str) -> Response:
    fields = [f.strip() for f in request.args.get("Fields", "").split(",") if f.strip()]
    unknown = [f for f in fields if f not in LOOKUP_FIELDS]
    if unknown:
        raise invalid_parameter("Fields", ", ".join(unknown))
    country = request.args.get("CountryCode") or None
    if country is not None and not _COUNTRY.match(country):
        raise invalid_parameter("CountryCode", country)
    profile = _sandbox().profile(number, country)
    _log.debug("lookup %s fields=%s valid=%s", mask(profile.e164), ",".join(fields) or "-", profile.valid)
    return json_response(lookup_json(profile, fields, request.args))


# -- Messages ---------------------------------------------------------------------------------------


def _create_message(account_sid: str) -> Response:
    form = request.form
    sandbox, account = _sandbox(), _account()
    to = form.get("To", "").strip()
    from_ = form.get("From", "").strip() or None
    service = form.get("MessagingServiceSid", "").strip() or None
    body = form.get("Body", "")
    media = form.getlist("MediaUrl")
    if not to:
        raise TwilioApiError(400, 21604, "A 'To' phone number is required.")
    if from_ is None and service is None:
        raise TwilioApiError(400, 21603, "A 'From' phone number is required.")
    if service is not None and not _MG_SID.match(service):
        raise TwilioApiError(400, 21701, f"The Messaging Service Sid {service} is invalid.")
    if not body and not media and not form.get("ContentSid"):
        raise TwilioApiError(400, 21602, "Message body is required.")
    if len(body) > 1600:
        raise TwilioApiError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    if len(media) > 10:
        raise TwilioApiError(400, 21623, "Too many media URLs: at most 10 are allowed.")
    status_callback = _callback_url(form.get("StatusCallback"), 21609, "StatusCallback")
    schedule = form.get("ScheduleType")
    if schedule is not None and (schedule != "fixed" or not form.get("SendAt") or service is None):
        # Twilio schedules only with a Messaging Service, schedule_type "fixed" and a send_at
        raise invalid_parameter("ScheduleType", schedule)
    if from_ in MAGIC_FROM_ERRORS:
        raise create_error(MAGIC_FROM_ERRORS[from_], to, from_)
    to, profile = _message_target(sandbox, to, from_)
    resource = message_json(
        sid=new_sid("MM" if media else "SM"),
        account_sid=account.sid,
        to=to,
        from_=from_,
        body=body,
        num_media=len(media),
        messaging_service_sid=service,
        now=sandbox.clock(),
    )
    if schedule is not None:
        resource["status"] = "scheduled"  # the sandbox sends it at once (its lifecycle) but answers as Twilio does
    sandbox.add_message(resource, profile=profile, account=account, status_callback=status_callback)
    _log.info("message %s accepted to %s", resource["sid"], mask(profile.e164))
    return json_response(resource, 201)


def _message_target(sandbox: Sandbox, to: str, from_: str | None) -> tuple[str, NumberProfile]:
    """The ``to`` a message answers and the profile its lifecycle follows, or the create error.

    SIP and Client addresses are Voice-only (21211). Messenger needs a Messenger sender on both
    ends (21910 otherwise) and has no number profile. WhatsApp/RCS ignore SMS-only rules.
    """
    target, sender = parse_address(to), parse_address(from_ or "")
    if target.kind in ("sip", "client") or (target.kind == "messenger" and not target.valid):
        raise create_error(21211, to, from_ or "")
    if (target.kind == "messenger") != (sender.kind == "messenger"):
        raise create_error(21910, to, from_ or "")
    if target.kind == "messenger":
        if not sender.valid:
            raise create_error(21212, to, from_ or "")
        return target.value, endpoint_profile(target.value)
    profile = channel_profile(sandbox.profile(to), target.kind)
    if profile.create_error is not None:
        raise create_error(profile.create_error, to, from_ or "")
    if not profile.valid:
        raise create_error(21211, to, from_ or "")
    return channel_address(to, profile.e164), profile


def _fetch_message(account_sid: str, sid: str) -> Response:
    found = _sandbox().get_message(account_sid, sid)
    if found is None:
        raise not_found(request.path)
    return json_response(found)


# -- Calls ------------------------------------------------------------------------------------------


def _create_call(account_sid: str) -> Response:
    form = request.form
    sandbox, account = _sandbox(), _account()
    to = form.get("To", "").strip()
    from_ = form.get("From", "").strip()
    if not to:
        raise TwilioApiError(400, 21201, "No 'To' number is specified")
    if not from_:
        raise TwilioApiError(400, 21213, "No 'From' number is specified")
    url = _callback_url(form.get("Url"), 21205, "Url")
    twiml = form.get("Twiml") or None
    if url is None and twiml is None and not form.get("ApplicationSid"):
        raise TwilioApiError(400, 21205, "Either a 'Url', 'Twiml' or 'ApplicationSid' parameter is required.")
    if url is None and twiml is not None:
        _check_twiml(twiml)  # Twilio ignores Twiml when Url is also given
    status_callback = _callback_url(form.get("StatusCallback"), 21609, "StatusCallback")
    if from_ == "+15005550001":
        raise create_error(21212, to, from_)
    to, profile = _call_target(sandbox, to, from_)
    resource = call_json(
        sid=new_sid("CA"),
        account_sid=account.sid,
        to=to,
        from_=from_,
        to_profile=profile,
        now=sandbox.clock(),
    )
    events = Sandbox.call_events_valid(form.getlist("StatusCallbackEvent"))
    sandbox.add_call(
        resource,
        profile=profile,
        account=account,
        twiml=None if url else twiml,
        url=url,
        status_callback=status_callback,
        events=events,
    )
    _log.info("call %s queued to %s", resource["sid"], mask(to))
    return json_response(resource, 201)


def _call_target(sandbox: Sandbox, to: str, from_: str) -> tuple[str, NumberProfile]:
    """The ``to`` a call answers (a SIP URI or Client identity as given, else E.164) and its profile."""
    target = parse_address(to)
    if target.kind == "messenger":  # a messaging channel, not a Voice destination
        raise create_error(21211, to, from_)
    if target.kind in ("sip", "client"):
        if not target.valid:
            what = "SIP URI (sip:user@host)" if target.kind == "sip" else "Client identifier (client:name)"
            raise TwilioApiError(400, 21211, f"Invalid 'To' Phone Number: {to!r} is not a valid {what}.")
        return target.value, endpoint_profile(target.value)
    profile = sandbox.profile(to)
    if profile.call_create_error is not None:
        raise create_error(profile.call_create_error, to, from_)
    if not profile.valid:
        raise create_error(21211, to, from_)
    return profile.e164, profile


def _fetch_call(account_sid: str, sid: str) -> Response:
    found = _sandbox().get_call(account_sid, sid)
    if found is None:
        raise not_found(request.path)
    return json_response(found)


def _check_twiml(twiml: str) -> None:
    # DTDs are refused before parsing, so the stdlib parser never expands entities.
    if "<!DOCTYPE" in twiml.upper() or "<!ENTITY" in twiml.upper():
        raise TwilioApiError(400, 12100, "Document parse failure: DTDs are not allowed in TwiML.")
    try:
        root = ElementTree.fromstring(twiml)  # noqa: S314  (no DTD, see above)
    except ElementTree.ParseError as exc:
        detail = f"Document parse failure: Twiml is not well-formed XML ({exc})."
        raise TwilioApiError(400, 12100, detail) from exc
    if root.tag != "Response":
        raise TwilioApiError(400, 12100, "Document parse failure: the root element must be <Response>.")


# -- Verify -----------------------------------------------------------------------------------------


def _create_verification(service_sid: str) -> Response:
    if not _VA_SID.match(service_sid):
        raise not_found(request.path)
    form = request.form
    sandbox, account = _sandbox(), _account()
    to = form.get("To", "").strip()
    channel = form.get("Channel", "").strip()
    if not to:
        raise invalid_parameter("To")
    if channel not in ("sms", "call", "email", "whatsapp"):
        raise invalid_parameter("Channel", channel)
    custom = form.get("CustomCode") or None
    if custom is not None and not _CODE.match(custom):
        raise invalid_parameter("CustomCode", "4 to 10 letters or digits")
    to, lookup = _verification_target(sandbox, to, channel)
    now = sandbox.clock()
    attempt = {"attempt_sid": new_sid("VL"), "channel": attempt_channel(channel), "time": iso8601(now)}
    with sandbox.lock:
        verification = sandbox.pending_verification(account.sid, service_sid, to=to)
        if verification is not None:
            if len(verification.attempts) >= 5:
                raise TwilioApiError(429, 60203, "Max send attempts reached")
            verification.channel, verification.updated = channel, now
            verification.attempts.append(attempt)
            if custom is not None:
                verification.code = custom
        else:
            verification = Verification(
                sid=new_sid("VE"),
                service_sid=service_sid,
                account_sid=account.sid,
                to=to,
                channel=channel,
                code=sandbox.code_for(to, custom),
                created=now,
                updated=now,
                lookup=lookup,
                amount=form.get("Amount") or None,
                payee=form.get("Payee") or None,
                attempts=[attempt],
            )
        sandbox.save_verification(verification)
        body = verification.to_json()
    _log.info("verification %s pending for %s via %s", verification.sid, mask(to), channel)
    return json_response(body, 201)


def _verification_target(sandbox: Sandbox, to: str, channel: str) -> tuple[str, dict[str, Any]]:
    """The normalized ``To`` and the ``lookup`` object, or the error Verify answers."""
    if channel == "email":
        if not _EMAIL.match(to):
            raise invalid_parameter("To", "not an email address")
        return to, verify_lookup(None)
    profile = sandbox.profile(to)
    if not profile.valid:
        raise invalid_parameter("To", to)
    if profile.verify_error is not None:
        raise verify_error(profile.verify_error)
    if channel == "sms" and profile.line_type == "landline":
        raise TwilioApiError(403, 60205, "SMS is not supported by landline phone number")
    return profile.e164, verify_lookup(profile)


def _check_verification(service_sid: str) -> Response:
    if not _VA_SID.match(service_sid):
        raise not_found(request.path)
    form = request.form
    sandbox, account = _sandbox(), _account()
    code = form.get("Code", "").strip()
    to = form.get("To", "").strip() or None
    verification_sid = form.get("VerificationSid", "").strip() or None
    if not code:
        raise invalid_parameter("Code")
    if to is None and verification_sid is None:
        raise TwilioApiError(400, 60200, "Either a 'To' or a 'VerificationSid' parameter must be specified.")
    if to is not None and "@" not in to:
        to = sandbox.normalize(to)
    with sandbox.lock:
        verification = sandbox.pending_verification(account.sid, service_sid, to=to, sid=verification_sid)
        if verification is None:
            raise not_found(request.path)
        verification.checks += 1
        verification.updated = sandbox.clock()
        if verification.checks > 5:
            verification.status = "max_attempts_reached"
            raise TwilioApiError(429, 60202, "Max check attempts reached")
        if hmac.compare_digest(code.encode(), verification.code.encode()):
            verification.status = "approved"
        body = verification.check_json()
    return json_response(body, 200)


# -- Studio v1 and v2 -----------------------------------------------------------------------------------


def _create_execution(flow_sid: str) -> Response:
    if not FLOW_SID.match(flow_sid):
        raise not_found(request.path)
    form = request.form
    sandbox, account = _sandbox(), _account()
    to, from_ = form.get("To", "").strip(), form.get("From", "").strip()
    check_contacts(to, from_)
    parameters = parse_parameters(form.get("Parameters"))
    target = parse_address(to)
    if target.kind in ("sip", "client") or not target.valid:
        raise create_error(21211, to, from_)
    if not target.endpoint:  # a number or a phone-based channel: the number must be valid
        profile = sandbox.profile(to)
        if not profile.valid:
            raise create_error(21211, to, from_)
        to = channel_address(to, profile.e164)
    record: RecordedRequest = g.record
    resource = execution_json(
        sid=new_sid("FN"),
        account_sid=account.sid,
        flow_sid=flow_sid,
        contact_sid=new_sid("FX"),
        to=to,
        from_=from_,
        parameters=parameters,
        initiated_by="RQ" + f"{record.id:032x}",
        now=sandbox.clock(),
        version=request.path.split("/", 2)[1],
    )
    sandbox.add_execution(resource)
    _log.info("execution %s of flow %s started for %s", resource["sid"], flow_sid, mask(to))
    return json_response(resource, 201)


def _fetch_execution(flow_sid: str, sid: str) -> Response:
    found = _sandbox().get_execution(_account().sid, flow_sid, sid)
    if found is None:
        raise not_found(request.path)
    return json_response(found)


# -- helpers ----------------------------------------------------------------------------------------


def _account() -> Account:
    account: Account = g.account
    return account


def _fetch_account(account_sid: str) -> Response:
    """The account on the path (the caller's own or one of its subaccounts), its auth token never shown."""
    return json_response(account_json(_account(), now=_sandbox().clock()))


def _callback_url(value: str | None, code: int, name: str) -> str | None:
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TwilioApiError(400, code, f"The {name} '{value}' is not a valid URL.")
    return value
