"""Is this request from Twilio? ``X-Twilio-Signature`` over the public URL Twilio called.

The HMAC itself is twilio's :class:`~twilio.request_validator.RequestValidator`
(never re-derived here); this module supplies what it needs and names what
failed. The URL must be the one Twilio requested, byte for byte: behind a
TLS-terminating proxy the app sees ``http://internal:8080/...`` while Twilio
signed ``https://example.com/...``. Two ways to get it right:

* ``public_base_url`` — the public URL of the app's root; the request's raw
  path and query (``request.full_path``, which keeps ``%27`` encoded) are
  appended. Preferred: nothing depends on headers.
* ``trusted_proxy_hops`` — honour ``X-Forwarded-Proto/Host/Port/Prefix`` from
  that many proxies, through Werkzeug's ``ProxyFix`` run on a copy of the
  environ (the app itself is not changed). With 0 hops no header is trusted.

Without ``public_base_url`` the URL's host comes from the request, so it must be
one of ``allowed_hosts``: otherwise a request Twilio signed for another of the
account's webhook hosts verifies when replayed here with that ``Host``. The
blueprint refuses to be registered with neither set, unless the app is in debug
or testing mode (see :mod:`gatekeeper.webhooks.blueprint`).

A webhook Twilio signs with a *shared key* (the Webhooks configuration API's signing settings, a public
beta) carries ``X-Twilio-Webhooks-Signature-Settings: key=<id>,algorithm=HMAC_SHA256``: it is checked with
that key's secret from ``[webhooks] shared_keys`` and the header's algorithm, never with an auth token; a
key this app does not hold, or an algorithm twilio's validator does not know, is refused with its reason.
Without the header, the auth tokens and HMAC-SHA1, as always.

Twilio signs no timestamp, so a replayed request verifies; replays are stopped
by the idempotency store (see :mod:`gatekeeper.webhooks.events`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from twilio.request_validator import RequestValidator, compare, get_signature_algorithm
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import get_host

from gatekeeper.errors import ConfigError, InvalidArgument, InvalidSignature

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from werkzeug.wrappers import Request

    from gatekeeper.gate import Gatekeeper

log = logging.getLogger("gatekeeper.webhooks")

SIGNATURE_HEADER = "X-Twilio-Signature"
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
_ALGORITHMS = frozenset({"HMAC_SHA1", "HMAC_SHA256"})  # what twilio's RequestValidator computes
BODY_HASH_PARAM = "bodySHA256"
_FORM = "application/x-www-form-urlencoded"
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
# Werkzeug's safe set for a URL path (see werkzeug.sansio.utils.get_current_url), "%" kept as already quoted.
_PATH_SAFE = "!$&'()*+,/:;=@%"


def resolve_tokens(gate: Gatekeeper, auth_token: str | None = None) -> tuple[str, ...]:
    """The auth tokens a signature may be made with: the account's, then ``[webhooks] auth_tokens``.

    The account token is ``auth_token``, else ``[twilio] auth_token``, else the
    twilio client's password when the client logs in with the account SID. An
    API key's secret cannot check signatures, so with API-key auth and no token
    configured this raises :class:`~gatekeeper.errors.ConfigError`, unless ``[webhooks]
    shared_keys`` holds the keys every webhook is signed with (then none: ``()``).
    """
    settings = gate.settings
    primary = auth_token
    if primary is None and settings.twilio.auth_token is not None:
        primary = settings.twilio.auth_token.get_secret_value()
    username = getattr(gate.client, "username", None)
    if primary is None and isinstance(username, str) and username.startswith("AC"):
        password = getattr(gate.client, "password", None)
        primary = password if isinstance(password, str) and password else None
    extras = [t.get_secret_value() for t in settings.webhooks.auth_tokens]
    tokens = tuple(dict.fromkeys(t for t in (primary, *extras) if t))
    if not tokens and settings.webhooks.shared_keys:  # every webhook signed with a shared key: no token needed
        return ()
    if not tokens:
        how = (
            "the twilio client authenticates with an API key, whose secret cannot validate webhook signatures"
            if isinstance(username, str) and username.startswith("SK")
            else "no auth token is configured"
        )
        raise ConfigError(
            f"webhooks need the account's auth token to check X-Twilio-Signature, but {how}: set [twilio] "
            "auth_token (or TWILIO_AUTH_TOKEN), or pass auth_token= to create_blueprint()",
            key="twilio.auth_token",
        )
    return tokens


class SignatureVerifier:
    """Checks ``X-Twilio-Signature`` against any of ``tokens``; raises :class:`InvalidSignature` with a reason.

    Reasons: ``missing_header``, ``mismatch`` (wrong token, URL or parameters),
    ``body_hash_mismatch`` (a JSON body that is not the one ``bodySHA256`` names),
    ``malformed_body_hash`` (a ``bodySHA256`` that is not 64 hex digits), ``unsigned_body``
    (a body the signature does not cover), ``body_not_utf8``, ``host_not_allowed`` (a
    ``Host`` outside ``allowed_hosts``), ``unverifiable`` (anything else that stops the check:
    a request that cannot be checked is refused, never answered 500).
    """

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        public_base_url: str | None = None,
        trusted_proxy_hops: int = 0,
        allowed_hosts: Iterable[str] = (),
        url_fragment: str = "",
        shared_keys: Mapping[str, str] | None = None,
    ) -> None:
        self._validators = [RequestValidator(t) for t in tokens]
        self._shared = {key: RequestValidator(secret) for key, secret in (shared_keys or {}).items()}
        if not self._validators and not self._shared:
            raise InvalidArgument("at least one auth token (or shared key) is needed")
        self._base = public_base_url.rstrip("/") if public_base_url else None
        self._hops = trusted_proxy_hops
        self._hosts = frozenset(h.lower().rstrip(".") for h in allowed_hosts)
        self._fragment = url_fragment.lstrip("#")

    @property
    def pinned(self) -> bool:
        """Whether the URL checked is pinned: a configured base URL, or a host from ``allowed_hosts``."""
        return self._base is not None or bool(self._hosts)

    def __repr__(self) -> str:  # never show the tokens
        return (
            f"SignatureVerifier(tokens={len(self._validators)}, shared_keys={sorted(self._shared)}, "
            f"base={self._base!r}, hops={self._hops})"
        )

    def public_url(self, request: Request) -> str:
        """The URL Twilio requested: configured base or (trusted) forwarded headers, plus the raw path and query."""
        path = request.full_path
        if path.endswith("?"):  # Werkzeug adds "?" even without a query; Twilio's URL has none
            path = path[:-1]
        if self._base is not None:
            return self._base + path
        environ = self._forwarded(request.environ) if self._hops else request.environ
        scheme = str(environ.get("wsgi.url_scheme", "http"))
        root = quote(str(environ.get("SCRIPT_NAME", "")).rstrip("/"), safe=_PATH_SAFE)
        host = get_host(environ)
        if self._hosts and _hostname(host) not in self._hosts:
            raise InvalidSignature("host_not_allowed")
        return f"{scheme}://{host}{root}{path}"

    def _forwarded(self, environ: Mapping[str, Any]) -> dict[str, Any]:
        """The environ as ``ProxyFix`` would rewrite it for ``trusted_proxy_hops`` proxies (on a copy)."""
        seen: dict[str, Any] = {}

        def capture(env: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            seen.update(env)
            return []

        hops = self._hops
        fix = ProxyFix(capture, x_for=0, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops)
        fix(dict(environ), cast("StartResponse", None))  # capture never starts a response
        return seen

    def verify(self, request: Request, body: bytes, form: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidSignature` unless the request is signed by one of the tokens.

        ``body`` is the raw body and ``form`` its parsed form fields (a MultiDict,
        so repeated fields all count); with ``bodySHA256`` in the query the raw
        body is checked against that hash instead.
        """
        try:
            self._verify(request, body, form)
        except InvalidSignature:
            raise
        except Exception as exc:  # twilio's validator, a header or query it cannot read: refused, never a 500
            why = type(exc).__name__
            log.warning("%s %s: signature not checkable (%s): refused", request.method, request.path, why)
            raise InvalidSignature("unverifiable") from exc

    def _verify(self, request: Request, body: bytes, form: Mapping[str, Any]) -> None:
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signature:
            raise InvalidSignature("missing_header")
        try:
            url = self.public_url(request)
        except UnicodeDecodeError:  # a query string that is not UTF-8 was not signed by Twilio
            raise InvalidSignature("mismatch") from None
        validators, algorithm = self._signers(request.headers.get(SETTINGS_HEADER))
        expected_hash = request.args.get(BODY_HASH_PARAM)
        if expected_hash is not None:
            if not _SHA256_HEX.fullmatch(expected_hash):  # twilio's validator fails on an empty one
                raise InvalidSignature("malformed_body_hash")
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidSignature("body_not_utf8") from None
            if any(v.validate(u, text, signature, algorithm) for v in validators for u in self._signed(url)):
                return
            if validators[0].compute_hash(text) != expected_hash:
                raise InvalidSignature("body_hash_mismatch")
            raise InvalidSignature("mismatch")
        if body and request.mimetype != _FORM:
            # Twilio signs a form's fields, or a JSON body through bodySHA256; anything else is not covered.
            raise InvalidSignature("unsigned_body")
        if not any(_form_signed(v, u, form, signature, algorithm) for v in validators for u in self._signed(url)):
            raise InvalidSignature("mismatch")

    def _signers(self, settings: str | None) -> tuple[list[RequestValidator], str | None]:
        """Who may have signed a request, and with which algorithm: the shared key its settings header names (and
        that header's algorithm), or, with no header, the auth tokens and HMAC-SHA1."""
        if not settings:
            if not self._validators:
                raise InvalidSignature("unsigned_by_shared_key")  # only shared keys are configured
            return self._validators, None
        algorithm = get_signature_algorithm(settings).upper()
        if algorithm not in _ALGORITHMS:
            raise InvalidSignature("unsupported_algorithm")
        fields = dict(part.strip().partition("=")[::2] for part in settings.split(","))
        key = fields.get("key", "").strip()
        if key not in self._shared:
            log.error("a webhook was signed with shared key %r, which [webhooks] shared_keys does not hold", key[:64])
            raise InvalidSignature("unknown_shared_key")
        return [self._shared[key]], algorithm

    def _signed(self, url: str) -> tuple[str, ...]:
        """The URLs Twilio may have signed: the one requested, and, with connection overrides configured, the
        same with them as its fragment (a server never receives the fragment; Twilio's docs do not say whether
        the signature covers it, so either is accepted: both are signed with the account's token)."""
        return (url, f"{url}#{self._fragment}") if self._fragment else (url,)


def _form_signed(
    validator: RequestValidator, url: str, form: Mapping[str, Any], signature: str, algorithm: str | None
) -> bool:
    """twilio's check of a form request, the common case first: Twilio signs the URL as it called it, so one HMAC
    of that URL usually settles it; only when it does not, ``validate`` tries it with and without the port (two
    more). Both are twilio's own code: the HMAC is never derived here."""
    return bool(compare(validator.compute_signature(url, form, algorithm), signature)) or bool(
        validator.validate(url, form, signature, algorithm)
    )


def _hostname(host: str) -> str:
    """``host`` (a Host header: name or IP, maybe a port) without its port, lower case."""
    host = host.lower()
    if host.startswith("["):  # [::1]:8080
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0].rstrip(".") if host.count(":") == 1 else host.rstrip(".")

