"""What a send costs, estimated before it is made: a price table per country and channel. Pure.

The budget rules need a price for every send before Twilio has billed it. A :class:`PriceTable` holds one USD price
per country (ISO 3166 alpha-2) and channel, and a ``default`` per channel for every country it does not list;
:meth:`PriceTable.estimate` multiplies the price by what is billed (SMS segments, counted by
:mod:`gatekeeper.segments`; call minutes; messages; verifications).

Channels and their units:

=============  ===============================================================================================
``sms``        per segment (a long or UCS-2 body is several). US/CA carrier fees (A2P 10DLC) are not included.
``mms``        per message. Twilio sends MMS natively to the US and Canada only; elsewhere its MMS Converter
               sends an SMS with a link, which the ``default`` stands in for.
``voice``      per minute of an outbound call to a mobile number; billed minutes are rounded up.
``verify``     Verify's fee per verification. Twilio charges it for a *successful* one only; an estimate counts it
               on every start (a budget's upper bound) and adds the delivery channel (``via``), paid either way.
``whatsapp``   per business-initiated template message (authentication/utility category), Meta's fee included.
=============  ===============================================================================================

The shipped :data:`STARTING_PRICES` are **approximate list prices in USD, rounded, to be overridden**: written from
Twilio's public pricing pages as they stood around 2024-2025, not checked against live pages for this release, and
without volume discounts or per-carrier differences. Take your own from the Pricing API
(``pricing.v1.messaging.countries("GB").fetch()``, ``pricing.v2.voice.countries(...)``) or your invoices, and pass
them as overrides shaped like :data:`STARTING_PRICES` (the shape of a TOML table)::

    [prices.default]
    sms = "0.30"
    [prices.GB]
    sms = "0.0450"
    voice = "0.0380"

The defaults are deliberately on the high side: a country missing from the table is where SMS pumping goes, and a
budget that overestimates refuses early rather than late.

Why a Python mapping and not a data file shipped in the package: the module stays pure (no file read, no
``importlib.resources``, nothing to forget in the wheel's package data), mypy checks the shape, and the mapping has
exactly the shape of the overrides, so :meth:`PriceTable.as_mapping` prints it back as config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from functools import cache
from types import MappingProxyType
from typing import Literal, get_args

import phonenumbers

from gatekeeper.errors import ConfigError, InvalidArgument, InvalidArgumentType
from gatekeeper.segments import segments

Channel = Literal["sms", "mms", "voice", "verify", "whatsapp"]
#: Every channel a table prices, in the order they are shown (not :data:`gatekeeper.models.CHANNELS`, the policy's).
PRICED_CHANNELS: tuple[Channel, ...] = get_args(Channel)
#: How Verify can deliver a code; ``email`` adds no channel fee to the estimate.
VerifyVia = Literal["sms", "voice", "whatsapp", "email"]

#: The key of an override mapping that sets the per-channel defaults (a country code never reads "default").
DEFAULT_KEY = "default"

#: Approximate USD list prices (see the module docstring): sms per segment, mms per message, voice per minute,
#: verify per verification, whatsapp per template message. Strings, so that no float rounding creeps in.
STARTING_PRICES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        DEFAULT_KEY: {"sms": "0.2500", "mms": "0.0500", "voice": "0.3000", "verify": "0.0500", "whatsapp": "0.0800"},
        "US": {"sms": "0.0083", "mms": "0.0200", "voice": "0.0140", "whatsapp": "0.0200"},
        "CA": {"sms": "0.0083", "mms": "0.0200", "voice": "0.0140", "whatsapp": "0.0200"},
        "GB": {"sms": "0.0500", "voice": "0.0400", "whatsapp": "0.0400"},
        "DE": {"sms": "0.0950", "voice": "0.0600", "whatsapp": "0.0800"},
        "FR": {"sms": "0.0800", "voice": "0.0500", "whatsapp": "0.0500"},
        "ES": {"sms": "0.0800", "voice": "0.0500", "whatsapp": "0.0400"},
        "IT": {"sms": "0.0850", "voice": "0.0500", "whatsapp": "0.0400"},
        "NL": {"sms": "0.1100", "voice": "0.0700", "whatsapp": "0.0800"},
        "TR": {"sms": "0.0500", "voice": "0.1300", "whatsapp": "0.0200"},
        "BR": {"sms": "0.0500", "voice": "0.0700", "whatsapp": "0.0400"},
        "MX": {"sms": "0.0450", "voice": "0.0400", "whatsapp": "0.0300"},
        "AR": {"sms": "0.0800", "voice": "0.0800", "whatsapp": "0.0300"},
        "CO": {"sms": "0.0500", "voice": "0.0500", "whatsapp": "0.0100"},
        "IN": {"sms": "0.0830", "voice": "0.0450", "whatsapp": "0.0100"},
        "PK": {"sms": "0.3000", "voice": "0.1300", "whatsapp": "0.0300"},
        "ID": {"sms": "0.4200", "voice": "0.1200", "whatsapp": "0.0350"},
        "PH": {"sms": "0.2000", "voice": "0.2000", "whatsapp": "0.0200"},
        "JP": {"sms": "0.0800", "voice": "0.1300", "whatsapp": "0.0400"},
        "AU": {"sms": "0.0520", "voice": "0.0600", "whatsapp": "0.0400"},
        "NG": {"sms": "0.3000", "voice": "0.2200", "whatsapp": "0.0300"},
        "ZA": {"sms": "0.0400", "voice": "0.0900", "whatsapp": "0.0200"},
    }
)

#: Country codes people write that ISO 3166 spells otherwise.
_SPELLED_OTHERWISE = {"UK": "GB", "EL": "GR"}


@dataclass(frozen=True, slots=True)
class Estimate:
    """What one send is estimated to cost.

    ``amount_usd`` is exact (prices times units, no rounding); ``segments`` the SMS segments counted (None for a
    channel not billed by segment); ``unit_price_usd`` times ``quantity`` (segments, minutes, messages) is the
    amount, except for ``verify``, whose unit is the fee per verification and whose amount adds the delivery;
    ``listed`` is False when the country is not in the table and the channel's default was used; ``basis`` says all
    of it in words, for a log line or a refusal.
    """

    amount_usd: Decimal
    segments: int | None
    basis: str
    unit_price_usd: Decimal
    quantity: int
    listed: bool


def _price(value: object, key: str) -> Decimal:
    """A price from config: a Decimal, an int, a float or a numeric string, finite and not negative."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float, str)):
        raise ConfigError(f'{key}: a price is a number of USD such as "0.0083", not {type(value).__name__}', key=key)
    try:
        price = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ConfigError(f'{key}: {value!r} is not a number of USD such as "0.0083"', key=key) from None
    if not price.is_finite() or price < 0:
        raise ConfigError(f"{key}: a price must be a finite amount of USD, 0 or more, not {value!r}", key=key)
    return price


