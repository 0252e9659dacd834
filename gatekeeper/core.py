"""What a gate is made of, and what it decides without I/O: shared by the blocking gate and the async one.

:class:`GateCore` builds the parts from :class:`~gatekeeper.settings.Settings` (policies, the
Lookup rules and memo, kept routes, the consent writer, the audit, the channels) and holds the
checks and the request building that both :class:`~gatekeeper.gate.Gatekeeper` and
:class:`~gatekeeper.aio.AsyncGatekeeper` run before and after their I/O. Each gate adds only the
driving: blocking calls, or awaits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar, cast

from pydantic import TypeAdapter
from twilio.rest import Client

from gatekeeper import channels, metrics, pipeline, router
from gatekeeper import phone as phones
from gatekeeper import policy as policies
from gatekeeper.audit import Auditor
from gatekeeper.conversion import SENT_CODES, Kind
from gatekeeper.errors import GateRefused, InvalidArgument, InvalidArgumentType, SendRejected
from gatekeeper.guard import Guard
from gatekeeper.lookup import LookupConfig, LookupService
from gatekeeper.models import Action, Decision, Outcome, Phone, Purpose, SendRequest
from gatekeeper.pipeline import Ask
from gatekeeper.policy import Policy, Verdict
from gatekeeper.rates import Api, Breaker, Budgets, LookupGuard
from gatekeeper.router import Channel
from gatekeeper.routes import Routes
from gatekeeper.settings import Settings
from gatekeeper.spend import Spend
from gatekeeper.stores.base import Call, Erasure, Risk, Steps, Stores, Windows, run
from gatekeeper.suppress import Suppression

T = TypeVar("T")
log = logging.getLogger("gatekeeper")
#: The notifications quiet hours hold back, and those of them a Messaging Service can schedule (send_at).
QUIET_ACTIONS = frozenset({Action.SMS, Action.MESSAGE, Action.WHATSAPP, Action.VOICE})
SCHEDULABLE = frozenset({Action.SMS, Action.MESSAGE, Action.WHATSAPP})
SCHEDULE_LEAD_SECONDS = 15 * 60 + 1  # Twilio schedules a message at least 15 minutes ahead
SCHEDULE_MAX_SECONDS = 35 * 86_400  # and at most 35 days
G = TypeVar("G", bound="GateCore")
NO_REASONS: tuple[str, ...] = ()

OUTCOME = TypeAdapter(Outcome)


def health_report(stores: Mapping[str, bool], risks: list[Risk]) -> dict[str, Any]:
    """``gate.health()``: ``ok`` when every store the webhooks write answers; ``durable`` when none of them may
    lose an acknowledged opt-out, ``durability`` listing how they may (``persistence:none`` …)."""
    return {
        "ok": all(stores.values()),
        "stores": {role: "ok" if up else "unavailable" for role, up in stores.items()},
        "durable": not risks,
        "durability": [{"code": risk.code, "detail": risk.detail} for risk in risks],
    }


class GateCore:
    """The parts of a gate, built from settings, and its I/O-free steps (see the module docstring)."""

    asynchronous = False  # whether this gate's own Lookups go through an async twilio transport

    def __init__(
        self,
        twilio_client: Client,
        *,
        settings: Settings | None = None,
        policy: Mapping[str, Policy] | None = None,
        stores: Stores | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        sleep_async: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        transport_async = getattr(getattr(twilio_client, "http_client", None), "is_async", False) is True
        if transport_async is not self.asynchronous:
            raise InvalidArgument(
                f"{type(self).__name__} needs a twilio Client whose http_client is "
                + ("an AsyncTwilioHttpClient" if self.asynchronous else "blocking (not an AsyncTwilioHttpClient)")
                + ": use "
                + ("AsyncGatekeeper" if transport_async else "Gatekeeper")
                + " for this client, or give "
                "GatedClient(async_client, gate) a gate built over its own client of the other kind"
            )
        self.client = twilio_client
        phones.mask_logs(getattr(getattr(twilio_client, "http_client", None), "logger", None))
        self.settings = s = settings or Settings()
        self.policies: dict[str, Policy] = {**s.policies(), **policies.overrides(policy)}
        self.stores = stores or Stores.memory(max_entries=s.cache.max_entries)
        self.clock = clock
        self.default_country = s.lookup.default_country_code
        self.lookup = LookupService(
            twilio_client, self.stores.cache, LookupConfig.from_settings(s), clock=clock, sleep=sleep
        )
        self.routes = Routes(self.lookup, s.cache.route_memo_entries)
        self.budgets = Budgets(self.stores, s.rates, clock=clock)
        self.breaker = Breaker(
            self.stores, failures=s.lookup.breaker_failures, interval=s.lookup.breaker_interval_seconds, clock=clock
        )
        self.lookup.guard = LookupGuard(self.stores, self.budgets, self.breaker, s.lookup.max_concurrent)
        self._pace, self._pace_async = sleep, sleep_async
        self.suppression = Suppression(self.stores, s.webhooks, default_country=self.default_country, clock=clock)
        self.auditor = Auditor(self.stores, s.audit, clock=clock)
        self.guard = Guard(self.stores, s.guard, pseudonym=self.auditor.digest, clock=clock)
        self.spend = Spend(self.stores, s.spend, clock=clock)
        self.quiet_hours = s.quiet.hours()
        r = s.routing
        send_policy = channels.SendPolicy(
            max_retries=s.twilio.max_send_retries, sleep=sleep, sleep_async=sleep_async, budget=_SendBudget(self)
        )
        self.channels = channels.registry(
            send_policy,
            voice=r.voice,
            language=r.language,
            status_callback=r.status_callback,
            call_status_callback=r.call_status_callback,
        )
        # A pending claim is a short lease, so a process that dies mid-send frees its key soon.
        attempts = s.twilio.max_send_retries + 1
        self._lease_seconds = max(60.0, 2 * attempts * (s.twilio.timeout_ms / 1000 + 5))

    async def _run_async(self, steps: Steps[T]) -> T:
        """Carry out store steps from a coroutine: in a worker thread here (the blocking gate's stores); the async
        gate awaits them instead."""
        return await asyncio.to_thread(run, self.stores, steps)

    def _audit_query(self, number: str | None, limit: int) -> tuple[str | None, int]:
        """The pseudonym to look for (None: every record) and how many of the newest records to read."""
        if not isinstance(limit, int) or limit < 0:
            raise InvalidArgument("limit must be a non-negative integer")
        if number is None:
            return None, limit
        return self.auditor.digest(self._subject(number, None)), max(limit, self.settings.audit.max_entries)

    @staticmethod
    def _audit_filtered(records: list[dict[str, Any]], wanted: str | None, limit: int) -> list[dict[str, Any]]:
        return [r for r in records if wanted is None or r.get("to_hash") == wanted][:limit]

    def _subject(self, number: str, country: str | None) -> str:
        """The number a record is about (a channel address's number), or InvalidNumber."""
        return self.suppression.destination(number, country)[0]

    def _erasure(self, number: str, country: str | None) -> list[Call]:
        """One ``erase`` per distinct store holding the number's records; the process forgets what it holds."""
        subject = self._subject(number, country)
        to_hash = self.auditor.digest(subject)
        calls, seen = [], set()
        for role in ("opt_outs", "failures", "cache", "statuses", "audit"):
            backend = getattr(self.stores, role)
            if id(backend) in seen:
                continue
            seen.add(id(backend))
            if not isinstance(backend, Erasure):
                raise InvalidArgumentType(f"the {role} store ({type(backend).__name__}) cannot erase a number")
            calls.append(Call(role, "erase", (subject,), {"to_hash": to_hash, "at": self.clock()}))
        self.lookup.forget(subject)
        return calls

    def _policy(self, purpose: str) -> Policy:
        try:
            return self.policies[purpose]
        except (KeyError, TypeError):
            raise InvalidArgument(f"purpose must be 'notify' or 'mfa', not {purpose!r}") from None

    def derive(
        self: G,
        *,
        policy: Mapping[str, Policy] | None = None,
        before_lookup: Callable[[], None] | None = None,
        guarded: bool = True,
    ) -> G:
        """A gate sharing this one's client, stores, Lookup cache and parts, with other policies for some
        purposes, ``before_lookup`` called before every Lookup request (batch enrichment's permits), and/or
        no velocity rules (``guarded=False``: enrichment is no attempt to reach anyone)."""
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.guard = self.guard if guarded else self.guard.off()
        if policy is not None:
            twin.policies = {**self.policies, **policies.overrides(policy)}
        if before_lookup is not None:
            twin.lookup = self.lookup.with_before_request(before_lookup)
        return twin

    def _strict(
        self, request: SendRequest, country: str | None, client_key: str | None = None, last_verified: object = None
    ) -> Ask:
        """How an adapter asks for ``request``: exactly its channel."""
        ask = pipeline.strict_ask(request, country, dropin_reroute=self.settings.routing.dropin_reroute)
        if client_key or last_verified is not None:  # a rare ask: the common one stays as strict_ask made it
            ask = ask._replace(client_key=client_key or None, last_verified=pipeline.verified_day(last_verified))
        return ask

    def guard_steps(
        self, phone: Phone, purpose: Purpose, client_key: str | None
    ) -> Steps[tuple[Verdict | None, tuple[str, ...]]]:
        """The guard's count of an attempt screening found clear: a refusal (enforce), or the reasons an observed
        attempt tripped (``guard.py``)."""
        tripped = yield from self.guard.check_steps(phone, purpose, client_key)
        return tripped.verdict, tripped.observed

    def verification_steps(self, to: str, verification_sid: str, status: str) -> Steps[None] | None:
        """The store steps counting one verification for the guard's conversion-aware limits: ``pending`` as
        started, ``approved`` as approved (``conversion.py``); None when there is nothing to count."""
        kind = {"pending": "started", "approved": "approved"}.get(str(status).lower())
        if kind is None or not verification_sid or not isinstance(verification_sid, str) or not isinstance(to, str):
            return None
        if not self.guard.conversion.enabled or not isinstance(self.stores.windows, Windows):
            return None  # off, or a store without windows: nothing counted (guard.py warns of the latter)
        phone = phones.normalize(to, self.default_country)
        if phone.e164 is None:
            return None
        return self.guard.conversion.record_steps(phone, verification_sid, cast("Kind", kind))

    @staticmethod
    def sent_code(outcome: Outcome) -> tuple[str, str, str] | None:
        """A Verify code the gate sent, as :meth:`verification_steps` counts it (``to``, its SID, ``pending``)."""
        return (outcome.decision.to, outcome.sid, "pending") if outcome.action in SENT_CODES and outcome.sid else None

    @staticmethod
    def observed(decision: Decision, reasons: tuple[str, ...]) -> Decision:
        """``decision`` with the reasons of rules it tripped in observe mode (for the audit; it still goes)."""
        return dataclasses.replace(decision, reasons=(*decision.reasons, *reasons)) if reasons else decision

    @staticmethod
    def _checked(decision: Decision, uri: str) -> Decision:
        """An adapter's decision, or its enforced refusal raised as the error Twilio would have answered."""
        if decision.enforced and decision.action is Action.REFUSE:
            raise GateRefused(decision, code=decision.twilio_code or 21211, uri=uri)
        return decision

    @staticmethod
    def _acting(decision: Decision, request: SendRequest) -> Action:
        """The action a send takes: the decision's, or in observe mode what the request asked for."""
        action = decision.action if decision.enforced else request.asked
        if action is Action.REFUSE:
            raise GateRefused(decision, code=decision.twilio_code or 21211)
        return action

    def _quiet(self, decision: Decision, request: SendRequest, action: Action) -> SendRequest:
        """Quiet hours (``[quiet]``) for a notification about to go: the request to send (in defer mode, with a
        Messaging Service, scheduled for the window's opening: ``send_at``, at least the 15 minutes Twilio asks
        ahead), or GateRefused naming the quiet zone and ``retry_at`` (notify answers DEFER in defer mode)."""
        mode = self.settings.quiet.mode
        if mode == "off" or decision.purpose != "notify" or action not in QUIET_ACTIONS:
            return request
        phone = phones.normalize(decision.to, self.default_country)
        if phone.e164 is None:  # sip:, client: … have no local time
            return request
        now = self.clock()
        verdict = self.quiet_hours.check(phone.e164, now, "notify")
        if verdict.allowed:
            return request
        metrics.quiet_hours(mode, phone.region)
        if mode == "observe":
            log.info("quiet hours (observe): a notification to %s went in %s", phones.mask(phone.e164), verdict.reason)
            return request
        earliest = verdict.earliest
        if mode == "defer" and earliest is not None and request.messaging_service_sid and action in SCHEDULABLE:
            send_at = max(earliest, datetime.fromtimestamp(now + SCHEDULE_LEAD_SECONDS, timezone.utc))
            if send_at.timestamp() - now <= SCHEDULE_MAX_SECONDS:
                return request._replace(params={**request.params, "send_at": send_at, "schedule_type": "fixed"})
        retry = f"retry_at:{earliest.isoformat()}" if earliest is not None else "retry_at:none"
        verdict_ = policies.refuse("quiet_hours", verdict.reason or "quiet_hours", retry)
        refused = router.refusal(decision.to, "notify", verdict_, decision.facts, self._policy("notify"))
        raise GateRefused(refused, code=refused.twilio_code or 20429)

    @staticmethod
    def _deferred(refused: GateRefused, mode: str) -> Outcome:
        """A refusal as notify answers it: DEFER (with ``detail["earliest"]``) for quiet hours in defer mode."""
        decision = refused.decision
        quiet = next((r for r in decision.reasons if r.startswith("retry_at:")), None)
        if mode == "defer" and quiet and any(r.startswith("quiet_hours:") for r in decision.reasons):
            return Outcome(action=Action.DEFER, decision=decision, detail={"earliest": quiet.removeprefix("retry_at:")})
        return Outcome(action=Action.REFUSE, decision=decision)

    def _charged(self, decision: Decision, verdict: Verdict | None) -> None:
        """After ``[spend]`` charged a send: its refusal raised as the error Twilio would have answered."""
        if verdict is not None:
            refused = router.refusal(
                decision.to, decision.purpose, verdict, decision.facts, self._policy(decision.purpose)
            )
            raise GateRefused(refused, code=refused.twilio_code or 20429)

    def _refused(self, decision: Decision, verdict: Verdict, exc: SendRejected) -> GateRefused:
        """Twilio's own refusal (21610), as the gate's: what the next decision will say without asking."""
        refused = router.refusal(decision.to, decision.purpose, verdict, decision.facts, self._policy(decision.purpose))
        return GateRefused(refused, code=exc.code or 21610, uri=exc.uri)

    def _heard_about(self, decision: Decision) -> Phone | None:
        """The number a refused send was for, as the stores key it."""
        phone = phones.normalize(decision.to, self.default_country)
        return phone if phone.ok and phone.key is not None else None

    @staticmethod
    def _notify_request(
        body: object,
        *,
        from_: str | None,
        messaging_service_sid: str | None,
        status_callback: str | None,
        call_status_callback: str | None,
        params: dict[str, Any],
    ) -> SendRequest:
        if not isinstance(body, str) or not body:
            raise InvalidArgument("body must be a non-empty string")
        if not from_ and not messaging_service_sid:
            raise InvalidArgument("notify needs from_ or messaging_service_sid")
        return SendRequest(
            Action.SMS,
            body=body,
            from_=from_,
            messaging_service_sid=messaging_service_sid,
            status_callback=status_callback,
            params=params,
            call_status_callback=call_status_callback,
        )

    @staticmethod
    def _verify_request(
        channel: object, verify_service_sid: str | None, email: str | None, params: dict[str, Any]
    ) -> tuple[SendRequest, Channel]:
        wanted = router.VERIFY_CHANNELS.get(channel) if isinstance(channel, str) else None
        if wanted is None:
            raise InvalidArgument(f"channel must be one of {', '.join(router.VERIFY_CHANNELS)}, not {channel!r}")
        if email is not None and not phones.is_email(email):
            raise InvalidArgument("email must be an address like name@example.com")
        return SendRequest(wanted[1], verify_service_sid=verify_service_sid, email=email, params=params), wanted[0]


class _SendBudget:
    """``[rates]`` for the channels (``channels.base.SendBudget``): the gate's budgets, driven blocking or awaited
    as the gate drives its other store steps; an API without a rate and without a pause costs nothing."""

    def __init__(self, core: GateCore) -> None:
        self._core = core
        self.max_wait = core.budgets.max_wait

    def permit(self, api: str, account: str | None) -> None:
        budgets = self._core.budgets
        if budgets.free(api, account):
            return
        wait = run(self._core.stores, budgets.take_steps(cast("Api", api), account))
        if wait:
            self._core._pace(wait)

    async def permit_async(self, api: str, account: str | None) -> None:
        budgets = self._core.budgets
        if budgets.free(api, account):
            return
        wait = await self._core._run_async(budgets.take_steps(cast("Api", api), account))
        if wait:
            await self._core._pace_async(wait)

    def paused(self, api: str, account: str | None, seconds: float) -> None:
        run(self._core.stores, self._core.budgets.pause_steps(cast("Api", api), account, seconds))
