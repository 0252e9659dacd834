"""AsyncGatekeeper: the gate for asyncio applications, every wait awaited, the event loop never blocked.

It is the :class:`~gatekeeper.gate.Gatekeeper` step for step: the same parts
(:class:`~gatekeeper.core.GateCore`), the same pipeline (:mod:`gatekeeper.pipeline`), the same
store operations (:mod:`gatekeeper.suppress`'s steps) and run-once routine
(:func:`gatekeeper.idempotency.once`), driven with awaits. The twilio client must use twilio's
``AsyncTwilioHttpClient`` (:meth:`AsyncGatekeeper.from_settings` builds one); stores are awaited
as :mod:`gatekeeper.aio.stores` says (``AsyncRedisStore`` for Redis, the memory store in place,
any other store in a worker thread).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import date
from typing import Any, TypeVar

from twilio.rest import Client

from gatekeeper import phone as phones
from gatekeeper import pipeline, router
from gatekeeper.aio.lookup import AsyncLookupService
from gatekeeper.aio.stores import AsyncStores
from gatekeeper.channels import nothing_sent
from gatekeeper.core import NO_REASONS, OUTCOME, GateCore, health_report
from gatekeeper.errors import GateRefused, LookupUnavailable, SendRejected, StoreUnavailable
from gatekeeper.idempotency import SleepStep, check_key, fingerprint_of, once
from gatekeeper.lookup import QUIET_REASONS, local_facts
from gatekeeper.models import Action, Decision, Outcome, Phone, PhoneFacts, Purpose, SendRequest, StatusRecord
from gatekeeper.pipeline import Ask, NeedScreen, verified_day
from gatekeeper.policy import Policy, Verdict
from gatekeeper.router import Channel
from gatekeeper.routes import Route
from gatekeeper.settings import Settings
from gatekeeper.stores.base import Call, Steps, Stores

log = logging.getLogger("gatekeeper")
T = TypeVar("T")


class AsyncGatekeeper(GateCore):
    """Decides whether and how to reach a number, then acts; every method a coroutine.

    ``await gate.decide(...)``, ``await gate.notify(...)``, ``await gate.start_verification(...)``,
    and the adapters' ``check``/``act`` pair, as on :class:`~gatekeeper.gate.Gatekeeper`.
    """

    asynchronous = True

    def __init__(
        self,
        twilio_client: Client,
        *,
        settings: Settings | None = None,
        policy: Mapping[str, Policy] | None = None,
        stores: Stores | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(twilio_client, settings=settings, policy=policy, stores=stores, clock=clock, sleep_async=sleep)
        self.sleep = sleep
        self.awaited = AsyncStores(self.stores)
        self.lookup_async = AsyncLookupService(self.lookup, self.awaited, sleep=sleep)
        _import_sdk(twilio_client)

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, twilio_client: Client | None = None, **kwargs: Any
    ) -> AsyncGatekeeper:
        """Build the async twilio client and the stores that ``settings`` describe (Redis: ``redis.asyncio``)."""
        from gatekeeper.wiring import build_async_twilio_client, build_stores

        settings = settings or Settings.load()
        client = twilio_client or build_async_twilio_client(settings)
        stores = kwargs.pop("stores", None) or build_stores(settings, asynchronous=True)
        return cls(client, settings=settings, stores=stores, **kwargs)

    async def _run_async(self, steps: Steps[T]) -> T:
        return await self.awaited.run(steps)

    async def close(self) -> None:
        """Close the stores and the twilio client's HTTP session."""
        for closer in self.stores.closers:
            done = closer()
            if asyncio.iscoroutine(done):
                await done
        http = getattr(self.client, "http_client", None)
        close = getattr(http, "close", None)
        if close is not None and asyncio.iscoroutinefunction(close):
            await close()

    # -- steps 1-4 -----------------------------------------------------------------
    async def decide(
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
        return await self._decide(number, purpose, ask)

    async def check(
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
        """The decision for sending ``request`` on exactly the channel it asks for; see ``Gatekeeper.check``."""
        ask = self._strict(request, country, client_key, last_verified)
        return self._checked(await self._decide(to, purpose, ask), uri)

    async def _decide(self, number: str, purpose: Purpose, ask: Ask) -> Decision:
        pol = self._policy(purpose)
        key = (number, purpose, ask)
        route = self.routes.find(key, pol)
        if route is not None:
            return await self._again(key, route, ask)
        steps = pipeline.decide(number, purpose, pol, ask, default_country=self.default_country)
        suppression, observed = self.suppression, NO_REASONS
        try:
            need = next(steps)
            while True:
                if type(need) is NeedScreen:
                    scopes = suppression.scopes(need.sender, need.country, need.channel)
                    answer: object = await self.awaited.run(suppression.screen_steps(need.phone, pol, scopes))
                    if answer is None and self.guard.applies(purpose):  # then count it, before a Lookup is paid
                        answer, observed = await self._guarded(need.phone, purpose, ask.client_key)
                else:
                    answer = await self._enrich(need.phone, need.policy)
                need = steps.send(answer)
        except StopIteration as end:
            decided: pipeline.Decided = end.value
        decision = self.observed(decided.decision, observed) if observed else decided.decision
        await self._audit(decision, decided.number, ask.channel, (*decided.marks, time.perf_counter()))
        if decision.cache_hit and decided.phone is not None:
            scopes = self.suppression.scopes(ask.sender, ask.country, pipeline.consent_channel(decided.phone, ask))
            self.routes.keep(key, decided.decision, decided.phone, pol, scopes)
        return decision

    async def _again(self, key: tuple[object, ...], route: Route, ask: Ask) -> Decision:
        """A number routed before from facts still held: only its consent is screened again."""
        t0 = time.perf_counter()
        steps = self.suppression.screen_since_steps(route.clear_at, route.phone, route.policy, route.scopes)
        verdict, mark = await self.awaited.run(steps)
        decision, observed = route.decision, NO_REASONS
        if verdict is None and self.guard.applies(decision.purpose):
            verdict, observed = await self._guarded(route.phone, decision.purpose, ask.client_key)
        if verdict is not None:
            decision = router.refusal(decision.to, decision.purpose, verdict, None, route.policy)
        else:
            self.routes.cleared(key, route, mark)
        decision = self.observed(decision, observed) if observed else decision
        t1 = time.perf_counter()
        await self._audit(decision, route.phone.key or decision.to, ask.channel, (t0, t0, t1, t1, time.perf_counter()))
        return decision

    async def _guarded(
        self, phone: Phone, purpose: Purpose, client_key: str | None
    ) -> tuple[Verdict | None, tuple[str, ...]]:
        if self.auditor.needs_key:  # the number's windows are keyed by its pseudonym: the key read, awaited
            await self.awaited.run(self.auditor.key_steps())
        return await self.awaited.run(self.guard_steps(phone, purpose, client_key))

    async def _enrich(self, phone: Phone, pol: Policy) -> tuple[PhoneFacts, str | None]:
        if not self.settings.lookup.enabled:
            return local_facts(phone), None
        try:
            return await self.lookup_async.facts(phone, pol.fields, max_age_seconds=pol.max_age_seconds), None
        except LookupUnavailable as exc:
            level = logging.DEBUG if exc.reason in QUIET_REASONS else logging.WARNING  # the breaker logs its own
            log.log(level, "Lookup unavailable for %s: %s", phones.mask(phone.e164), exc.reason)
            return local_facts(phone), exc.reason

    async def _audit(self, decision: Decision, number: str, channel: str | None, marks: Any) -> None:
        try:
            if self.auditor.needs_key:  # once per process: the store's pseudonym key, read off the event loop
                await self.awaited.run(self.auditor.key_steps())
            entry = self.auditor.entry(decision, number, channel, marks)
            if entry is not None:
                await self.awaited.call(Call("audit", "record", (entry,)))
        except StoreUnavailable as exc:
            log.warning("audit record dropped: %s", exc)

    # -- step 5 --------------------------------------------------------------------
    async def act(self, decision: Decision, request: SendRequest, *, client: Client | None = None) -> Outcome:
        """Send ``request`` as ``decision`` says with the SDK's ``*_async`` calls; see ``Gatekeeper.act``."""
        action = self._acting(decision, request)
        request = self._quiet(decision, request, action)
        if self.spend.capped:
            self._charged(decision, await self.awaited.run(self.spend.charge_steps(action, decision, request)))
        try:
            outcome = await self.channels[action].send_async(client or self.client, action, decision, request)
        except SendRejected as exc:
            await self.heard(decision, action, exc)
            raise
        # a Verify code sent: counted for the guard's conversion-aware limits (a notification never is)
        if decision.purpose == "mfa" and (code := self.sent_code(outcome)) is not None:
            await self.record_verification(*code)
        return outcome

    async def heard(self, decision: Decision, action: Action, exc: SendRejected) -> None:
        """What Twilio's refusal says about the number, kept; see ``Gatekeeper.heard``."""
        phone = self._heard_about(decision)
        if phone is None or phone.key is None:
            return
        verdict = await self.awaited.run(self.suppression.heard_steps(phone.key, exc.code))
        if exc.code == 21614 and action is Action.SMS and decision.facts is not None:
            await self.awaited.run(self.lookup.correct_steps(phone, decision.facts, line_type="landline"))
        if verdict is not None:
            raise self._refused(decision, verdict, exc) from exc

    # -- the routing API -----------------------------------------------------------
    async def notify(
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
        """Reach ``to`` with ``body``; see ``Gatekeeper.notify``. A refusal is an Outcome, not an error."""
        request = self._notify_request(
            body,
            from_=from_,
            messaging_service_sid=messaging_service_sid,
            status_callback=status_callback,
            call_status_callback=call_status_callback,
            params=params,
        )

        ask = Ask(country, sender=request.sender, client_key=client_key, last_verified=verified_day(last_verified))

        async def run_() -> Outcome:
            return await self._outcome(await self._decide(to, "notify", ask), request)

        return await self._once(idempotency_key, "notify", (to, country, request), run_)

    async def start_verification(
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
        """Start an MFA challenge; see ``Gatekeeper.start_verification``."""
        request, wanted = self._verify_request(channel, verify_service_sid, email, params)
        day = verified_day(last_verified)

        async def run_() -> Outcome:
            ask = Ask(country, wanted, have_email=email is not None, client_key=client_key, last_verified=day)
            decision = await self._decide(to, "mfa", ask)
            return await self._outcome(decision, request)

        return await self._once(idempotency_key, "verify", (to, country, request), run_)

    async def _outcome(self, decision: Decision, request: SendRequest) -> Outcome:
        if decision.enforced and decision.action is Action.REFUSE:
            return Outcome(action=Action.REFUSE, decision=decision)
        try:
            return await self.act(decision, request)
        except GateRefused as refused:  # Twilio said the person opted out (or quiet hours): a refusal, or DEFER
            return self._deferred(refused, self.settings.quiet.mode)

    async def _once(
        self, key: str | None, kind: str, asked: tuple[object, ...], run_: Callable[[], Awaitable[Outcome]]
    ) -> Outcome:
        """``Gatekeeper._once`` with awaits: the same steps (``idempotency.once``), carried out here."""
        if key is None:
            return await run_()
        cfg = self.settings.idempotency
        steps = once(
            f"{kind}:{check_key(key)}",
            fingerprint_of(kind, *asked),
            lease_seconds=self._lease_seconds,
            keep_seconds=cfg.window_seconds,
            wait_seconds=cfg.wait_ms / 1000,
            nothing_happened=nothing_sent,
            clock=self.clock,
        )
        kept: list[Outcome] = []
        answer: Any = None
        failure: BaseException | None = None
        while True:
            try:
                step = steps.send(answer) if failure is None else steps.throw(failure)
            except StopIteration as end:
                ran = end.value
                break
            answer, failure = None, None
            try:
                if isinstance(step, Call):
                    answer = await self.awaited.call(step)
                elif isinstance(step, SleepStep):
                    await self.sleep(step.seconds)
                else:
                    kept.append(await run_())
                    answer = OUTCOME.dump_json(kept[0])
            except BaseException as exc:
                failure = exc
        if ran.ran:
            return kept[0]
        assert ran.result is not None  # a completed send always stores its outcome
        return replace(OUTCOME.validate_json(ran.result), replayed=True)

    # -- consent and status --------------------------------------------------------
    async def opt_out(
        self, number: str, *, sender: str | None = None, country: str | None = None, source: str = "api"
    ) -> bool:
        """Record an opt-out; see ``Gatekeeper.opt_out``."""
        return await self.awaited.run(self.suppression.set_consent_steps(number, True, sender, country, source))

    async def opt_in(
        self, number: str, *, sender: str | None = None, country: str | None = None, source: str = "api"
    ) -> bool:
        """Lift an opt-out; see ``Gatekeeper.opt_in``."""
        return await self.awaited.run(self.suppression.set_consent_steps(number, False, sender, country, source))

    async def is_opted_out(self, number: str, *, sender: str | None = None, country: str | None = None) -> bool:
        return await self.awaited.run(self.suppression.is_opted_out_steps(number, sender, country))

    async def status_of(self, sid: str) -> StatusRecord | None:
        """The stored delivery status for a message or call SID (None if never seen)."""
        found: StatusRecord | None = await self.awaited.call(Call("statuses", "status_of", (sid,)))
        return found

    async def health(self) -> dict[str, Any]:
        """Whether the stores answer, and how they may lose an opt-out; see ``Gatekeeper.health``."""
        return health_report(await self.awaited.health(), await self.awaited.durability())

    async def audit(self, number: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest audit records, masked; see ``Gatekeeper.audit``."""
        if self.auditor.needs_key:
            await self.awaited.run(self.auditor.key_steps())
        wanted, scan = self._audit_query(number, limit)
        records: list[dict[str, Any]] = await self.awaited.call(Call("audit", "recent", (scan,)))
        return self._audit_filtered(records, wanted, limit)

    async def erase(self, number: str, *, country: str | None = None) -> None:
        """Forget a number but keep it uncontactable; see ``Gatekeeper.erase``."""
        if self.auditor.needs_key:
            await self.awaited.run(self.auditor.key_steps())
        for call in self._erasure(number, country):
            await self.awaited.call(call)

    # -- verifications ---------------------------------------------------------------
    async def record_verification(self, to: str, verification_sid: str, status: str) -> None:
        """Count one verification for the guard's conversion-aware limits; see ``Gatekeeper.record_verification``."""
        steps = self.verification_steps(to, verification_sid, status)
        if steps is not None:
            with self.guard.conversion.quietly(status):
                await self.awaited.run(steps)

    async def verify_check(self, to: str, code: str, *, verify_service_sid: str, **params: Any) -> Any:
        """Check a Verify code with ``create_async`` and count an approval; see ``Gatekeeper.verify_check``."""
        checks = self.client.verify.v2.services(verify_service_sid).verification_checks
        checked = await checks.create_async(to=to, code=code, **params)
        await self.record_verification(checked.to or to, checked.sid or "", checked.status or "")
        return checked

def _import_sdk(client: Client) -> tuple[object, ...]:
    """Touch the SDK resources the gate itself uses. twilio imports each on first attribute access (about
    40 ms for Lookup and the 2010 API): paid here, when the gate is built, not on the event loop by the
    first send."""
    account = client.api.v2010.account
    return client.lookups.v2, client.verify.v2, client.studio.v1, client.studio.v2, account.messages, account.calls
