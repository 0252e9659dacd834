"""Steps 1 to 4 as one sequence that does no I/O: it yields where it needs the stores or Lookup.

This is the sans-I/O split (h11, httpcore): :func:`decide` is a generator that normalizes, screens
the number locally, and yields a :class:`NeedScreen` (opt-outs and suppression: the stores) and a
:class:`NeedFacts` (Lookup, through its cache) when it gets that far; whoever drives it answers each
need and sends the answer back in. :class:`~gatekeeper.gate.Gatekeeper` answers with blocking calls;
an async gate answers with awaits, and the order of the steps is written only here.

::

    steps = pipeline.decide(number, "notify", policy, Ask(), default_country="US")
    need = next(steps)                       # StopIteration(value=Decided) when it needs nothing
    need = steps.send(answer_to(need))       # ... until StopIteration carries the Decided
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Generator
from typing import NamedTuple

from gatekeeper import phone as phones
from gatekeeper import router
from gatekeeper.errors import InvalidArgument
from gatekeeper.models import (
    CALL_ADDRESS_CHANNELS,
    Action,
    Decision,
    Phone,
    PhoneFacts,
    Purpose,
    SendRequest,
    dated,
)
from gatekeeper.policy import Policy, Verdict, evaluate, refuse, screen_number
from gatekeeper.router import Channel


class Ask(NamedTuple):
    """How the caller asks.

    The routing API (``notify``, ``start_verification``, ``decide``) asks with ``strict=False`` and
    gets the best channel. The drop-in asks with ``strict=True`` for the ``channel`` its caller chose
    and gets that channel or a refusal (``reroute_landline`` lets a text to a landline become a call).
    ``sender`` picks the opt-out scopes; ``country`` is the hint for numbers in national format.
    """

    country: str | None = None
    channel: Channel | None = None
    sender: str | None = None
    strict: bool = False
    reroute_landline: bool = False
    have_email: bool = False
    client_key: str | None = None  # who asks (``"ip:203.0.113.9"``, ``"user:42"``), for the guard's client rules
    last_verified: str | None = None  # YYYYMMDD: the caller last confirmed the number was the person's (verified_day)


#: Lookup answers ``reassigned_number`` for US numbers only: elsewhere the date is not sent (nothing to pay for).
REASSIGNED_COUNTRIES = frozenset({"US"})


def verified_day(value: object) -> str | None:
    """``last_verified=`` as Lookup's ``LastVerifiedDate`` (YYYYMMDD): a ``date``/``datetime``, ``"2026-01-15"`` or
    ``"20260115"``; None stays None; anything else, or a day in the future, is an InvalidArgument."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        value = value.date()
    if isinstance(value, str):
        text = value.strip().replace("-", "")
        try:
            value = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:])) if len(text) == 8 else None
        except ValueError:
            value = None
    if not isinstance(value, datetime.date):
        raise InvalidArgument("last_verified is a date, or a day like '2026-01-15' or '20260115'")
    if value > datetime.date.today() + datetime.timedelta(days=1):  # a day of slack for time zones
        raise InvalidArgument("last_verified is a day in the past: when you last confirmed the number was theirs")
    return value.strftime("%Y%m%d")


def strict_ask(request: SendRequest, country: str | None, *, dropin_reroute: bool) -> Ask:
    """How an adapter asks for ``request``: exactly its channel, its sender's opt-out scopes."""
    channel = router.ASKED_CHANNEL.get(request.asked)
    if channel is None:
        raise InvalidArgument(f"cannot check a request to {request.asked.value}")
    reroute = dropin_reroute and request.asked is Action.SMS
    have_email = request.email is not None
    return Ask(country, channel, request.sender, strict=True, reroute_landline=reroute, have_email=have_email)


class NeedScreen(NamedTuple):
    """Step 2 needs the stores: answer with ``Verdict | None`` (a refusal, or clear)."""

    phone: Phone
    policy: Policy
    sender: str | None
    country: str | None
    channel: str | None  # a messaging channel with opt-outs of its own (``whatsapp``…), None for SMS and calls


