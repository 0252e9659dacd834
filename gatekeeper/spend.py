"""Spend caps: each send's estimated cost (``prices.py``, by ``segments.py`` for a text) charged to daily and
monthly totals, in all and per country, before it is sent (``[spend]``).

The totals live in the store's ledger (``stores.base.Ledger``): every cap of a send is charged in one step, all or
none, so processes sharing the store share the caps. Days and months turn over at midnight in ``[spend]
time_zone``. A send that would pass a cap is refused (enforce) with the reason ``spend:<daily|monthly>:<country or
total>`` and counted in ``gatekeeper_spend_refusals_total``; in observe mode it goes, and is logged and counted the
same. With no cap set nothing is charged and the store is never asked. The cost is an estimate from a price table
(approximate list prices, overridable in ``[spend] prices``), not Twilio's bill.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from gatekeeper import metrics
from gatekeeper import phone as phones
from gatekeeper import policy as policies
from gatekeeper.models import Action, Decision, SendRequest
from gatekeeper.policy import Verdict
from gatekeeper.prices import Channel, PriceTable
from gatekeeper.settings_guard import SpendSettings
from gatekeeper.stores.base import Call, Ledger, Steps, Stores

log = logging.getLogger("gatekeeper.spend")

#: The price-table channel a send's action is billed as; an action not here costs nothing (TOTP, Studio).
BILLED: dict[Action, Channel] = {
    Action.SMS: "sms",
    Action.MESSAGE: "sms",
    Action.WHATSAPP: "whatsapp",
    Action.VOICE: "voice",
    Action.VERIFY_SMS: "verify",
    Action.VERIFY_CALL: "verify",
    Action.VERIFY_WHATSAPP: "verify",
    Action.VERIFY_SNA: "verify",
    Action.VERIFY_AUTO: "verify",
    Action.EMAIL: "verify",
}
_VIA = {Action.VERIFY_CALL: "voice", Action.VERIFY_WHATSAPP: "whatsapp", Action.EMAIL: "email"}


class Spend:
    """Charges sends to ``[spend]``'s caps (see the module docstring)."""

    def __init__(self, stores: Stores, settings: SpendSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._stores = stores
        self._settings = settings
        self._zone = ZoneInfo(settings.time_zone)
        self._table = PriceTable.from_mapping(settings.prices, where="spend.prices")
        self._clock = clock
        s = settings
        self.capped = bool(s.daily_usd or s.monthly_usd or s.country_daily_usd or s.country_monthly_usd)

    def caps(self, country: str | None, at: float) -> tuple[list[tuple[str, float]], float]:
        """The ledger keys and caps a send to ``country`` at ``at`` is charged to, and the seconds its month has
        left (the totals' TTL, with a day's margin)."""
        s, local = self._settings, datetime.fromtimestamp(at, self._zone)
        day, month = local.strftime("%Y-%m-%d"), local.strftime("%Y-%m")
        wanted = [
            (f"daily:{day}:total", s.daily_usd),
            (f"monthly:{month}:total", s.monthly_usd),
            (f"daily:{day}:{country}", s.country_daily_usd.get(country or "", None)),
            (f"monthly:{month}:{country}", s.country_monthly_usd.get(country or "", None)),
        ]
        next_month = (local.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0)
        left = (next_month - local).total_seconds() + 86_400
        return [(key, float(cap)) for key, cap in wanted if cap], left

    def charge_steps(self, action: Action, decision: Decision, request: SendRequest) -> Steps[Verdict | None]:
        """Charge one send; a refusal when a cap would be passed (enforce), else None."""
        channel = BILLED.get(action)
        if not self.capped or channel is None or not isinstance(self._stores.ledger, Ledger):
            return None
        country = decision.facts.country_code if decision.facts is not None else None
        if country is None:
            country = phones.normalize(decision.to).region
        estimate = self._table.estimate(
            country or "ZZ", channel, body=request.body, via=_VIA.get(action, "sms") if channel == "verify" else None
        )
        caps, ttl = self.caps(country, self._clock())
        if not caps:
            return None
        amount, charge = float(estimate.amount_usd), {"ttl_seconds": ttl}
        over = yield Call("ledger", "spend", (caps, amount), charge)
        if over is None:
            return None
        period, _, scope = over.split(":")
        reason = f"spend:{period}:{scope}"
        metrics.spend_refused(period, "total" if scope == "total" else "country")
        if self._settings.mode == "observe":  # it goes, and is charged: the totals say what was spent
            log.warning("spend cap passed (%s, observe): %s to %s", reason, estimate.basis, phones.mask(decision.to))
            yield Call("ledger", "spend", ([(key, float("inf")) for key, _ in caps], amount), charge)
            return None
        log.warning("spend cap reached (%s): %s not sent to %s", reason, estimate.basis, phones.mask(decision.to))
        return policies.refuse("spend", reason)
