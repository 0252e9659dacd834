"""Step 2, suppress: who must not be reached now, and the one place that writes it down.

Screening (before any Lookup): an opt-out in one of the sender's scopes (when the purpose honours
opt-outs), or a suppression after repeated hard delivery failures. A store that cannot be read
refuses the number: an unreadable opt-out list must never let a message reach someone who said STOP.

Writing: every consent change, from ``gate.opt_out``/``gate.opt_in`` and from the webhooks alike,
goes through :meth:`Suppression.record_consent`; every delivery status a webhook reports goes
through :meth:`Suppression.record_delivery`, which counts hard failures, suppresses a number past
the threshold and honours Twilio's own 21610 ("this number opted out").
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Hashable
from typing import NamedTuple, TypeVar, cast

from gatekeeper import phone as phones
from gatekeeper import policy as policies
from gatekeeper.errors import InvalidNumber, StoreUnavailable
from gatekeeper.models import CALL_ADDRESS_CHANNELS, CHANNEL_SCOPE_PREFIX, Phone
from gatekeeper.policy import Policy, Verdict
from gatekeeper.settings import WebhookSettings
from gatekeeper.stores.base import (
    ACCOUNT_SCOPE,
    Call,
    ConsentChange,
    Screening,
    StatusEvents,
    Steps,
    Stores,
    run,
    screening_trusted,
    status_events_trusted,
    version_reader,
)

log = logging.getLogger("gatekeeper.suppress")

T = TypeVar("T")

#: Twilio's code for "the recipient has opted out"; from a status callback it opts the number out account-wide.
OPTED_OUT_CODE = 21610
TWILIO_OPT_OUT_SOURCE = "twilio:21610"


def channel_scope(channel: str) -> str:
    """The opt-out scope of a whole messaging channel: a WhatsApp STOP is ``channel:whatsapp``."""
    return CHANNEL_SCOPE_PREFIX + channel


class Recorded(NamedTuple):
    """One consent change as stored; ``changed`` is False when the number was already in that state."""

    change: ConsentChange
    changed: bool


class Delivery(NamedTuple):
    """What one delivery status did to the stores.

    ``applied`` is False when an equal or later status was already stored; ``failures`` counts the
    number's hard failures in the window when this was one; ``suppressed`` says this one crossed the
    threshold; ``consent`` is the opt-out recorded for a 21610, if one was.
    """

    applied: bool
    failures: int | None
    suppressed: bool
    consent: Recorded | None
    at: float  # when it was stored


class Suppression:
    """Screens numbers against opt-outs and delivery failures, and records both."""

    def __init__(
        self,
        stores: Stores,
        settings: WebhookSettings,
        *,
        default_country: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stores = stores
        self._settings = settings
        self._by_sender = settings.opt_out_scope == "sender"
        self._failure_codes = frozenset(settings.failure_codes)
        self._default_country = default_country
        self._clock = clock
        self._capabilities: dict[str, tuple[tuple[object, ...], bool]] = {}  # see _capable

    # -- scopes --------------------------------------------------------------------
    def scopes(self, sender: str | None, country: str | None = None, channel: str | None = None) -> tuple[str, ...]:
        """The opt-out scopes a send from ``sender`` must respect: the account's; on a messaging channel
        with opt-outs of its own (WhatsApp…) that channel's; and the sender's own with ``opt_out_scope =
        "sender"``. Raises InvalidNumber for a sender that is no sender."""
        scopes: tuple[str, ...] = (ACCOUNT_SCOPE,)
        if channel is not None:
            scopes += (channel_scope(channel),)
        if self._by_sender and sender:
            scopes += (phones.sender_scope(sender, country or self._default_country),)
        return scopes

    def scope_of(self, sender: str | None, country: str | None = None, channel: str | None = None) -> str:
        """The scope an opt-out from or for ``sender`` (on ``channel``) is recorded under: the sender's own
        with ``opt_out_scope = "sender"``, else the channel's (when its opt-outs are its own), else the account."""
        if self._by_sender and sender:
            return phones.sender_scope(sender, country or self._default_country)
        if channel is not None and self._settings.channel_opt_outs == "channel":
            return channel_scope(channel)
        return ACCOUNT_SCOPE

    # -- screening -----------------------------------------------------------------
    def screen(self, phone: Phone, policy: Policy, scopes: tuple[str, ...]) -> Verdict | None:
        """A refusal when the number opted out (and ``policy`` honours that) or is suppressed; else None."""
        return run(self._stores, self.screen_steps(phone, policy, scopes))

    def screen_steps(self, phone: Phone, policy: Policy, scopes: tuple[str, ...]) -> Steps[Verdict | None]:
        key = phone.key
        assert key is not None
        wh = self._settings
        try:
            if self._stores.journal is not None and (yield Call("journal", "holds", (key,))):
                # A webhook event about this number (a STOP, perhaps) waits in this host's journal for the shared
                # store: until it is applied, nothing goes to the number.
                return policies.refuse("store_unavailable", "consent:journal_pending")
            limits = {
                "now": self._clock(),
                "window_seconds": wh.failure_window_seconds,
                "threshold": wh.failure_threshold,
            }
            if policy.opt_outs_block and self._screens_at_once():  # both reads in one step: one Redis round trip
                scope, suppression = yield Call("opt_outs", "screening", (key, scopes), limits)
            else:
                scope = (yield Call("opt_outs", "opted_out_scope", (key, scopes))) if policy.opt_outs_block else None
                suppression = yield Call("failures", "suppression", (key,), limits)
        except StoreUnavailable as exc:
            # Fail safe: an unreadable opt-out list must never let a message reach someone who said STOP.
            log.error("suppression stores unavailable, refusing %s: %s", phones.mask(key), exc)
            return policies.refuse("store_unavailable", f"store:{exc.reason}")  # unavailable, or pool_exhausted
        return policies.screen_suppression(scope, suppression, policy)

    def _capable(self, slot: str, stores: tuple[object, ...], able: Callable[[], bool]) -> bool:
        """``able()``, worked out once for these store objects and again only when one is swapped: a Protocol
        isinstance costs microseconds, on every send."""
        seen = self._capabilities.get(slot)
        if seen is None or any(a is not b for a, b in zip(seen[0], stores, strict=True)):
            seen = self._capabilities[slot] = (stores, able())
        return seen[1]

    def _screens_at_once(self) -> bool:
        """Whether one store keeps opt-outs and failures and reads both in one step (``stores.base.Screening``)."""
        store: object = self._stores.opt_outs
        failures: object = self._stores.failures
        return self._capable(
            "screening",
            (store, failures),
            lambda: store is failures and isinstance(store, Screening) and screening_trusted(store),
        )

    def clear_mark(self) -> Hashable | None:
        """A mark of the stores' state that stays equal while nothing suppressing is written; None when a
        store cannot tell (no trusted :class:`~gatekeeper.stores.base.SuppressionVersion`). The blocking
        gate's hot path: the versions read directly (:meth:`clear_mark_steps` is the same, as store calls)."""
        opt_outs, failures = self._stores.opt_outs, self._stores.failures
        read_o, read_f = version_reader(opt_outs, "opt_outs"), version_reader(failures, "failures")
        if read_o is None or read_f is None or self._stores.journal is not None:  # a journal: screened every time
            return None
        version = read_o()
        if id(failures) == id(opt_outs):  # one store: its version counts every suppressing write, read it once
            return (id(opt_outs), version)
        return (id(opt_outs), version, id(failures), read_f())  # a store swapped for another is a new mark

    def clear_mark_steps(self) -> Steps[Hashable | None]:
        """:meth:`clear_mark` as store calls: each version is read as its store is (an async gate reads a
        store that may block in a worker thread, like any of its verbs)."""
        opt_outs, failures = self._stores.opt_outs, self._stores.failures
        unversioned = version_reader(opt_outs, "opt_outs") is None or version_reader(failures, "failures") is None
        if unversioned or self._stores.journal is not None:
            return None
        read_o = yield Call("opt_outs", "suppression_version")
        if id(failures) == id(opt_outs):
            return (id(opt_outs), read_o)
        read_f = yield Call("failures", "suppression_version")
        return (id(opt_outs), read_o, id(failures), read_f)  # a store swapped for another is a new mark

    def screen_since(
        self, mark: Hashable | None, phone: Phone, policy: Policy, scopes: tuple[str, ...]
    ) -> tuple[Verdict | None, Hashable | None]:
        """:meth:`screen` again, unless the stores are where they were at ``mark``, a mark of this number
        found clear: then it still is. Returns the verdict and the mark to keep (None unless clear)."""
        if mark is not None and self.clear_mark() == mark:  # the hot path: nothing suppressing written since
            return None, mark
        return run(self._stores, self.screen_since_steps(mark, phone, policy, scopes))

    def screen_since_steps(
        self, mark: Hashable | None, phone: Phone, policy: Policy, scopes: tuple[str, ...]
    ) -> Steps[tuple[Verdict | None, Hashable | None]]:
        now = yield from self.clear_mark_steps()  # taken before the read: a write in between changes the next mark
        if mark is not None and now == mark:
            return None, mark
        verdict = yield from self.screen_steps(phone, policy, scopes)
        return verdict, (now if verdict is None else None)

    def destination(self, number: str, country: str | None) -> tuple[str, str | None]:
        """The key ``number``'s consent is kept under and the channel with opt-outs of its own, or InvalidNumber."""
        phone = phones.normalize(number, country or self._default_country)
        if not phone.ok or phone.key is None:
            shown = phones.mask(phone.key) if phone.key else "the input"
            problem = phone.problem or ""
            raise InvalidNumber(f"{shown} is not a reachable number or address ({problem})", reason=problem)
        channel = phone.channel if phone.channel not in CALL_ADDRESS_CHANNELS else None
        return phone.key, channel

    def set_consent(
        self,
        number: str,
        *,
        opted_out: bool,
        sender: str | None = None,
        country: str | None = None,
        source: str = "api",
    ) -> bool:
        """Record an opt-out or opt-in of ``number`` (``whatsapp:+1…``: of that channel, where its opt-outs are its
        own); True if it changed anything."""
        return run(self._stores, self.set_consent_steps(number, opted_out, sender, country, source))

    def set_consent_steps(
        self, number: str, opted_out: bool, sender: str | None, country: str | None, source: str
    ) -> Steps[bool]:
        key, channel = self.destination(number, country)
        scope = self.scope_of(sender, country, channel)
        recorded = yield from self.record_consent_steps(key, scope, opted_out, source, once_per_source=False)
        return recorded.changed

    def is_opted_out(self, number: str, *, sender: str | None = None, country: str | None = None) -> bool:
        return run(self._stores, self.is_opted_out_steps(number, sender, country))

    def is_opted_out_steps(self, number: str, sender: str | None, country: str | None) -> Steps[bool]:
        key, channel = self.destination(number, country)
        scope = yield Call("opt_outs", "opted_out_scope", (key, self.scopes(sender, country, channel)))
        return scope is not None

    # -- writing -------------------------------------------------------------------
    def record_consent(
        self, e164: str, scope: str, *, opted_out: bool, source: str, once_per_source: bool = False
    ) -> Recorded:
        """Record an opt-out (``opted_out=True``) or opt-in of ``e164`` for ``scope``.

        ``source`` says where it came from (``api``, ``webhook:STOP:SM…``). With ``once_per_source``
        a change with the same source, scope and direction already recorded is not written again:
        an event whose first attempt wrote before the store failed is then retried without doubling.
        """
        return run(self._stores, self.record_consent_steps(e164, scope, opted_out, source, once_per_source))

    def record_consent_steps(
        self, e164: str, scope: str, opted_out: bool, source: str, once_per_source: bool
    ) -> Steps[Recorded]:
        if once_per_source:
            history: list[ConsentChange] = yield Call("opt_outs", "consent_history", (e164,), {"limit": 20})
            for past in history:
                if past.source == source and past.scope == scope and past.opted_out == opted_out:
                    return Recorded(past, changed=False)
        at = self._clock()
        verb = "opt_out" if opted_out else "opt_in"
        changed = yield Call("opt_outs", verb, (e164, scope), {"source": source, "at": at})
        return Recorded(ConsentChange(e164, scope, opted_out, source, at), changed=bool(changed))

    def heard(self, key: str, code: int | None) -> Verdict | None:
        """Twilio refused a send to ``key`` with ``code``: record what that says; a refusal verdict for 21610.

        21610 opts the number out account-wide (source ``twilio:21610``), as the same code in a status
        callback does; a code in ``failure_codes`` counts as a hard failure (and may suppress the number).
        """
        return run(self._stores, self.heard_steps(key, code))

    def heard_steps(self, key: str, code: int | None) -> Steps[Verdict | None]:
        if code in self._failure_codes:
            yield from self._failure_steps(key, f"send:{code}:{secrets.token_hex(6)}", code, self._clock())
        if code != OPTED_OUT_CODE:
            return None
        yield from self._opted_out_by_twilio_steps(key)
        return policies.refuse("opted_out", "opted_out:account", "twilio:21610")

    def _opted_out_by_twilio_steps(self, key: str) -> Steps[Recorded | None]:
        """Twilio says the number opted out (of this sender at least): honour it account-wide at once. The source
        is the same for every 21610, so "already opted out" is what makes a repeat a no-op."""
        if (yield Call("opt_outs", "opted_out_scope", (key, (ACCOUNT_SCOPE,)))) is not None:
            return None
        return (yield from self.record_consent_steps(key, ACCOUNT_SCOPE, True, TWILIO_OPT_OUT_SOURCE, False))

    def _failure_steps(self, key: str, event_id: str, code: int, at: float) -> Steps[tuple[int, bool]]:
        """Count one hard failure; suppress the number when it reaches the threshold."""
        wh = self._settings
        window = {"at": at, "window_seconds": wh.failure_window_seconds}
        failures = yield Call("failures", "record_failure", (key, event_id), window)
        if failures < wh.failure_threshold:
            return failures, False
        until = {"ttl_seconds": wh.suppression_ttl_seconds, "reason": f"delivery_failures:{code}", "at": at}
        yield Call("failures", "suppress", (key,), until)
        log.warning("suppressed %s after %s hard delivery failures", phones.mask(key), failures)
        return failures, True

    def reachable(self, e164: str) -> None:
        """The number wrote to us: it is reachable again, so its failures and suppression are lifted."""
        self._stores.failures.lift_suppression(e164)

    def record_delivery(
        self,
        sid: str,
        status: str,
        rank: int,
        *,
        error_code: int | None,
        to: str | None,
        to_hash: str | None,
        failure_id: str,
    ) -> Delivery:
        """Store a message or call status (never moving back) and what it says about ``to``.

        Each write is idempotent (a failure counts once per ``failure_id``, a status never moves
        back, a 21610 opts out only a number not opted out already), so a retried event completes a
        half-done one without doubling anything.
        """
        steps = self._delivery_steps(sid, status, rank, error_code=error_code, to=to, to_hash=to_hash, event=failure_id)
        return run(self._stores, steps)

    def takes_status_event(self, error_code: int | None, to: str | None) -> bool:
        """Whether a status callback writes nothing but its status (no failure to count, no opt-out to record) and
        the status store takes such an event whole, seen-check included (``stores.base.StatusEvents``): then
        :meth:`record_status_event` does it in one step, without the idempotency claim."""
        if (
            to is not None
            and error_code is not None
            and (error_code in self._failure_codes or error_code == OPTED_OUT_CODE)
        ):
            return False
        store = self._stores.statuses
        return self._capable(
            "status_events", (store,), lambda: isinstance(store, StatusEvents) and status_events_trusted(store)
        )

    def record_status_event(
        self, event: str, sid: str, status: str, rank: int, *, error_code: int | None, to_hash: str | None
    ) -> Delivery | None:
        """Store the status of the event ``event`` in one step; None when that event was taken already. Only
        after :meth:`takes_status_event` said yes."""
        at = self._clock()
        # takes_status_event() said yes, and remembers why: a Protocol isinstance here would cost ~30 us a callback
        store = cast(StatusEvents, self._stores.statuses)
        ttl = self._settings.status_ttl_seconds
        new, applied = store.apply_status_event(
            event, sid, status, rank, error_code=error_code, at=at, to_hash=to_hash, ttl_seconds=ttl
        )
        return Delivery(applied, None, False, None, at) if new else None

    def _delivery_steps(
        self,
        sid: str,
        status: str,
        rank: int,
        *,
        error_code: int | None,
        to: str | None,
        to_hash: str | None,
        event: str,
    ) -> Steps[Delivery]:
        at = self._clock()
        ttl = self._settings.status_ttl_seconds
        written = {"error_code": error_code, "at": at, "to_hash": to_hash, "ttl_seconds": ttl}
        applied = yield Call("statuses", "apply_status", (sid, status, rank), written)
        failures: int | None = None
        suppressed = False
        if to is not None and error_code is not None and error_code in self._failure_codes:
            failures, suppressed = yield from self._failure_steps(to, event, error_code, at)
        consent = None
        if to is not None and error_code == OPTED_OUT_CODE:
            consent = yield from self._opted_out_by_twilio_steps(to)
        return Delivery(bool(applied), failures, suppressed, consent, at)