class NeedFacts(NamedTuple):
    """Step 3 needs Lookup: answer with ``(facts, lookup_error)``; facts are local when Lookup failed."""

    phone: Phone
    policy: Policy


Need = NeedScreen | NeedFacts

#: perf_counter marks: at the start, after normalize, after suppress, after enrich.
Marks = tuple[float, float, float, float]


class Decided(NamedTuple):
    """The pipeline's result: the decision, the number as the audit should pseudonymise it, the step marks,
    and the parsed number (None for an email address)."""

    decision: Decision
    number: str
    marks: Marks
    phone: Phone | None = None


def decide(
    number: str, purpose: Purpose, policy: Policy, ask: Ask, *, default_country: str | None
) -> Generator[Need, object, Decided]:
    """Normalize, suppress, enrich and decide one attempt; see the module docstring for how to drive it."""
    clock = time.perf_counter
    t0 = clock()
    if ask.channel == "email" and isinstance(number, str) and "@" in number:
        return Decided(_email(number, purpose, policy), number.strip(), (t0, t0, t0, t0))
    phone = phones.normalize(number, ask.country or default_country)
    t_norm = t_supp = t_enrich = clock()
    facts: PhoneFacts | None = None
    verdict = screen_number(phone, policy)
    if verdict is None:
        screened = yield NeedScreen(phone, policy, ask.sender, ask.country, consent_channel(phone, ask))
        assert screened is None or isinstance(screened, Verdict)
        verdict = screened
        t_supp = t_enrich = clock()
    if verdict is None and phone.e164 is not None:  # an address with no number behind it has nothing to look up
        enriched = yield NeedFacts(phone, _asking(policy, phone, ask))
        assert isinstance(enriched, tuple)
        facts, lookup_error = enriched
        t_enrich = clock()
        line_types = phone.channel is None and ask.channel != "whatsapp"
        verdict = evaluate(facts, policy, lookup_error=lookup_error, line_types=line_types)
    to = phone.to or phone.raw
    if verdict is not None and (facts is None or not verdict.allowed):
        decision = router.refusal(to, purpose, verdict, facts, policy)
    else:
        decision = router.route(
            verdict or _CLEAR,
            facts,
            purpose,
            policy,
            to=to,
            address=phone.channel,
            channel=ask.channel,
            strict=ask.strict,
            reroute_landline=ask.reroute_landline,
            have_email=ask.have_email,
        )
    # The audit pseudonymises the number whatever channel reaches it, so its records join up.
    return Decided(decision, phone.key or phone.raw, (t0, t_norm, t_supp, t_enrich), phone)


_CLEAR = Verdict(allowed=True)


def _asking(policy: Policy, phone: Phone, ask: Ask) -> Policy:
    """The policy whose fields the Lookup asks for: with ``reassigned_number`` for the caller's last-verified day
    when a rule reads it (its answer depends on the day: cached apart per day, ``lookup.dated``)."""
    if ask.last_verified is None or policy.reassigned == "ignore" or phone.region not in REASSIGNED_COUNTRIES:
        return policy
    return dataclasses.replace(policy, fields=(*policy.fields, dated("reassigned_number", ask.last_verified)))


def consent_channel(phone: Phone, ask: Ask) -> str | None:
    """The messaging channel whose own opt-outs an attempt respects: the address's, or Verify's WhatsApp."""
    if phone.channel is not None and phone.channel not in CALL_ADDRESS_CHANNELS:
        return phone.channel
    return "whatsapp" if ask.channel == "whatsapp" else None


def _email(address: str, purpose: Purpose, policy: Policy) -> Decision:
    """An email address asked for directly (Verify's email channel): checked for shape, nothing to look up."""
    if not phones.is_email(address):
        return router.refusal(address, purpose, refuse("invalid", "email:invalid"), None, policy)
    return router.email(address.strip(), purpose, policy)

