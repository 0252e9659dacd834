"""The Gatekeeper: runs normalize → suppress → enrich → decide, then acts, once per idempotency key.

Every outbound request takes one path. :meth:`Gatekeeper.decide` drives the pipeline
(:mod:`gatekeeper.pipeline`, steps 1-4) and audits the decision; :meth:`Gatekeeper.act` sends what a
decision says through the channel registry (:mod:`gatekeeper.channels`, step 5). The routing API
(:meth:`~Gatekeeper.notify`, :meth:`~Gatekeeper.start_verification`) runs both under the one run-once
routine (:mod:`gatekeeper.idempotency`); adapters such as the drop-in client use the public
:meth:`~Gatekeeper.check`/:meth:`~Gatekeeper.act` pair.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from typing import Any, NamedTuple

from pydantic import TypeAdapter
from twilio.rest import Client

from gatekeeper import channels, pipeline, router
from gatekeeper import phone as phones
from gatekeeper import policy as policies
from gatekeeper.audit import Auditor
from gatekeeper.errors import GateRefused, InvalidArgument, LookupUnavailable
from gatekeeper.idempotency import Once, check_key, fingerprint_of
from gatekeeper.lookup import LookupConfig, LookupService, Memo, local_facts
from gatekeeper.models import Action, Decision, Outcome, Phone, PhoneFacts, Purpose, SendRequest, StatusRecord
from gatekeeper.pipeline import Ask, NeedScreen
from gatekeeper.policy import Policy
from gatekeeper.router import Channel
from gatekeeper.settings import Settings
from gatekeeper.stores.base import Stores
from gatekeeper.suppress import Suppression

log = logging.getLogger("gatekeeper")

_OUTCOME = TypeAdapter(Outcome)


class _Route(NamedTuple):
    """A decision routed from facts this process holds, as it stands while the number is clear to reach."""

    decision: Decision
    phone: Phone
    policy: Policy
    scopes: tuple[str, ...]
    facts: PhoneFacts  # the very facts it was routed from, held by the Lookup service under lookup_key
    lookup_key: str
    fresh_until: float
    clear_at: Hashable | None = None  # the stores' mark when the number was last found clear


class Gatekeeper:
    """Decides whether and how to reach a number, then acts.

    ``Gatekeeper(twilio_client)`` uses built-in defaults and reads no file or environment;
    :meth:`from_settings` builds everything from :class:`Settings`. Its parts are public and
    named for their step: ``suppression`` (step 2 and the consent writer), ``lookup`` (step 3),
    ``channels`` (step 5), ``once`` (idempotency), ``audit``, and the ``stores`` under them.
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
        self.settings = s = settings or Settings()
        self.policies: dict[str, Policy] = {**s.policies(), **policies.overrides(policy)}
        self.stores = stores or Stores.memory(max_entries=s.cache.max_entries)
        self.clock = clock
        self.sleep = sleep
        self.default_country = s.lookup.default_country_code
        self.lookup = LookupService(
            twilio_client, self.stores.cache, LookupConfig.from_settings(s), clock=clock, sleep=sleep
        )
        self.suppression = Suppression(self.stores, s.webhooks, default_country=self.default_country, clock=clock)
        self.audit = Auditor(self.stores, s.audit, clock=clock)
        self.once = Once(self.stores, clock=clock, sleep=sleep)
        send_policy = channels.SendPolicy(max_retries=s.twilio.max_send_retries, sleep=sleep)
        self.channels = channels.registry(send_policy, voice=s.routing.voice, language=s.routing.language)
        self._routes: Memo[tuple[object, ...], _Route] = Memo(s.cache.route_memo_entries)
        # A pending claim is a short lease, so a process that dies mid-send frees its key soon.
        attempts = s.twilio.max_send_retries + 1
        self._lease_seconds = max(60.0, 2 * attempts * (s.twilio.timeout_ms / 1000 + 5))

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, twilio_client: Client | None = None, **kwargs: Any
    ) -> Gatekeeper:
        """Build the Twilio client and the stores that ``settings`` describe."""
        from gatekeeper.wiring import build_stores, build_twilio_client

        settings = settings or Settings.load()
        client = twilio_client or build_twilio_client(settings)
        stores = kwargs.pop("stores", None) or build_stores(settings)
        return cls(client, settings=settings, stores=stores, **kwargs)

    def derive(
        self, *, policy: Mapping[str, Policy] | None = None, before_lookup: Callable[[], None] | None = None
    ) -> Gatekeeper:
        """A gate sharing this one's client, stores, Lookup cache and parts, with other policies for some
        purposes and/or ``before_lookup`` called before every Lookup request (batch enrichment's permits)."""
        twin = Gatekeeper.__new__(Gatekeeper)
        twin.__dict__.update(self.__dict__)
        if policy is not None:
            twin.policies = {**self.policies, **policies.overrides(policy)}
        if before_lookup is not None:
            twin.lookup = self.lookup.with_before_request(before_lookup)
        return twin

    def close(self) -> None:
        for closer in self.stores.closers:
            closer()

    # -- steps 1-4 -----------------------------------------------------------------
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
        """The decision for one number, without acting: the best channel for it. Audited."""
        return self._decide(number, purpose, Ask(country, channel, sender, have_email=bool(email)))

    def check(
        self, to: str, request: SendRequest, *, purpose: Purpose = "notify", country: str | None = None, uri: str = ""
    ) -> Decision:
        """The decision for sending ``request`` to ``to`` on exactly the channel it asks for. Audited.

        For adapters (the drop-in client): an enforced refusal raises :class:`GateRefused` with the
        code Twilio would have answered (``uri`` names the resource in it); otherwise pass the
        decision to :meth:`act`.
        """
        ask = pipeline.strict_ask(request, country, dropin_reroute=self.settings.routing.dropin_reroute)
        decision = self._decide(to, purpose, ask)
        if decision.enforced and decision.action is Action.REFUSE:
            raise GateRefused(decision, code=decision.twilio_code or 21211, uri=uri)
        return decision

    def _decide(self, number: str, purpose: Purpose, ask: Ask) -> Decision:
        pol = self._policy(purpose)
        key: tuple[object, ...] | None = (number, purpose, ask)
        try:
            route = self._routes.get(key)  # type: ignore[arg-type]  # None only after this fails
        except TypeError:  # an argument that cannot key a route (a list for a sender…): decided in full
            route, key = None, None
        if (
            route is not None
            and route.policy is pol
            and route.fresh_until > self.clock()
            and self.lookup.holds(route.lookup_key, route.facts)
        ):
            return self._again(key, route, ask)  # type: ignore[arg-type]  # a route was found under it
        steps = pipeline.decide(number, purpose, pol, ask, default_country=self.default_country)
        suppression = self.suppression
        try:
            need = next(steps)
            while True:
                if type(need) is NeedScreen:
                    answer: object = suppression.screen(need.phone, pol, suppression.scopes(need.sender, need.country))
                else:
                    answer = self._enrich(need.phone, pol)
                need = steps.send(answer)
        except StopIteration as end:
            decided: pipeline.Decided = end.value
        decision = decided.decision
        self.audit.record(decision, decided.number, ask.channel, (*decided.marks, time.perf_counter()))
        if decision.cache_hit and key is not None:
            self._remember(key, decided, pol, ask)
        return decision

    def _again(self, key: tuple[object, ...], route: _Route, ask: Ask) -> Decision:
        """A number routed before from facts still held: only its consent is screened again."""
        t0 = time.perf_counter()
        verdict, mark = self.suppression.screen_since(route.clear_at, route.phone, route.policy, route.scopes)
        decision = route.decision
        if verdict is not None:
            decision = router.refusal(decision.to, decision.purpose, verdict, None, route.policy)
        if mark is not route.clear_at:
            self._routes[key] = route._replace(clear_at=mark)
        t1 = time.perf_counter()
        self.audit.record(decision, decision.to, ask.channel, (t0, t0, t1, t1, time.perf_counter()))
        return decision

    def _remember(self, key: tuple[object, ...], decided: pipeline.Decided, pol: Policy, ask: Ask) -> None:
        """Keep a route made from held facts (never a refusal by consent: those have no facts) while they last."""
        assert decided.phone is not None
        held = self.lookup.held(decided.phone, pol.fields, max_age_seconds=pol.max_age_seconds)
        if held is None or held[1] is not decided.decision.facts:
            return  # routed from facts this process does not hold (overtaken by a fill meanwhile)
        scopes = self.suppression.scopes(ask.sender, ask.country)
        lookup_key, facts, fresh_until = held
        self._routes.remember(key, _Route(decided.decision, decided.phone, pol, scopes, facts, lookup_key, fresh_until))

    def _policy(self, purpose: str) -> Policy:
        try:
            return self.policies[purpose]
        except (KeyError, TypeError):
            raise InvalidArgument(f"purpose must be 'notify' or 'mfa', not {purpose!r}") from None

    def _enrich(self, phone: Phone, pol: Policy) -> tuple[PhoneFacts, str | None]:
        if not self.settings.lookup.enabled:
            return local_facts(phone), None
        try:
            return self.lookup.facts(phone, pol.fields, max_age_seconds=pol.max_age_seconds), None
        except LookupUnavailable as exc:
            log.warning("Lookup unavailable for %s: %s", phones.mask(phone.e164), exc.reason)
            return local_facts(phone), exc.reason

    # -- step 5 --------------------------------------------------------------------
    def act(self, decision: Decision, request: SendRequest, *, client: Client | None = None) -> Outcome:
        """Send ``request`` as ``decision`` says (in observe mode, as the request asked), through ``client``
        (default: the gate's own). Raises :class:`GateRefused` for an enforced refusal: nothing to send."""
        action = decision.action if decision.enforced else request.asked
        if action is Action.REFUSE:
            raise GateRefused(decision, code=decision.twilio_code or 21211)
        return self.channels[action].send(client or self.client, action, decision, request)

    # -- the routing API -----------------------------------------------------------
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
            raise InvalidArgument("body must be a non-empty string")
        if not from_ and not messaging_service_sid:
            raise InvalidArgument("notify needs from_ or messaging_service_sid")
        request = SendRequest(
            Action.SMS,
            body=body,
            from_=from_,
            messaging_service_sid=messaging_service_sid,
            status_callback=status_callback or self.settings.routing.status_callback,
            params=params,
        )
        fields = {"to": to, "body": body, "from_": from_, "messaging_service_sid": messaging_service_sid}
        fields.update(status_callback=status_callback, country=country, **params)

        def run() -> Outcome:
            return self._outcome(self._decide(to, "notify", Ask(country, sender=request.sender)), request)

        return self._once(idempotency_key, "notify", fields, run)

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
        wanted = router.VERIFY_CHANNELS.get(channel) if isinstance(channel, str) else None
        if wanted is None:
            raise InvalidArgument(f"channel must be 'sms', 'call' or 'email', not {channel!r}")
        if email is not None and not phones.is_email(email):
            raise InvalidArgument("email must be an address like name@example.com")
        request = SendRequest(wanted[1], verify_service_sid=verify_service_sid, email=email, params=params)
        fields = {"to": to, "service": verify_service_sid, "channel": channel, "email": email, "country": country}
        fields.update(params)

        def run() -> Outcome:
            decision = self._decide(to, "mfa", Ask(country, wanted[0], have_email=email is not None))
            return self._outcome(decision, request)

        return self._once(idempotency_key, "verify", fields, run)

    def _outcome(self, decision: Decision, request: SendRequest) -> Outcome:
        if decision.enforced and decision.action is Action.REFUSE:
            return Outcome(action=Action.REFUSE, decision=decision)
        return self.act(decision, request)

    def _once(self, key: str | None, kind: str, fields: Mapping[str, Any], run: Callable[[], Outcome]) -> Outcome:
        """Run ``run`` once per idempotency key; a repeat returns the first Outcome and sends nothing."""
        if key is None:
            return run()
        kept: list[Outcome] = []

        def work() -> bytes:
            kept.append(run())
            return _OUTCOME.dump_json(kept[0])

        cfg = self.settings.idempotency
        ran = self.once.run(
            f"{kind}:{check_key(key)}",
            work,
            fingerprint=fingerprint_of(kind, fields),
            lease_seconds=self._lease_seconds,
            keep_seconds=cfg.window_seconds,
            wait_seconds=cfg.wait_ms / 1000,
            nothing_happened=channels.nothing_sent,
        )
        if ran.ran:
            return kept[0]
        assert ran.result is not None  # a completed send always stores its outcome
        return replace(_OUTCOME.validate_json(ran.result), replayed=True)

    # -- consent and status --------------------------------------------------------
    def opt_out(
        self, number: str, *, sender: str | None = None, country: str | None = None, source: str = "api"
    ) -> bool:
        """Record an opt-out (account-wide, or for ``sender`` with ``opt_out_scope = "sender"``); True if it changed."""
        return self._consent(number, sender, country, source, opted_out=True)

    def opt_in(
        self, number: str, *, sender: str | None = None, country: str | None = None, source: str = "api"
    ) -> bool:
        """Lift an opt-out; without ``sender`` it lifts every scope for the number."""
        return self._consent(number, sender, country, source, opted_out=False)

    def _consent(self, number: str, sender: str | None, country: str | None, source: str, *, opted_out: bool) -> bool:
        e164 = phones.to_e164(number, country or self.default_country)
        scope = self.suppression.scope_of(sender, country)
        return self.suppression.record_consent(e164, scope, opted_out=opted_out, source=source).changed

    def is_opted_out(self, number: str, *, sender: str | None = None, country: str | None = None) -> bool:
        e164 = phones.to_e164(number, country or self.default_country)
        return self.suppression.opted_out_scope(e164, self.suppression.scopes(sender, country)) is not None

    def status_of(self, sid: str) -> StatusRecord | None:
        """The stored delivery status for a message or call SID (None if never seen)."""
        return self.stores.statuses.status_of(sid)

