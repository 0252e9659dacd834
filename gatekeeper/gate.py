"""The Gatekeeper: runs normalize → suppress → enrich → decide → act, and audits each decision."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, NamedTuple

from pydantic import TypeAdapter
from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from gatekeeper import metrics, router
from gatekeeper import phone as phones
from gatekeeper import policy as policies
from gatekeeper.channels import email as email_channel
from gatekeeper.channels import sms, totp, verify, voice
from gatekeeper.channels.base import SendPolicy
from gatekeeper.errors import ConfigError, IdempotencyConflict, LookupUnavailable, StoreUnavailable
from gatekeeper.lookup import Handle, Held, LookupConfig, LookupService, local_facts
from gatekeeper.memo import Memo
from gatekeeper.models import Action, Decision, Outcome, Phone, PhoneFacts, Purpose, StatusRecord
from gatekeeper.policy import Policy, Verdict
from gatekeeper.retries import Backoff
from gatekeeper.router import Channel
from gatekeeper.settings import Settings
from gatekeeper.stores.base import ACCOUNT_SCOPE, SUPPRESSION_WRITES, AuditEntry, Stores

log = logging.getLogger("gatekeeper")

_OUTCOME = TypeAdapter(Outcome)
#: Routed decisions kept per gate (see Gatekeeper._evaluate); past this the oldest goes first.
_MEMO_MAX = 10_000


class _Memo(NamedTuple):
    """A decision routed from cached facts, good while the Lookup service still holds those facts.

    ``clear_at`` is the suppression stores' write counts when the number was last read clear (None
    when a store keeps no count): while they stand still the number is still clear.
    """

    decision: Decision
    phone: Phone
    policy: Policy
    scopes: tuple[str, ...]
    holder: Mapping[Handle, Held]
    handle: Handle
    held: Held
    clear_at: tuple[object, ...] | None
    pseudonyms: tuple[str, str]  # the number as the audit shows it: masked, hashed
    counter: Any  # the decisions counter for this decision's labels


# Verify's channel names in the router's words.
_VERIFY_CHANNELS: dict[str, Channel] = {"sms": "sms", "call": "voice", "voice": "voice", "email": "email"}


class Gatekeeper:
    """Decides whether and how to reach a number, then acts.

    ``Gatekeeper(twilio_client)`` uses built-in defaults and reads no file or
    environment; :meth:`from_settings` builds everything from :class:`Settings`.
    """

    def __init__(
        self,
        twilio_client: Client,
        *,
        settings: Settings | None = None,
        policy: Mapping[str, Policy] | None = None,
        stores: Stores | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = twilio_client
        self.settings = settings or Settings()
        s = self.settings
        resolved = s.policies()
        if policy is not None:
            unknown = set(policy) - set(resolved)
            if unknown:
                raise ConfigError(
                    f"policy for unknown purpose(s) {sorted(unknown)}; use 'notify' or 'mfa'", key="policy"
                )
            resolved.update(policy)
        self.policies: dict[str, Policy] = resolved
        self.stores = stores or Stores.memory(max_entries=s.cache.max_entries)
        self.clock = clock
        self.sleep = sleep
        self.default_country = s.lookup.default_country_code
        self.lookup = LookupService(
            twilio_client,
            self.stores.cache,
            LookupConfig(
                positive_ttl_seconds=s.cache.ttl_seconds,
                negative_ttl_seconds=s.cache.negative_ttl_seconds,
                field_ttl_seconds=s.lookup.field_ttl_seconds,
                timeout_seconds=s.lookup.timeout_ms / 1000,
                max_retries=s.lookup.max_retries,
                retry_backoff_ms=s.lookup.retry_backoff_ms,
                retry_jitter_ms=s.lookup.retry_jitter_ms,
                max_retry_after_ms=s.lookup.max_retry_after_ms,
                fill_wait_seconds=s.lookup.fill_wait_ms / 1000,
                cache_enabled=s.cache.enabled,
            ),
            clock=clock,
            sleep=sleep,
        )
        self.send_policy = SendPolicy(
            max_retries=s.twilio.max_send_retries,
            backoff=Backoff(base_ms=250, jitter_ms=250, max_retry_after_ms=5_000),
            sleep=sleep,
        )
        self._hash_key = s.audit.hash_key.get_secret_value().encode() if s.audit.hash_key else b""
        self._scope_sender = s.webhooks.opt_out_scope == "sender"
        self._memo: Memo[tuple[object, ...], _Memo] = Memo(_MEMO_MAX)
        self._audit_on = s.audit.enabled
        attempts = s.twilio.max_send_retries + 1
        self._lease_seconds = max(60.0, 2 * attempts * (s.twilio.timeout_ms / 1000 + 5))

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, twilio_client: Client | None = None, **kwargs: Any
    ) -> Gatekeeper:
        """Build the Twilio client and the stores that ``settings`` describe."""
        settings = settings or Settings.load()
        client = twilio_client or build_twilio_client(settings)
        stores = kwargs.pop("stores", None) or build_stores(settings)
        return cls(client, settings=settings, stores=stores, **kwargs)

    def close(self) -> None:
        for closer in self.stores.closers:
            closer()

    # -- deciding ------------------------------------------------------------------
    def decide(
        self,
        number: str,
        purpose: Purpose = "notify",
        country: str | None = None,
        *,
        channel: Channel | None = None,
        sender: str | None = None,
        email: str | None = None,
    ) -> Decision:
        """The decision for one number, without acting. Audited."""
        return self._evaluate(number, purpose, country, channel=channel, sender=sender, have_email=bool(email))

    def _policy(self, purpose: str) -> Policy:
        try:
            return self.policies[purpose]
        except KeyError:
            raise ValueError(f"purpose must be 'notify' or 'mfa', not {purpose!r}") from None

    def _scopes(self, sender: str | None, country: str | None) -> tuple[str, ...]:
        if not self._scope_sender or not sender:
            return (ACCOUNT_SCOPE,)
        return (ACCOUNT_SCOPE, phones.sender_scope(sender, country or self.default_country))

    def _evaluate(
        self,
        number: str,
        purpose: Purpose,
        country: str | None,
        *,
        channel: Channel | None = None,
        sender: str | None = None,
        strict: bool = False,
        reroute_landline: bool = False,
        have_email: bool = False,
    ) -> Decision:
        pol = self.policies.get(purpose) or self._policy(purpose)
        t0 = time.perf_counter()
        key = (number, purpose, country, channel, sender, strict, reroute_landline, have_email)
        try:
            memo, keyable = self._memo.get(key), True
        except TypeError:  # an argument that cannot be a key (a list for a country…): decided the long way
            memo, keyable = None, False
        if (
            memo is not None
            and memo.policy is pol
            and memo.held[0] > self.clock()
            and memo.holder.get(memo.handle) is memo.held
        ):
            return self._replay(key, memo, channel, t0)
        phone = phones.normalize(number, country or self.default_country)
        facts: PhoneFacts | None = None
        clear_at: tuple[object, ...] | None = None
        scopes: tuple[str, ...] = ()
        lookup_error: str | None = None
        t_norm = t_supp = t_enrich = time.perf_counter()
        verdict = policies.screen_number(phone, pol)
        if verdict is None:
            clear_at, scopes = self._write_counts(), self._scopes(sender, country)
            verdict = self._suppress(phone, pol, scopes)
            t_supp = t_enrich = time.perf_counter()
        if verdict is None:
            facts, lookup_error = self._enrich(phone, pol)
            t_enrich = time.perf_counter()
            verdict = policies.evaluate(facts, pol, lookup_error=lookup_error)
        if facts is None:
            decision = router.refusal(phone.e164 or phone.raw, purpose, verdict, None, pol)
        else:
            decision = router.route(
                verdict,
                facts,
                purpose,
                pol,
                channel=channel,
                strict=strict,
                reroute_landline=reroute_landline,
                have_email=have_email,
            )
        counter = metrics.decision_counter(purpose, decision.action, decision.twilio_code)
        pseudonyms = phones.pseudonyms(phone.e164 or phone.raw, self._hash_key)
        if decision.cache_hit and lookup_error is None and keyable:
            self._remember(
                key, decision, phone, pol, scopes=scopes, clear_at=clear_at, pseudonyms=pseudonyms, counter=counter
            )
        self._audit(decision, pseudonyms, channel, (t0, t_norm, t_supp, t_enrich, time.perf_counter()))
        counter.inc()
        return decision

    def _write_counts(self) -> tuple[object, ...] | None:
        """The suppression stores with their write counts, or None when one of them keeps none."""
        o, f = self.stores.opt_outs, self.stores.failures
        ov, fv = getattr(o, SUPPRESSION_WRITES, None), getattr(f, SUPPRESSION_WRITES, None)
        return None if ov is None or fv is None else (o, ov, f, fv)

    def _replay(self, key: tuple[object, ...], memo: _Memo, channel: Channel | None, t0: float) -> Decision:
        """The hot path: a number routed before from facts still held.

        Only its consent and suppression can have changed since, and they are screened again,
        reading the stores only when a write since could have suppressed it. Kept to few calls:
        between HTTP calls each Python function the CPU has to fetch anew costs a microsecond or two.
        """
        decision = memo.decision
        counts = self._write_counts()
        if counts is None or counts != memo.clear_at:
            verdict = self._suppress(memo.phone, memo.policy, memo.scopes)
            if verdict is not None:
                decision = router.refusal(decision.to, decision.purpose, verdict, None, memo.policy)
            elif counts is not None:
                self._memo[key] = memo._replace(clear_at=counts)
        t_supp = time.perf_counter()  # normalize and enrich took no time: their results were kept
        self._audit(decision, memo.pseudonyms, channel, (t0, t0, t_supp, t_supp, time.perf_counter()))
        if decision is memo.decision:
            metrics.cache_read(True)
            memo.counter.inc()
        else:
            metrics.decided(decision.purpose, decision.action, decision.twilio_code)
        return decision

    def _remember(
        self,
        key: tuple[object, ...],
        decision: Decision,
        phone: Phone,
        pol: Policy,
        *,
        scopes: tuple[str, ...],
        clear_at: tuple[object, ...] | None,
        pseudonyms: tuple[str, str],
        counter: Any,
    ) -> None:
        found = self.lookup.held(phone, pol.fields, max_age_seconds=pol.max_age_seconds)
        if found is None or found[2][1] is not decision.facts:
            return  # the facts held now are not the ones this decision was routed from
        holder, handle, held = found
        self._memo.remember(
            key, _Memo(decision, phone, pol, scopes, holder, handle, held, clear_at, pseudonyms, counter)
        )

    def _suppress(self, phone: Phone, pol: Policy, scopes: tuple[str, ...]) -> Verdict | None:
        assert phone.e164 is not None
        wh = self.settings.webhooks
        try:
            scope = self.stores.opt_outs.opted_out_scope(phone.e164, scopes) if pol.opt_outs_block else None
            suppression = self.stores.failures.suppression(
                phone.e164,
                now=self.clock(),
                window_seconds=wh.failure_window_seconds,
                threshold=wh.failure_threshold,
            )
        except StoreUnavailable as exc:
            # Fail safe: an unreadable opt-out list must never let a message reach someone who said STOP.
            log.error("suppression stores unavailable, refusing %s: %s", phones.mask(phone.e164), exc)
            return policies.refuse("store_unavailable", "store:unavailable")
        return policies.screen_suppression(scope, suppression, pol)

    def _enrich(self, phone: Phone, pol: Policy) -> tuple[PhoneFacts, str | None]:
        if not self.settings.lookup.enabled:
            return local_facts(phone), None
        try:
            return self.lookup.facts(phone, pol.fields, max_age_seconds=pol.max_age_seconds), None
        except LookupUnavailable as exc:
            log.warning("Lookup unavailable for %s: %s", phones.mask(phone.e164), exc.reason)
            return local_facts(phone), exc.reason

    def _audit(
        self,
        decision: Decision,
        pseudonyms: tuple[str, str],
        channel: str | None,
        marks: tuple[float, float, float, float, float],
    ) -> None:
        if not self._audit_on:
            return
        masked, hashed = pseudonyms
        entry = AuditEntry(
            self.clock(),
            decision.purpose,
            masked,
            hashed,
            decision.action._value_,  # the plain attribute: ``.value`` runs two Python functions
            channel,
            decision.reasons,
            decision.twilio_code,
            decision.enforced,
            decision.cache_hit,
            decision.facts,
            marks,
        )
        try:
            self.stores.audit.record(entry)
        except StoreUnavailable as exc:
            log.warning("audit record dropped: %s", exc)

    # -- acting --------------------------------------------------------------------
    def notify(
        self,
        to: str,
        body: str,
        *,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        country: str | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> Outcome:
        """Reach ``to`` with ``body``: SMS, or a voice call for a landline. A refusal is an Outcome, not an error."""
        if not isinstance(body, str) or not body:
            raise ValueError("body must be a non-empty string")
        if not from_ and not messaging_service_sid:
            raise ValueError("notify needs from_ or messaging_service_sid")
        request = {
            "to": to,
            "body": body,
            "from_": from_,
            "messaging_service_sid": messaging_service_sid,
            "status_callback": status_callback,
            "country": country,
            **params,
        }

        def act() -> Outcome:
            return self._notify(
                to,
                body,
                from_=from_,
                messaging_service_sid=messaging_service_sid,
                status_callback=status_callback,
                country=country,
                params=params,
            )

        return self._once(idempotency_key, "notify", request, act)

    def _notify(
        self,
        to: str,
        body: str,
        *,
        from_: str | None,
        messaging_service_sid: str | None,
        status_callback: str | None,
        country: str | None,
        params: Mapping[str, Any],
    ) -> Outcome:
        sender = from_ or messaging_service_sid
        decision = self._evaluate(to, "notify", country, sender=sender)
        callback = status_callback or self.settings.routing.status_callback
        action = decision.action if decision.enforced else Action.SMS
        if action is Action.REFUSE:
            return Outcome(action=Action.REFUSE, decision=decision)
        if action is Action.VOICE:
            if not from_:
                raise ValueError("the voice fallback needs from_ (a Messaging Service cannot place calls)")
            call = voice.call(
                self.client,
                self.send_policy,
                to=decision.to,
                from_=from_,
                twiml=self._twiml(body),
                status_callback=callback,
            )
            return Outcome(action=Action.VOICE, decision=decision, sid=call.sid, status=call.status)
        message = sms.send(
            self.client,
            self.send_policy,
            to=decision.to,
            body=body,
            from_=from_,
            messaging_service_sid=messaging_service_sid,
            status_callback=callback,
            **params,
        )
        return Outcome(action=Action.SMS, decision=decision, sid=message.sid, status=message.status)

    def _twiml(self, body: str) -> str:
        r = self.settings.routing
        return voice.twiml(body, voice=r.voice, language=r.language)

    def start_verification(
        self,
        to: str,
        *,
        verify_service_sid: str | None = None,
        channel: str = "sms",
        email: str | None = None,
        country: str | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> Outcome:
        """Start an MFA challenge: Verify SMS, a Verify call for landlines, TOTP or email for VoIP."""
        wanted = _VERIFY_CHANNELS.get(channel)
        if wanted is None:
            raise ValueError(f"channel must be 'sms', 'call' or 'email', not {channel!r}")
        if email is not None and not email_channel.looks_like_email(email):
            raise ValueError("email must be an address like name@example.com")
        request = {
            "to": to,
            "service": verify_service_sid,
            "channel": channel,
            "email": email,
            "country": country,
            **params,
        }

        def act() -> Outcome:
            return self._verify(to, wanted, service_sid=verify_service_sid, email=email, country=country, params=params)

        return self._once(idempotency_key, "verify", request, act)

    def _verify(
        self,
        to: str,
        wanted: Channel,
        *,
        service_sid: str | None,
        email: str | None,
        country: str | None,
        params: Mapping[str, Any],
    ) -> Outcome:
        decision = self._evaluate(to, "mfa", country, channel=wanted, have_email=email is not None)
        action = decision.action
        if not decision.enforced:
            action = {"voice": Action.VERIFY_CALL, "email": Action.EMAIL}.get(wanted, Action.VERIFY_SMS)
        if action is Action.REFUSE:
            return Outcome(action=action, decision=decision)
        if action is Action.TOTP:
            return Outcome(
                action=action,
                decision=decision,
                status="use_totp",
                detail={"digits": totp.DIGITS, "interval_seconds": totp.INTERVAL_SECONDS},
            )
        if service_sid is None:
            raise ValueError("verify_service_sid is required for Verify SMS, call and email")
        if action is Action.EMAIL:
            if email is None:
                raise ValueError("the email channel needs email=")
            v = email_channel.start(self.client, self.send_policy, service_sid=service_sid, email=email, **params)
        else:
            v = verify.start(
                self.client,
                self.send_policy,
                service_sid=service_sid,
                to=decision.to,
                channel="call" if action is Action.VERIFY_CALL else "sms",
                **params,
            )
        return Outcome(action=action, decision=decision, sid=v.sid, status=v.status)

    # -- idempotency ---------------------------------------------------------------
    def _once(self, key: str | None, kind: str, request: Mapping[str, Any], act: Callable[[], Outcome]) -> Outcome:
        """Run ``act`` once per idempotency key; a repeat returns the first Outcome and sends nothing."""
        if key is None:
            return act()
        if not isinstance(key, str) or not key or len(key) > 255:
            raise ValueError("idempotency_key must be a non-empty string of at most 255 characters")
        cfg = self.settings.idempotency
        fingerprint = hashlib.sha256(json.dumps([kind, request], sort_keys=True, default=str).encode()).hexdigest()
        store_key = f"{kind}:{key}"
        deadline = self.clock() + cfg.wait_ms / 1000
        while True:
            # A pending claim is a short lease, so a process that dies mid-send frees the key soon;
            # complete() then keeps the result for the whole window.
            claim = self.stores.idempotency.claim(store_key, fingerprint, ttl_seconds=self._lease_seconds)
            if claim.won or claim.state != "pending" or self.clock() >= deadline:
                break
            self.sleep(0.05)
        if not claim.won:
            if claim.fingerprint != fingerprint:
                raise IdempotencyConflict(
                    f"idempotency key {key!r} was first used for a different request; use a new key",
                    key=key,
                    reason="payload_mismatch",
                )
            if claim.state == "done" and claim.result is not None:
                return replace(_OUTCOME.validate_json(claim.result), replayed=True)
            if claim.state == "unknown":
                raise IdempotencyConflict(
                    f"the first call with idempotency key {key!r} failed after it may have sent; "
                    "check its status before retrying with a new key",
                    key=key,
                    reason="outcome_unknown",
                )
            raise IdempotencyConflict(
                f"a call with idempotency key {key!r} is still in progress; retry later", key=key, reason="in_progress"
            )
        assert claim.token is not None
        try:
            outcome = act()
        except (TwilioException, LookupUnavailable, StoreUnavailable, ValueError) as exc:
            # Twilio answered (or we never sent): nothing happened, a retry may proceed.
            self.stores.idempotency.abandon(store_key, claim.token)
            raise exc
        except BaseException:
            self.stores.idempotency.mark_unknown(store_key, claim.token, ttl_seconds=cfg.window_seconds)
            raise
        self.stores.idempotency.complete(
            store_key, claim.token, _OUTCOME.dump_json(outcome), ttl_seconds=cfg.window_seconds
        )
        return outcome

    # -- consent and status --------------------------------------------------------
    def _scope_for(self, sender: str | None, country: str | None) -> str:
        return self._scopes(sender, country)[-1]

    def opt_out(
        self, number: str, *, sender: str | None = None, country: str | None = None, source: str = "api"
    ) -> bool:
        """Record an opt-out (account-wide, or for ``sender`` with ``opt_out_scope = "sender"``)."""
        e164 = phones.to_e164(number, country or self.default_country)
        return self.stores.opt_outs.opt_out(e164, self._scope_for(sender, country), source=source, at=self.clock())

    def opt_in(
        self, number: str, *, sender: str | None = None, country: str | None = None, source: str = "api"
    ) -> bool:
        """Lift an opt-out; without ``sender`` it lifts every scope for the number."""
        e164 = phones.to_e164(number, country or self.default_country)
        return self.stores.opt_outs.opt_in(e164, self._scope_for(sender, country), source=source, at=self.clock())

    def is_opted_out(self, number: str, *, sender: str | None = None, country: str | None = None) -> bool:
        e164 = phones.to_e164(number, country or self.default_country)
        return self.stores.opt_outs.opted_out_scope(e164, self._scopes(sender, country)) is not None

    def status_of(self, sid: str) -> StatusRecord | None:
        """The stored delivery status for a message or call SID (None if never seen)."""
        return self.stores.statuses.status_of(sid)


# -- wiring from settings --------------------------------------------------------------
_quiet_http_log = logging.getLogger("gatekeeper.twilio_http")
# twilio's HttpClient logs every request URL at INFO, and a Lookup URL holds the full number.
_quiet_http_log.setLevel(logging.WARNING)


def build_twilio_client(settings: Settings) -> Client:
    """A twilio Client for ``settings``: credentials, timeout, region/edge, or the sandbox."""
    from requests.adapters import HTTPAdapter
    from twilio.http.http_client import TwilioHttpClient

    t = settings.twilio
    creds = settings.credentials()
    timeout = t.timeout_ms / 1000
    http: TwilioHttpClient
    if t.sandbox_url:
        from gatekeeper.sandbox import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
        from gatekeeper.sandbox.transport import SandboxHttpClient

        http = SandboxHttpClient(t.sandbox_url, timeout=timeout, logger=_quiet_http_log)
        creds = creds or (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TEST_ACCOUNT_SID)
    else:
        if creds is None:
            raise ConfigError(
                "no Twilio credentials: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID and "
                "TWILIO_API_KEY_SECRET), or GATEKEEPER_SANDBOX_URL to use a local sandbox",
                key="twilio",
            )
        http = TwilioHttpClient(timeout=timeout, logger=_quiet_http_log)
        if http.session is not None:
            # twilio sizes its pool to the CPU count; batch enrichment runs more Lookups than that at once,
            # and a connection beyond the pool is opened and dropped for every request.
            http.session.mount("https://", HTTPAdapter(pool_maxsize=64))
    username, password, account_sid = creds
    client = Client(username, password, account_sid, region=t.region, edge=t.edge, http_client=http, environment={})
    if settings.lookup.base_url.rstrip("/") != "https://lookups.twilio.com":
        client.lookups.base_url = settings.lookup.base_url.rstrip("/")
    return client


def build_stores(settings: Settings) -> Stores:
    """Redis for every store when a Redis URL is set, else the embedded memory store."""
    from gatekeeper.stores.memory import MemoryStore

    memory = MemoryStore(max_entries=settings.cache.max_entries, max_audit=settings.audit.max_entries)
    redis_store = None
    if settings.redis.url is not None:
        from gatekeeper.stores.redis import RedisStore

        redis_store = RedisStore.from_url(
            settings.redis.url.get_secret_value(),
            prefix=settings.redis.key_prefix,
            timeout_seconds=settings.redis.timeout_ms / 1000,
        )
    stores = Stores.using(redis_store or memory)
    if settings.cache_backend() == "memory":
        stores.cache = memory
    if redis_store is not None:
        stores.closers.append(redis_store.close)
    return stores
