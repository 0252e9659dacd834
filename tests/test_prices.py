"""The price table: the shipped starting prices, overrides and their validation, and per-send estimates."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from decimal import Decimal

import pytest

from gatekeeper.errors import ConfigError, GatekeeperError, InvalidArgument, InvalidArgumentType
from gatekeeper.prices import PRICED_CHANNELS, STARTING_PRICES, Estimate, PriceTable

D = Decimal
TABLE = PriceTable.starting()
CURLY = "\u2019"  # a curly apostrophe: forces UCS-2


def test_the_starting_table_covers_the_top_countries_and_every_channel() -> None:
    """About twenty countries by traffic, a default for each channel, every price a non-negative Decimal."""
    top = {"US", "CA", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "MX", "IN", "ID", "PH", "NG", "AU", "JP"}
    assert top <= set(TABLE.countries) and len(TABLE.countries) >= 20
    assert set(TABLE.default) == set(PRICED_CHANNELS) == {"sms", "mms", "voice", "verify", "whatsapp"}
    prices = [p for row in TABLE.countries.values() for p in row.values()] + list(TABLE.default.values())
    assert all(isinstance(p, Decimal) and p >= 0 for p in prices)
    assert STARTING_PRICES["US"]["sms"] == "0.0083" and TABLE.price("US", "sms") == D("0.0083")  # never a float
    assert TABLE.price("ID", "sms") > TABLE.price("US", "sms") * 10  # the expensive routes pumping goes for
    # An unlisted country is priced on the high side: above all but the dearest routes listed.
    assert TABLE.price("ZZ", "sms") >= max(row["sms"] for row in TABLE.countries.values() if row["sms"] < D("0.25"))


def test_the_starting_table_round_trips_through_its_mapping() -> None:
    """as_mapping() is shaped like the overrides: feeding it back gives the same table (what to paste into config)."""
    shown = TABLE.as_mapping()
    assert shown["default"]["verify"] == "0.0500" and shown["GB"]["sms"] == "0.0500"
    assert PriceTable.from_mapping(shown) == TABLE
    assert PriceTable.from_mapping() == PriceTable.from_mapping({}) == TABLE
    assert hash(PriceTable.from_mapping(shown)) == hash(TABLE)


@pytest.mark.parametrize(
    ("country", "channel", "kwargs", "amount", "segments", "quantity", "listed"),
    [
        ("US", "sms", {}, "0.0083", 1, 1, True),  # no body yet: one segment
        ("US", "sms", {"body": "Your code is 123456"}, "0.0083", 1, 1, True),
        ("us", "sms", {"body": "a" * 161}, "0.0166", 2, 2, True),  # lower case is the same country
        ("GB", "sms", {"body": "a" * 159 + CURLY}, "0.1500", 3, 3, True),  # one apostrophe: 3 UCS-2 segments
        ("GB", "sms", {"body": "a" * 160}, "0.0500", 1, 1, True),
        ("ID", "sms", {"body": "a" * 307}, "1.2600", 3, 3, True),
        ("KE", "sms", {"body": "hi"}, "0.2500", 1, 1, False),  # not listed: the default
        ("ZZ", "sms", {}, "0.2500", 1, 1, False),  # phonenumbers' unknown region
        ("US", "mms", {"body": "a" * 500}, "0.0200", None, 1, True),  # per message, whatever the body
        ("GB", "mms", {}, "0.0500", None, 1, False),  # no MMS outside US/CA: the default
        ("US", "voice", {}, "0.0140", None, 1, True),  # length unknown: the least billed
        ("US", "voice", {"minutes": 2.5}, "0.0420", None, 3, True),  # rounded up
        ("US", "voice", {"minutes": D("2.0")}, "0.0280", None, 2, True),
        ("US", "voice", {"minutes": 0}, "0.0000", None, 0, True),  # unanswered
        ("DE", "voice", {"minutes": 10, "body": "ignored"}, "0.6000", None, 10, True),
        ("IN", "whatsapp", {}, "0.0100", None, 1, True),
        ("KE", "whatsapp", {}, "0.0800", None, 1, False),
        # Verify: the fee per verification plus its delivery.
        ("US", "verify", {}, "0.0583", 1, 1, False),  # default fee 0.05 + one US SMS segment
        ("US", "verify", {"body": "a" * 161}, "0.0666", 2, 1, False),
        ("BR", "verify", {"via": "voice"}, "0.1200", None, 1, False),
        ("BR", "verify", {"via": "voice", "minutes": 1.5}, "0.1900", None, 1, False),
        ("IN", "verify", {"via": "whatsapp"}, "0.0600", None, 1, False),
        ("IN", "verify", {"via": "email"}, "0.0500", None, 1, False),
        ("ID", "verify", {"via": "sms"}, "0.4700", 1, 1, False),
    ],
)
def test_estimate(
    country: str,
    channel: str,
    kwargs: dict[str, object],
    amount: str,
    segments: int | None,
    quantity: int,
    listed: bool,
) -> None:
    """Price times what is billed: segments for SMS, minutes rounded up for voice, one message, fee plus delivery."""
    estimate = TABLE.estimate(country, channel, **kwargs)  # type: ignore[arg-type]
    assert isinstance(estimate, Estimate) and isinstance(estimate.amount_usd, Decimal)
    assert (estimate.amount_usd, estimate.segments, estimate.quantity, estimate.listed) == (
        D(amount),
        segments,
        quantity,
        listed,
    )
    assert estimate.basis.startswith(f"{country.upper()} {channel}")


@pytest.mark.parametrize(
    ("country", "channel", "kwargs", "basis"),
    [
        ("GB", "sms", {"body": "a" * 159 + CURLY}, "GB sms: 3 segments (UCS-2, 160 units) x 0.0500 USD"),
        ("US", "sms", {}, "US sms: 1 segment (body unknown) x 0.0083 USD"),
        ("KE", "sms", {"body": "hi"}, "KE sms (default price): 1 segment (GSM-7, 2 units) x 0.2500 USD"),
        ("US", "voice", {"minutes": 2.5}, "US voice: 3 minutes (2.5 rounded up) x 0.0140 USD"),
        ("US", "voice", {}, "US voice: 1 minute (length unknown: the least billed) x 0.0140 USD"),
        ("US", "mms", {}, "US mms: 1 message x 0.0200 USD"),
        (
            "US",
            "verify",
            {},
            "US verify (default price): 0.0500 USD per verification + sms 1 segment (body unknown) x 0.0083 USD",
        ),
        (
            "US",
            "verify",
            {"via": "email"},
            "US verify (default price): 0.0500 USD per verification + email (no channel fee)",
        ),
    ],
)
def test_an_estimate_says_how_it_was_made(country: str, channel: str, kwargs: dict[str, object], basis: str) -> None:
    """The basis is the sentence a log line or a refusal shows: units, encoding, price and where the price came from."""
    assert TABLE.estimate(country, channel, **kwargs).basis == basis  # type: ignore[arg-type]


def test_overrides_are_laid_over_the_starting_table_channel_by_channel() -> None:
    """A country's channel changes alone; a new country joins; the defaults change; the base table is untouched."""
    table = PriceTable.from_mapping(
        {
            "gb": {"sms": 0.045},  # lower case, a float: read as the decimal it reads as
            "KE": {"sms": "0.2100", "voice": 0},
            "default": {"sms": "0.2"},
            "US": {"verify": D("0.03")},
        }
    )
    assert table.price("GB", "sms") == D("0.045") and table.price("GB", "voice") == TABLE.price("GB", "voice")
    assert (table.price("KE", "sms"), table.price("KE", "voice"), table.price("KE", "mms")) == (
        D("0.2100"),
        D(0),
        TABLE.default["mms"],
    )
    assert table.price("ZZ", "sms") == D("0.2") and table.price("ZZ", "voice") == TABLE.default["voice"]
    assert table.estimate("US", "verify").amount_usd == D("0.0383")
    assert table.estimate("KE", "sms").listed and not table.estimate("KE", "mms").listed
    assert TABLE.price("GB", "sms") == D("0.0500")  # the shipped table is unchanged
    assert table.with_overrides({"GB": {"sms": "0.05"}}).price("GB", "sms") == D("0.05")  # overrides stack