def _channel(name: object, key: str) -> Channel:
    for channel in PRICED_CHANNELS:
        if name == channel:
            return channel
    raise ConfigError(f"{key}: unknown channel {name!r}; the channels priced are {', '.join(PRICED_CHANNELS)}", key=key)


def _country(code: object, key: str) -> str:
    """An ISO 3166 alpha-2 code that phonenumbers knows (so one that a parsed number can have), upper-cased."""
    if not isinstance(code, str):
        raise ConfigError(f'{key}: a country is an ISO 3166 alpha-2 code such as "GB", not {code!r}', key=key)
    upper = code.strip().upper()
    if upper in _SPELLED_OTHERWISE:
        raise ConfigError(f"{key}: {code!r} is not an ISO 3166 code; write {_SPELLED_OTHERWISE[upper]!r}", key=key)
    if upper not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"{key}: {code!r} is not an ISO 3166 alpha-2 code of a country with phone numbers", key=key)
    return upper


def _channel_prices(row: object, key: str) -> dict[Channel, Decimal]:
    if not isinstance(row, Mapping):
        raise ConfigError(f"{key}: expected a table of channel = price, not {type(row).__name__}", key=key)
    return {_channel(name, f"{key}.{name}"): _price(value, f"{key}.{name}") for name, value in row.items()}


def _frozen(rows: Mapping[str, Mapping[Channel, Decimal]]) -> Mapping[str, Mapping[Channel, Decimal]]:
    return MappingProxyType({country: MappingProxyType(dict(row)) for country, row in sorted(rows.items())})


