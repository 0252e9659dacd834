"""``[guard]``: the velocity rules' settings (``gatekeeper/velocity.py`` has the rules as data, ``guard.py`` counts
them). Apart from ``settings.py`` only to keep modules small; ``Settings.guard`` is this."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gatekeeper.errors import InvalidArgument
from gatekeeper.prices import PriceTable
from gatekeeper.quiet import QuietHours
from gatekeeper.velocity import Rule, Terms, check_entry, parse_duration


class _Section(BaseModel):  # as settings.py's (defined here too: ruff knows a pydantic model by its base only)
    model_config = ConfigDict(extra="forbid", frozen=True)


class GuardRuleSettings(_Section):
    """One velocity rule (see gatekeeper/velocity.py): at most ``limit`` attempts per ``scope`` subject in
    ``window`` ("30s", "10m", "1h", "1d"), for one purpose or "*"."""

    scope: Literal["number", "prefix", "country", "client"]
    window: str
    limit: int = Field(ge=1)
    purpose: Literal["notify", "mfa", "*"] = "*"

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        parse_duration(v)
        return v

    def rule(self) -> Rule:
        return Rule(self.scope, parse_duration(self.window), self.limit, self.purpose)


#: The shipped rules: on MFA only (an OTP is what SMS pumping buys), so a notify stays one store read. A cooldown
#: (a number rule with limit 1, window "30s") is one line more; it is not shipped: "resend code" would be refused.
DEFAULT_GUARD_RULES = (
    GuardRuleSettings(scope="number", window="10m", limit=5, purpose="mfa"),  # as Verify's own 60203
    GuardRuleSettings(scope="prefix", window="10m", limit=10, purpose="mfa"),  # a block of numbers walked through
    GuardRuleSettings(scope="client", window="10m", limit=10, purpose="mfa"),
    GuardRuleSettings(scope="country", window="1h", limit=1000, purpose="mfa"),
)


class SpendSettings(_Section):
    """Spend caps on each send's estimated cost (gatekeeper/spend.py); with no cap set nothing is charged."""

    # enforce: a send that would pass a cap is refused (spend:daily:GB); observe: it goes, logged and counted
    mode: Literal["enforce", "observe"] = "enforce"
    time_zone: str = "UTC"  # days and months turn over at midnight here
    daily_usd: float | None = Field(None, gt=0)  # all countries together
    monthly_usd: float | None = Field(None, gt=0)
    country_daily_usd: dict[str, float] = {}  # per ISO country, e.g. {"NG": 20}
    country_monthly_usd: dict[str, float] = {}
    # Overrides of the starting price table (gatekeeper/prices.py), e.g. {"GB": {"sms": "0.045"}}
    prices: dict[str, dict[str, str]] = {}

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidArgument(f"spend.time_zone is an IANA zone like 'Europe/London': not {v!r}") from None
        return v

    @field_validator("country_daily_usd", "country_monthly_usd")
    @classmethod
    def _countries(cls, v: dict[str, float]) -> dict[str, float]:
        if any(len(code) != 2 or not code.isalpha() or cap <= 0 for code, cap in v.items()):
            raise InvalidArgument("a country cap is an ISO country ('NG') and an amount in USD above 0")
        return {code.upper(): cap for code, cap in v.items()}

    @field_validator("prices")
    @classmethod
    def _prices(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        PriceTable.from_mapping(v, where="spend.prices")  # a bad price names its key
        return v


class QuietSettings(_Section):
    """Quiet hours in the recipient's local time for notifications (gatekeeper/quiet.py); MFA is exempt."""

    # off: not checked; refuse: a notification in quiet hours is refused (quiet_hours:US:America/New_York);
    # defer: one with a Messaging Service is scheduled for the window's opening (send_at), any other answered DEFER;
    # observe: it goes, logged and counted (gatekeeper_quiet_hours_total{mode="observe"}), to tune before enforcing
    mode: Literal["off", "observe", "refuse", "defer"] = "off"
    window: str = "08:00-21:00"  # when sending is allowed, local time; an end before the start wraps midnight
    countries: dict[str, str | None] = {}  # per ISO country, e.g. {"FR": "09:00-20:00"}; null: no quiet hours

    @model_validator(mode="after")
    def _hours(self) -> QuietSettings:
        self.hours()  # a bad window or country is refused with the settings
        return self

    def hours(self) -> QuietHours:
        return QuietHours(default=self.window, countries=dict(self.countries))  # type: ignore[arg-type]


class ConversionSettings(_Section):
    """Conversion-aware limits for MFA (gatekeeper/conversion.py): where a prefix's or a country's Verify codes
    stop being entered, its prefix and country rules tighten."""

    enabled: bool = True
    window: str = "1h"  # verifications started and approved are counted over this
    settle: str = "2m"  # codes sent this recently are not counted as started yet (they may still be entered)
    min_started: int = Field(10, ge=1)  # below this many settled verifications a subject is never judged
    floor: float = Field(0.3, gt=0, le=1)  # approval rate under which its rules tighten, to rate ÷ floor of
    min_factor: float = Field(0.1, gt=0, le=1)  # their limits, never below this share of them (nor below 1)

    @field_validator("window", "settle")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @model_validator(mode="after")
    def _settled(self) -> ConversionSettings:
        if parse_duration(self.settle) >= parse_duration(self.window):
            raise InvalidArgument("guard.conversion.settle must be shorter than its window")
        return self

    def terms(self) -> Terms | None:
        if not self.enabled:
            return None
        window, settle = parse_duration(self.window), parse_duration(self.settle)
        return Terms(window, settle, self.min_started, self.floor, self.min_factor)


class GuardSettings(_Section):
    """Velocity rules checked before a Lookup is paid for (gatekeeper/guard.py)."""

    # enforce: a rule over its limit refuses (Twilio's code 60203 for MFA, 20429 for notify); observe: the
    # attempt goes, its audit record names the rule it tripped; off: no rule is counted
    mode: Literal["enforce", "observe", "off"] = "enforce"
    rules: list[GuardRuleSettings] = list(DEFAULT_GUARD_RULES)
    # Digits a prefix rule drops off the end of the number, per country (default 4: +1415555 of +14155550100)
    prefix_digits_dropped: dict[str, int] = {"GB": 5}
    # Numbers, prefixes ("+4479111") or countries ("NG") never sent to, in every mode (reason guard:deny:…)
    deny: list[str] = []
    # Numbers, prefixes or countries no velocity rule counts (your own test numbers, a partner's block)
    safe: list[str] = []
    conversion: ConversionSettings = ConversionSettings()

    @field_validator("deny", "safe")
    @classmethod
    def _entries(cls, v: list[str]) -> list[str]:
        return [check_entry(entry) for entry in v]