def test_a_table_of_ones_own_without_the_starting_prices() -> None:
    """Built directly: only the countries given, and a default that prices every channel."""
    table = PriceTable(countries={"FR": {"sms": "0.07"}}, default=dict.fromkeys(PRICED_CHANNELS, "1"))
    assert set(table.countries) == {"FR"} and table.price("US", "sms") == D(1)
    with pytest.raises(ConfigError, match="no default price for mms, verify") as missing:
        PriceTable(countries={}, default={"sms": 1, "voice": 1, "whatsapp": 1})
    assert missing.value.key == "default"


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"GB": {"sms": -0.01}}, "prices.GB.sms", "0 or more"),
        ({"GB": {"sms": "NaN"}}, "prices.GB.sms", "finite"),
        ({"GB": {"sms": "Infinity"}}, "prices.GB.sms", "finite"),
        ({"GB": {"sms": "cheap"}}, "prices.GB.sms", "not a number"),
        ({"GB": {"sms": "$0.05"}}, "prices.GB.sms", "not a number"),
        ({"GB": {"sms": True}}, "prices.GB.sms", "not bool"),
        ({"GB": {"sms": None}}, "prices.GB.sms", "not NoneType"),
        ({"GB": {"fax": "0.01"}}, "prices.GB.fax", "unknown channel 'fax'"),
        ({"default": {"telegram": "0.01"}}, "prices.default.telegram", "unknown channel"),
        ({"GB": "0.05"}, "prices.GB", "expected a table"),
        ({"UK": {"sms": "0.05"}}, "prices.UK", "write 'GB'"),
        ({"XX": {"sms": "0.05"}}, "prices.XX", "not an ISO 3166"),
        ({"USA": {"sms": "0.05"}}, "prices.USA", "not an ISO 3166"),
        ({1: {"sms": "0.05"}}, "prices.1", "ISO 3166"),
    ],
)
def test_a_bad_override_is_a_config_error_naming_its_key(
    overrides: dict[object, object], key: str, message: str
) -> None:
    """Negative or non-numeric prices, unknown channels and country codes that are not ISO: ConfigError with .key."""
    with pytest.raises(ConfigError, match=message) as raised:
        PriceTable.from_mapping(overrides)  # type: ignore[arg-type]
    assert raised.value.key == key and key in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_the_key_names_where_the_overrides_came_from() -> None:
    """An integrator reading [budget.prices] says so, and the error points there; a non-mapping is refused too."""
    with pytest.raises(ConfigError) as raised:
        PriceTable.from_mapping({"GB": {"sms": -1}}, where="budget.prices")
    assert raised.value.key == "budget.prices.GB.sms"
    with pytest.raises(ConfigError) as whole:
        TABLE.with_overrides(["GB"], where="budget.prices")  # type: ignore[arg-type]
    assert whole.value.key == "budget.prices"


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("US", "fax"), {}, InvalidArgument, "unknown channel 'fax'"),
        (("US", "SMS"), {}, InvalidArgument, "unknown channel"),
        (("USA", "sms"), {}, InvalidArgument, "alpha-2"),
        (("", "sms"), {}, InvalidArgument, "alpha-2"),
        (("1A", "sms"), {}, InvalidArgument, "alpha-2"),
        ((None, "sms"), {}, InvalidArgumentType, "NoneType"),
        (("US", 1), {}, InvalidArgumentType, "int"),
        (("US", "sms"), {"body": b"bytes"}, InvalidArgumentType, "bytes"),
        (("US", "voice"), {"minutes": -1}, InvalidArgument, "0 or more"),
        (("US", "voice"), {"minutes": float("inf")}, InvalidArgument, "finite"),
        (("US", "voice"), {"minutes": "2"}, InvalidArgumentType, "str"),
        (("US", "voice"), {"minutes": True}, InvalidArgumentType, "bool"),
        (("US", "sms"), {"via": "sms"}, InvalidArgument, "means nothing for sms"),
        (("US", "verify"), {"via": "pigeon"}, InvalidArgument, "via must be one of"),
    ],
)
def test_bad_estimate_arguments_are_typed_errors(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[GatekeeperError], message: str
) -> None:
    """Unknown channels, codes that are not alpha-2, negative minutes, via off verify: typed errors that say what."""
    with pytest.raises(error, match=message):
        TABLE.estimate(*args, **kwargs)  # type: ignore[arg-type]