@dataclass(frozen=True, eq=True)
class PriceTable:
    """USD prices per country and channel, with a ``default`` per channel for countries not listed.

    Build one with :meth:`starting` (the shipped table), :meth:`from_mapping` (the shipped table under your
    overrides) or :meth:`with_overrides` (this table under more). Constructing it directly takes ``countries``
    (``{"GB": {"sms": ...}}``) and a ``default`` that prices every channel. Invalid prices, channels or country codes
    raise :class:`~gatekeeper.errors.ConfigError` naming the key (``prices.GB.sms``).
    """

    countries: Mapping[str, Mapping[Channel, Decimal]]
    default: Mapping[Channel, Decimal]

    def __post_init__(self) -> None:
        if not isinstance(self.countries, Mapping):
            raise ConfigError("countries: expected a mapping of country -> {channel: price}", key="countries")
        countries = {
            _country(code, f"countries.{code}"): _channel_prices(row, f"countries.{code}")
            for code, row in self.countries.items()
        }
        default = _channel_prices(self.default, DEFAULT_KEY)
        missing = [c for c in PRICED_CHANNELS if c not in default]
        if missing:
            raise ConfigError(f"{DEFAULT_KEY}: no default price for {', '.join(missing)}", key=DEFAULT_KEY)
        object.__setattr__(self, "countries", _frozen(countries))
        object.__setattr__(self, "default", MappingProxyType(dict(default)))

    def __hash__(self) -> int:
        rows = tuple((country, tuple(sorted(row.items()))) for country, row in self.countries.items())
        return hash((rows, tuple(sorted(self.default.items()))))

    def __repr__(self) -> str:
        shown = ", ".join(f"{c}={self.default[c]}" for c in PRICED_CHANNELS)
        return f"PriceTable({len(self.countries)} countries, default: {shown})"

    @classmethod
    def starting(cls) -> PriceTable:
        """The shipped table: :data:`STARTING_PRICES`, approximate (see the module docstring)."""
        return _starting()

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, object] | None = None, *, where: str = "prices") -> PriceTable:
        """The shipped table under ``overrides`` (shaped like :data:`STARTING_PRICES`); ``where`` is the dotted
        config key the mapping was read from, used in error messages (``prices.GB.sms``)."""
        return _starting().with_overrides(overrides or {}, where=where)

    def with_overrides(self, overrides: Mapping[str, object], *, where: str = "prices") -> PriceTable:
        """This table with ``overrides`` laid over it, channel by channel: ``{"GB": {"sms": "0.045"}}`` changes
        GB's SMS price and keeps GB's others; ``{"default": {...}}`` changes the defaults; a country not listed yet
        is added (channels it does not name fall back to the default)."""
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"{where}: expected a table of country -> {{channel = price}}", key=where)
        countries = {code: dict(row) for code, row in self.countries.items()}
        default = dict(self.default)
        for code, row in overrides.items():
            if code == DEFAULT_KEY:
                default.update(_channel_prices(row, f"{where}.{DEFAULT_KEY}"))
                continue
            country = _country(code, f"{where}.{code}")
            countries.setdefault(country, {}).update(_channel_prices(row, f"{where}.{code}"))
        return PriceTable(countries=countries, default=default)

    def as_mapping(self) -> dict[str, dict[str, str]]:
        """The table in the shape of the overrides (prices as strings): what to paste into config and edit."""
        out: dict[str, dict[str, str]] = {DEFAULT_KEY: {c: str(p) for c, p in self.default.items()}}
        out.update({code: {c: str(p) for c, p in row.items()} for code, row in self.countries.items()})
        return out

    def price(self, country: str, channel: str) -> Decimal:
        """The USD price of one unit of ``channel`` in ``country`` (the default when the country is not listed)."""
        return self._lookup(_arg_country(country), _arg_channel(channel))[0]

    def _lookup(self, country: str, channel: Channel) -> tuple[Decimal, bool]:
        row = self.countries.get(country)
        if row is not None and channel in row:
            return row[channel], True
        return self.default[channel], False

    def estimate(
        self,
        country: str,
        channel: str,
        body: str | None = None,
        minutes: float | Decimal | None = None,
        *,
        via: str | None = None,
    ) -> Estimate:
        """The estimated USD cost of one send of ``channel`` to a number of ``country``.

        ``sms``: the price per segment times the segments of ``body`` (a body not given yet is 1 segment).
        ``voice``: the price per minute times ``minutes`` rounded up (not given: 1, the least a call answered is
        billed). ``mms``, ``whatsapp``: one message. ``verify``: Verify's fee plus its delivery by ``via``
        (default ``sms``: ``body``'s segments, or 1; ``voice``: ``minutes``, or 1; ``whatsapp``: one message;
        ``email``: nothing more). ``body`` and ``minutes`` are ignored by channels not billed by them.

        Raises :class:`~gatekeeper.errors.InvalidArgument` (an unknown channel, a country that is not an ISO code,
        negative minutes, ``via`` on a channel other than verify) or
        :class:`~gatekeeper.errors.InvalidArgumentType`.
        """
        code, kind = _arg_country(country), _arg_channel(channel)
        if body is not None and not isinstance(body, str):
            raise InvalidArgumentType(f"body must be a str or None, not {type(body).__name__}")
        billed_minutes = _arg_minutes(minutes)
        if via is not None and kind != "verify":
            raise InvalidArgument(f"via is how Verify delivers a code; it means nothing for {kind}")
        if kind == "verify":
            return self._verify(code, body, billed_minutes, _arg_via(via))
        unit, listed = self._lookup(code, kind)
        where = f"{code} {kind}" + ("" if listed else " (default price)")
        if kind == "sms":
            counted, words = _sms_quantity(body)
            return Estimate(unit * counted, counted, f"{where}: {words} x {unit} USD", unit, counted, listed)
        if kind == "voice":
            quantity, words = billed_minutes
            return Estimate(unit * quantity, None, f"{where}: {words} x {unit} USD", unit, quantity, listed)
        return Estimate(unit, None, f"{where}: 1 message x {unit} USD", unit, 1, listed)

    def _verify(self, code: str, body: str | None, minutes: tuple[int, str], via: VerifyVia) -> Estimate:
        fee, listed = self._lookup(code, "verify")
        where = f"{code} verify" + ("" if listed else " (default price)")
        basis = f"{where}: {fee} USD per verification"
        if via == "email":
            return Estimate(fee, None, f"{basis} + email (no channel fee)", fee, 1, listed)
        unit, _ = self._lookup(code, via)
        counted: int | None = None
        if via == "sms":
            counted, words = _sms_quantity(body)
            quantity = counted
        elif via == "voice":
            quantity, words = minutes
        else:
            quantity, words = 1, "1 message"
        amount = fee + unit * quantity
        return Estimate(amount, counted, f"{basis} + {via} {words} x {unit} USD", fee, 1, listed)


