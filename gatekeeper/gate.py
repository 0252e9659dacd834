"""The Gatekeeper: runs normalize → suppress → enrich → decide, then acts, once per idempotency key.

Every outbound request takes one path. :meth:`Gatekeeper.decide` drives the pipeline
(:mod:`gatekeeper.pipeline`, steps 1-4) and audits the decision; :meth:`Gatekeeper.act` sends what a
decision says through the channel registry (:mod:`gatekeeper.channels`, step 5). The routing API
(:meth:`~Gatekeeper.notify`, :meth:`~Gatekeeper.start_verification`) runs both under the one run-once
routine (:mod:`gatekeeper.idempotency`); adapters such as the drop-in client use the public
:meth:`~Gatekeeper.check`/:meth:`~Gatekeeper.act` pair. The parts and every step without I/O are
:class:`~gatekeeper.core.GateCore`'s, shared with the async gate; this class drives them with
blocking calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import date
from typing import Any

from twilio.rest import Client

from gatekeeper import phone as phones
from gatekeeper import pipeline, router
from gatekeeper.channels import nothing_sent
from gatekeeper.core import NO_REASONS, OUTCOME
from gatekeeper.errors import GateRefused, LookupUnavailable, SendRejected
from gatekeeper.idempotency import Once, check_key, fingerprint_of
from gatekeeper.lookup import QUIET_REASONS, local_facts
from gatekeeper.models import Action, Decision, Outcome, Phone, PhoneFacts, Purpose, SendRequest
from gatekeeper.pipeline import Ask, NeedScreen, verified_day
from gatekeeper.policy import Policy
from gatekeeper.records import GateRecords
from gatekeeper.router import Channel
from gatekeeper.routes import Route
from gatekeeper.settings import Settings
from gatekeeper.stores.base import Stores, run

log = logging.getLogger("gatekeeper")


class Gatekeeper(GateRecords):
    """Decides whether and how to reach a number, then acts.

    ``Gatekeeper(twilio_client)`` uses built-in defaults and reads no file or environment;
    :meth:`from_settings` builds everything from :class:`Settings`. Its parts are public and
    named for their step: ``suppression`` (step 2 and the consent writer), ``lookup`` (step 3),
    ``channels`` (step 5), ``once`` (idempotency), ``auditor``, and the ``stores`` under them.
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
        super().__init__(twilio_client, settings=settings, policy=policy, stores=stores, clock=clock, sleep=sleep)
        self.sleep = sleep
        self.once = Once(self.stores, clock=clock, sleep=sleep)

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
        client_key: str | None = None,
        last_verified: date | str | None = None,
    ) -> Decision:
        """The decision for one number, without acting: the best channel for it. Audited (``client_key``: who asks;
        ``last_verified``: when you last confirmed the number was the person's, for Lookup's reassigned_number)."""
        day = verified_day(last_verified)
        ask = Ask(country, channel, sender, have_email=bool(email), client_key=client_key, last_verified=day)
        return self._decide(number, purpose, ask)

    def check(
        self,
        to: str,
        request: SendRequest,
        *,
        purpose: Purpose = "notify",
        country: str | None = None,
        uri: str = "",
        client_key: str | None = None,
        last_verified: date | str | None = None,
    ) -> Decision:
        """The decision for sending ``request`` to ``to`` on exactly the channel it asks for. Audited.

        For adapters (the drop-in client): an enforced refusal raises :class:`GateRefused` with the
        code Twilio would have answered (``uri`` names the resource in it); otherwise pass the
        decision to :meth:`act`.
        """
        return self._checked(self._decide(to, purpose, self._strict(request, country, client_key, last_verified)), uri)

    def _decide(self, number: str, purpose: Purpose, ask: Ask) -> Decision:
        pol = self._policy(purpose)
        key = (number, purpose, ask)
        route = self.routes.find(key, pol)
        if route is not None:
            return self._again(key, route, ask)
        steps = pipeline.decide(number, purpose, pol, ask, default_country=self.default_country)
        suppression, observed = self.suppression, NO_REASONS
        try:
            need = next(steps)
            while True:
                if type(need) is NeedScreen:
                    scopes = suppression.scopes(need.sender, need.country, need.channel)
                    answer: object = suppression.screen(need.phone, pol, scopes)
                    if answer is None and self.guard.applies(purpose):  # then count it, before a Lookup is paid
                        answer, observed = run(self.stores, self.guard_steps(need.phone, purpose, ask.client_key))
                else:
                    answer = self._enrich(need.phone, need.policy)
                need = steps.send(answer)
        except StopIteration as end:
            decided: pipeline.Decided = end.value
        decision = self.observed(decided.decision, observed) if observed else decided.decision
        self.auditor.record(decision, decided.number, ask.channel, (*decided.marks, time.perf_counter()))
        if decision.cache_hit and decided.phone is not None:
            scopes = self.suppression.scopes(ask.sender, ask.country, pipeline.consent_channel(decided.phone, ask))
            self.routes.keep(key, decided.decision, decided.phone, pol, scopes)
        return decision

    def _again(self, key: tuple[object, ...], route: Route, ask: Ask) -> Decision:
        """A number routed before from facts still held: only its consent is screened again."""
        t0 = time.perf_counter()
        verdict, mark = self.suppression.screen_since(route.clear_at, route.phone, route.policy, route.scopes)
        decision, observed = route.decision, NO_REASONS
        if verdict is None and self.guard.applies(decision.purpose):
            verdict, observed = run(self.stores, self.guard_steps(route.phone, decision.purpose, ask.client_key))
        if verdict is not None:
            decision = router.refusal(decision.to, decision.purpose, verdict, None, route.policy)
        else:
            self.routes.cleared(key, route, mark)
        decision = self.observed(decision, observed) if observed else decision
        t1 = time.perf_counter()
        number = route.phone.key or decision.to
        self.auditor.record(decision, number, ask.channel, (t0, t0, t1, t1, time.perf_counter()))
        return decision

    def _enrich(self, phone: Phone, pol: Policy) -> tuple[PhoneFacts, str | None]:
        if not self.settings.lookup.enabled:
            return local_facts(phone), None
        try:
            return self.lookup.facts(phone, pol.fields, max_age_seconds=pol.max_age_seconds), None
        except LookupUnavailable as exc:
            level = logging.DEBUG if exc.reason in QUIET_REASONS else logging.WARNING  # the breaker logs its own
            log.log(level, "Lookup unavailable for %s: %s", phones.mask(phone.e164), exc.reason)
            return local_facts(phone), exc.reason

    # -- step 5 --------------------------------------------------------------------
    def act(self, decision: Decision, request: SendRequest, *, client: Client | None = None) -> Outcome:
        """Send ``request`` as ``decision`` says (in observe mode, as the request asked), through ``client``
        (default: the gate's own). Raises :class:`GateRefused` for an enforced refusal: nothing to send."""
        action = self._acting(decision, request)
        request = self._quiet(decision, request, action)
        if self.spend.capped:
            self._charged(decision, run(self.stores, self.spend.charge_steps(action, decision, request)))
        try:
            outcome = self.channels[action].send(client or self.client, action, decision, request)
        except SendRejected as exc:
            self.heard(decision, action, exc)
            raise
        # a Verify code sent: counted for the guard's conversion-aware limits (a notification never is)
        if decision.purpose == "mfa" and (code := self.sent_code(outcome)) is not None:
            self.record_verification(*code)
        return outcome

    async def act_async(self, decision: Decision, request: SendRequest, *, client: Client) -> Outcome:
        """:meth:`act` with the SDK's ``*_async`` calls on ``client`` (its HttpClient asynchronous); what Twilio's
        refusal teaches is stored off the event loop. For the drop-in's ``create_async`` on a blocking gate."""
        action = self._acting(decision, request)
        request = self._quiet(decision, request, action)
        if self.spend.capped:
            steps = self.spend.charge_steps(action, decision, request)
            self._charged(decision, await asyncio.to_thread(run, self.stores, steps))
        try:
            outcome = await self.channels[action].send_async(client, action, decision, request)
        except SendRejected as exc:
            await asyncio.to_thread(self.heard, decision, action, exc)
            raise
        if decision.purpose == "mfa" and (code := self.sent_code(outcome)) is not None:
            await asyncio.to_thread(self.record_verification, *code)
        return outcome

    def heard(self, decision: Decision, action: Action, exc: SendRejected) -> None:
        """Twilio refused a send: keep what it said, so the next send need not pay to hear it again. 21610 is
        the person's opt-out (raised as GateRefused); 21614 corrects the cached line type; ``failure_codes``
        (fraud blocks 30450, 30453, 60410 …) count as hard failures."""
        phone = self._heard_about(decision)
        if phone is None or phone.key is None:
            return
        verdict = self.suppression.heard(phone.key, exc.code)
        if exc.code == 21614 and action is Action.SMS and decision.facts is not None:
            self.lookup.correct(phone, decision.facts, line_type="landline")
        if verdict is not None:
            raise self._refused(decision, verdict, exc) from exc

    # -- the routing API -----------------------------------------------------------
    def notify(
        self,
        to: str,
        body: str,
        *,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        call_status_callback: str | None = None,
        country: str | None = None,
        idempotency_key: str | None = None,
        client_key: str | None = None,
        last_verified: date | str | None = None,
        **params: Any,
    ) -> Outcome:
        """Reach ``to`` with ``body``: SMS (or the channel of a ``whatsapp:``… address), or a voice call for a
        landline, ``sip:`` or ``client:``. ``status_callback`` serves a message, ``call_status_callback`` a call;
        unset, ``[routing]``'s are used. A refusal is an Outcome, not an error."""
        request = self._notify_request(
            body,
            from_=from_,
            messaging_service_sid=messaging_service_sid,
            status_callback=status_callback,
            call_status_callback=call_status_callback,
            params=params,
        )

        ask = Ask(country, sender=request.sender, client_key=client_key, last_verified=verified_day(last_verified))

        def run_() -> Outcome:
            return self._outcome(self._decide(to, "notify", ask), request)

        return self._once(idempotency_key, "notify", (to, country, request), run_)

    def start_verification(
        self,
        to: str,
        *,
        verify_service_sid: str | None = None,
        channel: str = "sms",
        email: str | None = None,
        country: str | None = None,
        idempotency_key: str | None = None,
        client_key: str | None = None,
        last_verified: date | str | None = None,
        **params: Any,
    ) -> Outcome:
        """Start an MFA challenge: Verify SMS, a Verify call for landlines, TOTP or email for VoIP."""
        request, wanted = self._verify_request(channel, verify_service_sid, email, params)
        day = verified_day(last_verified)

        def run_() -> Outcome:
            ask = Ask(country, wanted, have_email=email is not None, client_key=client_key, last_verified=day)
            decision = self._decide(to, "mfa", ask)
            return self._outcome(decision, request)

        return self._once(idempotency_key, "verify", (to, country, request), run_)

    def _outcome(self, decision: Decision, request: SendRequest) -> Outcome:
        if decision.enforced and decision.action is Action.REFUSE:
            return Outcome(action=Action.REFUSE, decision=decision)
        try:
            return self.act(decision, request)
        except GateRefused as refused:  # Twilio said the person opted out (or quiet hours): a refusal, or DEFER
            return self._deferred(refused, self.settings.quiet.mode)

    def _once(self, key: str | None, kind: str, asked: tuple[object, ...], run_: Callable[[], Outcome]) -> Outcome:
        """Run ``run_`` once per idempotency key; a repeat of what was ``asked`` returns the first Outcome and
        sends nothing, another request under the key is a conflict."""
        if key is None:
            return run_()
        kept: list[Outcome] = []

        def work() -> bytes:
            kept.append(run_())
            return OUTCOME.dump_json(kept[0])

        cfg = self.settings.idempotency
        ran = self.once.run(
            f"{kind}:{check_key(key)}",
            work,
            fingerprint=fingerprint_of(kind, *asked),
            lease_seconds=self._lease_seconds,
            keep_seconds=cfg.window_seconds,
            wait_seconds=cfg.wait_ms / 1000,
            nothing_happened=nothing_sent,
        )
        if ran.ran:
            return kept[0]
        assert ran.result is not None  # a completed send always stores its outcome
        return replace(OUTCOME.validate_json(ran.result), replayed=True)


__all__ = ["Gatekeeper"]