def test_the_table_and_its_estimates_are_frozen() -> None:
    """Nothing a budget rule is handed can be changed under the next one."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        TABLE.default = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        TABLE.countries["US"]["sms"] = D(0)  # type: ignore[index]
    with pytest.raises(TypeError):
        TABLE.countries["XX"] = {}  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        TABLE.estimate("US", "sms").amount_usd = D(0)  # type: ignore[misc]
    assert PriceTable.starting() is TABLE  # built once
    assert repr(TABLE).startswith(f"PriceTable({len(TABLE.countries)} countries, default: sms=0.2500")


def test_segments_and_prices_are_pure() -> None:
    """Both load in a fresh interpreter without redis, flask, requests, twilio.rest or the settings."""
    code = (
        "import importlib.util, sys, types\n"
        "spec = importlib.util.find_spec('gatekeeper')\n"
        "pkg = types.ModuleType('gatekeeper'); pkg.__path__ = list(spec.submodule_search_locations)\n"
        "sys.modules['gatekeeper'] = pkg\n"
        "import gatekeeper.segments, gatekeeper.prices\n"
        "heavy = ('redis', 'flask', 'requests', 'twilio.rest', 'gatekeeper.settings', 'gatekeeper.stores')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "", f"pulled in: {out.stdout.strip()}"