@cache
def _starting() -> PriceTable:
    rows = {code: row for code, row in STARTING_PRICES.items() if code != DEFAULT_KEY}
    return PriceTable(countries=rows, default=STARTING_PRICES[DEFAULT_KEY])  # type: ignore[arg-type]


def _arg_country(country: object) -> str:
    """A country as the gate has it (``Phone.region``): two ASCII letters; one the table does not list is priced
    at the default, so a region phonenumbers knows and the table does not is never an error here."""
    if not isinstance(country, str):
        raise InvalidArgumentType(
            f"country must be an ISO 3166 alpha-2 code such as 'GB', not {type(country).__name__}"
        )
    upper = country.upper()
    if len(upper) != 2 or not upper.isascii() or not upper.isalpha():
        raise InvalidArgument(f"country must be an ISO 3166 alpha-2 code such as 'GB', not {country!r}")
    return upper


def _arg_channel(channel: object) -> Channel:
    if not isinstance(channel, str):
        raise InvalidArgumentType(f"channel must be one of {', '.join(PRICED_CHANNELS)}, not {type(channel).__name__}")
    for known in PRICED_CHANNELS:
        if channel == known:
            return known
    raise InvalidArgument(f"unknown channel {channel!r}; the channels priced are {', '.join(PRICED_CHANNELS)}")


def _arg_via(via: object) -> VerifyVia:
    if via is None:
        return "sms"
    for known in get_args(VerifyVia):
        if via == known:
            return known  # type: ignore[no-any-return]
    raise InvalidArgument(f"via must be one of {', '.join(get_args(VerifyVia))}, not {via!r}")


def _arg_minutes(minutes: object) -> tuple[int, str]:
    """Billed minutes (rounded up; none given: 1) and how to say it."""
    if minutes is None:
        return 1, "1 minute (length unknown: the least billed)"
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float, Decimal)):
        raise InvalidArgumentType(f"minutes must be a number or None, not {type(minutes).__name__}")
    exact = Decimal(str(minutes)) if isinstance(minutes, float) else Decimal(minutes)
    if not exact.is_finite() or exact < 0:
        raise InvalidArgument(f"minutes must be a finite number, 0 or more, not {minutes!r}")
    billed = int(exact.to_integral_value(rounding=ROUND_CEILING))
    rounded = "" if billed == exact else f" ({minutes} rounded up)"
    return billed, f"{billed} minute{'' if billed == 1 else 's'}{rounded}"


def _sms_quantity(body: str | None) -> tuple[int, str]:
    if body is None:
        return 1, "1 segment (body unknown)"
    counted = segments(body)
    plural = "" if counted.segments == 1 else "s"
    return counted.segments, f"{counted.segments} segment{plural} ({counted.encoding}, {counted.units} units)"
