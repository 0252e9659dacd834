"""Quiet hours (issue 12): the recipient's local time from the number, windows, DST, multi-zone numbers."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.errors import InvalidArgument, InvalidArgumentType, InvalidNumber
from gatekeeper.phone import normalize
from gatekeeper.quiet import (
    DEFAULT_WINDOW,
    HORIZON,
    QUIET_HOURS,
    QuietHours,
    Window,
    check,
    earliest_allowed,
    local_zones,
)

UTC = timezone.utc
NEW_YORK = "+12125551234"  # 212: Manhattan, America/New_York
SYDNEY = "+61291234567"  # 02 9: Australia/Sydney (a fixed line: one zone)
AU_MOBILE = "+61412345678"  # mobiles are not geographic: every Australian zone
IDAHO = "+12083001234"  # 208-300: America/Boise (Mountain) and America/Los_Angeles (Pacific)
MOSCOW = "+74951234567"  # 495: Europe/Moscow
NOVOSIBIRSK = "+73832123456"  # 383: Asia/Novosibirsk
RU_MOBILE = "+79123456789"  # every zone of +7, Kaliningrad's neighbour to Kamchatka
SAO_PAULO = "+5511987654321"  # 11: America/Sao_Paulo, UTC-3
ACRE = "+5568912345678"  # 68: America/Rio_Branco, UTC-5
BR_TOLL_FREE = "+558007654321"  # 0800: every Brazilian zone, Noronha (UTC-2) to Acre (UTC-5)
US_TOLL_FREE = "+18005551234"  # every zone of +1, Guam (UTC+10) to Pago Pago (UTC-11)
LONDON = "+442071234567"
INTL_FREEPHONE = "+80012345678"  # +800: a calling code of no country, no zone
BR_ZONES = ("America/Manaus", "America/Noronha", "America/Rio_Branco", "America/Sao_Paulo")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def hours(**kw: object) -> QuietHours:
    return QuietHours(**kw)  # type: ignore[arg-type]


# --- where the recipient is -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "region", "zones", "source"),
    [
        (NEW_YORK, "US", ("America/New_York",), "number"),
        (IDAHO, "US", ("America/Boise", "America/Los_Angeles"), "number"),
        (SYDNEY, "AU", ("Australia/Sydney",), "number"),
        (MOSCOW, "RU", ("Europe/Moscow",), "number"),
        (NOVOSIBIRSK, "RU", ("Asia/Novosibirsk",), "number"),
        (ACRE, "BR", ("America/Rio_Branco",), "number"),
        (BR_TOLL_FREE, "BR", BR_ZONES, "country"),
        ("+61812345678", "AU", None, "country"),  # invalid (no such range): phonenumbers says Etc/Unknown
        (INTL_FREEPHONE, None, (), "unknown"),
    ],
)
def test_local_zones_from_the_number(
    number: str, region: str | None, zones: tuple[str, ...] | None, source: str
) -> None:
    """A geographic number gives its area's zones; a non-geographic or unplaceable one its calling code's, and says
    so; a calling code of no country gives none."""
    where = local_zones(number)
    assert (where.region, where.source) == (region, source)
    if zones is not None:
        assert where.zones == zones
    else:
        assert len(where.zones) > 1 and "Australia/Perth" in where.zones and "Australia/Sydney" in where.zones


def test_multi_zone_countries_give_every_zone_to_a_number_that_is_not_placed() -> None:
    """Australian and Russian mobiles and US toll-free numbers span their calling code's zones, none unknown."""
    au, ru, us = local_zones(AU_MOBILE), local_zones(RU_MOBILE), local_zones(US_TOLL_FREE)
    assert {"Australia/Perth", "Australia/Sydney", "Australia/Lord_Howe"} <= set(au.zones)
    assert {"Europe/Moscow", "Asia/Novosibirsk", "Asia/Kamchatka"} <= set(ru.zones)
    assert {"America/New_York", "America/Los_Angeles", "Pacific/Honolulu", "Pacific/Guam"} <= set(us.zones)
    assert (au.source, ru.source, us.source) == ("country", "country", "country")
    assert all("Etc/Unknown" not in w.zones for w in (au, ru, us))


@pytest.mark.parametrize(
    "number",
    [NEW_YORK, normalize(NEW_YORK), phonenumbers.parse(NEW_YORK), f"whatsapp:{NEW_YORK}", " +1 (212) 555-1234 "],
    ids=["e164", "phone", "phonenumber", "whatsapp", "formatted"],
)
def test_a_number_in_any_of_its_shapes(number: object) -> None:
    """An E.164 string, a Phone, a phonenumbers.PhoneNumber and a whatsapp: address are read alike."""
    verdict = check(number, utc(2025, 1, 15, 12), "notify")  # type: ignore[arg-type]
    assert (verdict.allowed, verdict.zones, verdict.region) == (False, ("America/New_York",), "US")
    assert verdict.earliest == utc(2025, 1, 15, 13)


# --- the window, in one zone ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "allowed", "earliest"),
    [
        (utc(2025, 1, 15, 12, 59, 59), False, utc(2025, 1, 15, 13)),  # 07:59:59 EST
        (utc(2025, 1, 15, 13), True, utc(2025, 1, 15, 13)),  # 08:00 sharp: the start is inside
        (utc(2025, 1, 16, 1, 59, 59), True, utc(2025, 1, 16, 1, 59, 59)),  # 20:59:59
        (utc(2025, 1, 16, 2), False, utc(2025, 1, 16, 13)),  # 21:00 sharp: the end is outside; tomorrow 08:00
        (utc(2025, 1, 16, 4, 30), False, utc(2025, 1, 16, 13)),  # 23:30 on the 15th: across the local midnight
        (utc(2025, 1, 1, 4), False, utc(2025, 1, 1, 13)),  # 23:00 on New Year's Eve: across the year
        (utc(2025, 7, 15, 12), True, utc(2025, 7, 15, 12)),  # 08:00 EDT in summer
        (utc(2025, 7, 15, 11, 30), False, utc(2025, 7, 15, 12)),
    ],
)
def test_inside_and_outside_the_default_window(at: datetime, allowed: bool, earliest: datetime) -> None:
    """08:00 up to (not including) 21:00 New York time; outside it, the next 08:00 there, in UTC."""
    verdict = check(NEW_YORK, at, "notify")
    assert (verdict.allowed, verdict.earliest) == (allowed, earliest)
    assert verdict.reason == (None if allowed else "quiet_hours:US:America/New_York")
    assert verdict.earliest is not None and verdict.earliest.tzinfo is UTC
    assert verdict.window == DEFAULT_WINDOW and not verdict.exempt


def test_at_in_any_zone_or_as_epoch_seconds_is_the_same_instant() -> None:
    """An aware datetime in any zone, and epoch seconds (the gate's clock), are the same instant."""
    instant = utc(2025, 1, 15, 12)
    paris = instant.astimezone(ZoneInfo("Europe/Paris"))
    verdicts = {check(NEW_YORK, at, "notify") for at in (instant, paris, instant.timestamp(), int(instant.timestamp()))}
    assert len(verdicts) == 1
    assert verdicts.pop().earliest == utc(2025, 1, 15, 13)


@pytest.mark.parametrize(
    ("window", "local", "inside"),
    [
        ("22:00-06:00", time(23), True),
        ("22:00-06:00", time(0), True),
        ("22:00-06:00", time(5, 59, 59), True),
        ("22:00-06:00", time(6), False),
        ("22:00-06:00", time(12), False),
        ("22:00-06:00", time(22), True),
        ("08:00-24:00", time(23, 59, 59), True),
        ("08:00-24:00", time(0), False),
        ("08:00-24:00", time(7, 59), False),
        ("8:30-17:15", time(8, 29), False),
        ("8:30-17:15", time(8, 30), True),
        ("8:30-17:15", time(17, 15), False),
    ],
)
def test_window_membership_and_wrapping_midnight(window: str, local: time, inside: bool) -> None:
    """A window whose end is before its start wraps midnight; 24:00 as an end means until midnight."""
    assert Window.parse(window).contains(local) is inside


@pytest.mark.parametrize(
    ("at", "allowed", "earliest"),
    [
        (utc(2025, 1, 15, 17), False, utc(2025, 1, 16, 3)),  # noon EST: wait for 22:00
        (utc(2025, 1, 16, 4), True, utc(2025, 1, 16, 4)),  # 23:00
        (utc(2025, 1, 16, 10, 59), True, utc(2025, 1, 16, 10, 59)),  # 05:59 the next morning
        (utc(2025, 1, 16, 11), False, utc(2025, 1, 17, 3)),  # 06:00: closed until the evening
    ],
)
def test_a_window_wrapping_midnight_in_a_check(at: datetime, allowed: bool, earliest: datetime) -> None:
    """A night-time window (22:00-06:00) is open across midnight and defers daytime sends to the evening."""
    rule = hours(default=Window.parse("22:00-06:00"))
    verdict = rule.check(NEW_YORK, at, "notify")
    assert (verdict.allowed, verdict.earliest) == (allowed, earliest)
    assert rule(NEW_YORK, at, "notify") == verdict  # a strategy: calling it is checking


# --- DST -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "window", "at", "allowed", "earliest"),
    [
        # New York springs forward on 2025-03-09 at 02:00 EST (07:00Z) to 03:00 EDT.
        (NEW_YORK, "08:00-21:00", utc(2025, 3, 9, 3), False, utc(2025, 3, 9, 12)),  # 08:00 EDT, not 13:00Z
        (NEW_YORK, "08:00-21:00", utc(2025, 3, 9, 12), True, utc(2025, 3, 9, 12)),
        (NEW_YORK, "08:00-21:00", utc(2025, 3, 9, 1), True, utc(2025, 3, 9, 1)),  # 20:00 EST the day before
        # a start inside the skipped hour opens when the clocks jump (03:00 EDT = 07:00Z), not at 07:30Z
        (NEW_YORK, "02:30-21:00", utc(2025, 3, 9, 6), False, utc(2025, 3, 9, 7)),
        (NEW_YORK, "02:30-21:00", utc(2025, 3, 9, 7), True, utc(2025, 3, 9, 7)),
        # New York falls back on 2025-11-02 at 02:00 EDT (06:00Z) to 01:00 EST.
        (NEW_YORK, "08:00-21:00", utc(2025, 11, 2, 4), False, utc(2025, 11, 2, 13)),  # 08:00 EST, not 12:00Z
        (NEW_YORK, "08:00-21:00", utc(2025, 11, 2, 12, 30), False, utc(2025, 11, 2, 13)),  # 07:30 EST
        # an end inside the repeated hour: closed at 01:30 EDT, open again while the clock reads 01:00-01:30 EST
        (NEW_YORK, "22:00-01:30", utc(2025, 11, 2, 5, 29), True, utc(2025, 11, 2, 5, 29)),  # 01:29 EDT
        (NEW_YORK, "22:00-01:30", utc(2025, 11, 2, 5, 45), False, utc(2025, 11, 2, 6)),  # 01:45 EDT
        (NEW_YORK, "22:00-01:30", utc(2025, 11, 2, 6, 30), False, utc(2025, 11, 3, 3)),  # 01:30 EST: 22:00 EST
        # Sydney springs forward on 2025-10-05 at 02:00 AEST (2025-10-04 16:00Z) to 03:00 AEDT (UTC+11).
        (SYDNEY, "08:00-21:00", utc(2025, 10, 4, 12), False, utc(2025, 10, 4, 21)),  # 08:00 AEDT, not 22:00Z
        (SYDNEY, "02:30-21:00", utc(2025, 10, 4, 15), False, utc(2025, 10, 4, 16)),  # the skipped hour
        # Sydney falls back on 2025-04-06 at 03:00 AEDT (2025-04-05 16:00Z) to 02:00 AEST (UTC+10).
        (SYDNEY, "08:00-21:00", utc(2025, 4, 5, 12), False, utc(2025, 4, 5, 22)),  # 08:00 AEST, not 21:00Z
        (SYDNEY, "08:00-21:00", utc(2025, 4, 5, 9, 59), True, utc(2025, 4, 5, 9, 59)),  # 20:59 AEDT
        (SYDNEY, "08:00-21:00", utc(2025, 4, 5, 10), False, utc(2025, 4, 5, 22)),  # 21:00 AEDT
    ],
)
def test_dst_changes_give_the_real_instant(
    number: str, window: str, at: datetime, allowed: bool, earliest: datetime
) -> None:
    """Spring-forward and fall-back, north (New York) and south (Sydney): the earliest time is the real instant."""
    verdict = hours(default=Window.parse(window)).check(number, at, "notify")
    assert (verdict.allowed, verdict.earliest) == (allowed, earliest)


# --- several zones: the most restrictive reading -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "at", "allowed", "earliest", "reason"),
    [
        # 208-300: Boise 08:00 MST but Los Angeles 07:00 PST -> wait for 08:00 in Los Angeles
        (IDAHO, utc(2025, 1, 15, 15), False, utc(2025, 1, 15, 16), "quiet_hours:US:America/Los_Angeles"),
        (IDAHO, utc(2025, 1, 15, 16), True, utc(2025, 1, 15, 16), None),
        # Boise reaches 21:00 while Los Angeles is at 20:00 -> tomorrow, when both are open
        (IDAHO, utc(2025, 1, 16, 4), False, utc(2025, 1, 16, 16), "quiet_hours:US:America/Boise"),
        # Australian mobile in January (summer): open only 01:30Z (08:00 Cocos) to 10:00Z (21:00 Sydney)
        (AU_MOBILE, utc(2025, 1, 15, 0), False, utc(2025, 1, 15, 1, 30), "quiet_hours:AU:Indian/Christmas"),
        (AU_MOBILE, utc(2025, 1, 15, 9, 59), True, utc(2025, 1, 15, 9, 59), None),
        (AU_MOBILE, utc(2025, 1, 15, 10), False, utc(2025, 1, 16, 1, 30), "quiet_hours:AU:Australia/Lord_Howe"),
        (SYDNEY, utc(2025, 1, 15, 0), True, utc(2025, 1, 15, 0), None),  # the fixed line is in Sydney alone
        # Russian mobile in January: Bucharest's 08:00 (06:00Z) to Kamchatka's 21:00 (09:00Z)
        (RU_MOBILE, utc(2025, 1, 15, 12), False, utc(2025, 1, 16, 6), "quiet_hours:RU:Asia/Anadyr"),
        (RU_MOBILE, utc(2025, 1, 15, 7), True, utc(2025, 1, 15, 7), None),
        (MOSCOW, utc(2025, 1, 15, 12), True, utc(2025, 1, 15, 12), None),  # 15:00 MSK
        (NOVOSIBIRSK, utc(2025, 1, 15, 14), False, utc(2025, 1, 16, 1), "quiet_hours:RU:Asia/Novosibirsk"),
        # Brazil: Sao Paulo (UTC-3) open at 11:00Z, Acre (UTC-5) not until 13:00Z, as for a toll-free number
        (SAO_PAULO, utc(2025, 6, 10, 11), True, utc(2025, 6, 10, 11), None),
        (ACRE, utc(2025, 6, 10, 11), False, utc(2025, 6, 10, 13), "quiet_hours:BR:America/Rio_Branco"),
        (BR_TOLL_FREE, utc(2025, 6, 10, 11), False, utc(2025, 6, 10, 13), "quiet_hours:BR:America/Manaus"),
        # and closes when Noronha (UTC-2) reaches 21:00, at 23:00Z, while Sao Paulo is at 20:00
        (BR_TOLL_FREE, utc(2025, 6, 10, 23), False, utc(2025, 6, 11, 13), "quiet_hours:BR:America/Noronha"),
        (SAO_PAULO, utc(2025, 6, 10, 23), True, utc(2025, 6, 10, 23), None),
        # a US toll-free number is read in every zone of +1: only 22:00Z (08:00 Guam) to 00:30Z (21:00 St John's)
        (US_TOLL_FREE, utc(2025, 1, 15, 12), False, utc(2025, 1, 15, 22), "quiet_hours:US:America/Adak"),
        (US_TOLL_FREE, utc(2025, 1, 15, 23), True, utc(2025, 1, 15, 23), None),
    ],
)
def test_multi_zone_numbers_take_the_most_restrictive_reading(
    number: str, at: datetime, allowed: bool, earliest: datetime, reason: str | None
) -> None:
    """Allowed only when inside the window in every candidate zone; the earliest time is open in all of them; the
    reason names a zone where it is quiet now."""
    verdict = check(number, at, "notify")
    assert (verdict.allowed, verdict.earliest, verdict.reason) == (allowed, earliest, reason)
    assert verdict.zones == local_zones(number).zones


def test_zones_too_far_apart_for_the_window_have_no_earliest_time() -> None:
    """A 09:00-17:00 US window never holds in Guam and New York at once: refused with no time to defer to."""
    rule = hours(countries={"US": Window.parse("09:00-17:00")})
    for at in (utc(2025, 1, 15, h) for h in range(0, 24, 3)):
        verdict = rule.check(US_TOLL_FREE, at, "notify")
        assert (verdict.allowed, verdict.earliest) == (False, None)
        assert verdict.reason is not None and verdict.reason.startswith("quiet_hours:US:")
    assert rule.check(NEW_YORK, utc(2025, 1, 15, 12), "notify").earliest == utc(2025, 1, 15, 14)


# --- exemptions, overrides, the caller's zone, unknown zones -------------------------------------------------------


def test_mfa_is_exempt_by_default_and_can_be_made_subject() -> None:
    """A code at 03:00 goes out; the verdict says it is exempt. Without the exemption it waits like a notify."""
    at = utc(2025, 1, 15, 8)  # 03:00 in New York
    mfa = check(NEW_YORK, at, "mfa")
    assert (mfa.allowed, mfa.earliest, mfa.reason, mfa.exempt) == (True, at, None, True)
    assert mfa.zones == ("America/New_York",)
    strict = hours(exempt_purposes=frozenset()).check(NEW_YORK, at, "mfa")
    assert (strict.allowed, strict.earliest, strict.exempt) == (False, utc(2025, 1, 15, 13), False)
    assert not check(NEW_YORK, at, "notify").allowed
    assert QUIET_HOURS.exempt_purposes == frozenset({"mfa"})


def test_a_per_country_window_overrides_the_default() -> None:
    """GB at 09:00-20:00: 08:30 London is quiet there though inside the default; other countries keep 08:00-21:00;
    a country mapped to None has no quiet hours."""
    rule = hours(countries={"gb": Window.parse("09:00-20:00"), "US": None})
    assert set(rule.countries) == {"GB", "US"}
    london = rule.check(LONDON, utc(2025, 1, 15, 8, 30), "notify")
    assert (london.allowed, london.earliest) == (False, utc(2025, 1, 15, 9))
    assert london.reason == "quiet_hours:GB:Europe/London"
    assert london.window == Window(time(9), time(20))
    assert check(LONDON, utc(2025, 1, 15, 8, 30), "notify").allowed  # the default window
    summer = rule.check(LONDON, utc(2025, 7, 15, 8, 30), "notify")  # 09:30 BST
    assert summer.allowed
    night = rule.check(NEW_YORK, utc(2025, 1, 15, 8), "notify")  # 03:00 New York, no quiet hours in the US
    assert (night.allowed, night.window, night.reason) == (True, None, None)
    paris = rule.check("+33142685300", utc(2025, 1, 15, 6, 30), "notify")  # 07:30 Paris, default window
    assert (paris.allowed, paris.earliest) == (False, utc(2025, 1, 15, 7))
    assert rule.window_for("FR") == DEFAULT_WINDOW and rule.window_for(None) == DEFAULT_WINDOW


def test_the_callers_zone_replaces_the_numbers() -> None:
    """A zone the caller knows (a user's profile) is read instead of the number's; the number's country keeps
    its window."""
    verdict = check(NEW_YORK, utc(2025, 1, 15, 12), "notify", zone="Europe/Paris")  # 13:00 in Paris
    assert (verdict.allowed, verdict.zones, verdict.source, verdict.region) == (True, ("Europe/Paris",), "caller", "US")
    late = check(NEW_YORK, utc(2025, 1, 15, 21), "notify", zone="Europe/Paris")  # 22:00 in Paris
    assert (late.allowed, late.earliest, late.reason) == (False, utc(2025, 1, 16, 7), "quiet_hours:US:Europe/Paris")


@pytest.mark.parametrize(("rule", "allowed"), [("allow", True), ("refuse", False)])
def test_a_number_with_no_zone_follows_on_unknown_zone(rule: str, allowed: bool) -> None:
    """+800 has no country and no zone: allowed by default, refused (with nothing to defer to) when asked."""
    at = utc(2025, 1, 15, 3)
    verdict = hours(on_unknown_zone=rule).check(INTL_FREEPHONE, at, "notify")
    assert (verdict.allowed, verdict.zones, verdict.source, verdict.region) == (allowed, (), "unknown", None)
    if allowed:
        assert (verdict.earliest, verdict.reason) == (at, None)
    else:
        assert (verdict.earliest, verdict.reason) == (None, "quiet_hours:+800:unknown_zone")


# --- the search itself, against brute force ------------------------------------------------------------------------

ZONE_NAMES = [
    "America/New_York", "America/Los_Angeles", "America/St_Johns", "Australia/Sydney", "Australia/Lord_Howe",
    "Australia/Eucla", "Europe/London", "Asia/Kathmandu", "Pacific/Chatham", "America/Santiago", "Asia/Tehran",
    "UTC",
]  # fmt: skip


#: Days on which one of those zones changes its clocks (2024): the search is tested around them on purpose.
DST_DAYS = [
    datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 11, 3, tzinfo=UTC),  # North America
    datetime(2024, 3, 31, tzinfo=UTC), datetime(2024, 10, 27, tzinfo=UTC),  # Europe
    datetime(2024, 4, 7, tzinfo=UTC), datetime(2024, 10, 6, tzinfo=UTC),  # Australia (Lord Howe by 30 min)
    datetime(2024, 4, 6, tzinfo=UTC), datetime(2024, 9, 28, tzinfo=UTC),  # Chile, Chatham Islands (UTC)
]  # fmt: skip


def _open_everywhere(zones: list[ZoneInfo], window: Window, instant: datetime) -> bool:
    return all(window.contains(instant.astimezone(tz).time()) for tz in zones)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(
    zones=st.lists(st.sampled_from(ZONE_NAMES), min_size=1, max_size=3, unique=True),
    start=st.integers(0, 24 * 4 - 1),
    length=st.integers(1, 24 * 4 - 1),
    base=st.one_of(st.sampled_from(DST_DAYS), st.just(datetime(2024, 1, 1, tzinfo=UTC))),
    offset_minutes=st.one_of(st.integers(-4 * 24 * 60, 2 * 24 * 60), st.integers(0, 2 * 365 * 24 * 60)),
)
def test_earliest_allowed_agrees_with_a_brute_force_scan(
    zones: list[str], start: int, length: int, base: datetime, offset_minutes: int
) -> None:
    """For any zones (DST north and south, half- and quarter-hour offsets) and any window, the earliest time is open
    everywhere, the second before it is not, and a scan every 15 minutes finds nothing open earlier."""
    begin, end = start * 15, (start + length) % (24 * 4) * 15
    window = Window(time(begin // 60, begin % 60), time(end // 60, end % 60))
    tzs = [ZoneInfo(name) for name in zones]
    at = base + timedelta(minutes=offset_minutes, seconds=17)
    earliest = earliest_allowed(tzs, window, at)
    scan_until = earliest if earliest is not None else at + HORIZON
    probe = at
    while probe < scan_until:
        assert not _open_everywhere(tzs, window, probe), f"open at {probe}, before {earliest}"
        probe += timedelta(minutes=15)
    if earliest is not None:
        assert at <= earliest < at + HORIZON
        assert _open_everywhere(tzs, window, earliest)
        assert earliest == at or not _open_everywhere(tzs, window, earliest - timedelta(seconds=1))


# --- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: check("2125551234", utc(2025, 1, 1), "notify"), InvalidNumber, "E.164"),
        (lambda: check("sip:alice@example.com", utc(2025, 1, 1), "notify"), InvalidNumber, "address"),
        (lambda: check(12125551234, utc(2025, 1, 1), "notify"), InvalidArgumentType, "E.164 string"),
        (lambda: check(NEW_YORK, datetime(2025, 1, 1, 12), "notify"), InvalidArgument, "aware"),
        (lambda: check(NEW_YORK, "2025-01-01T12:00Z", "notify"), InvalidArgumentType, "datetime"),
        (lambda: check(NEW_YORK, True, "notify"), InvalidArgumentType, "datetime"),
        (lambda: check(NEW_YORK, float("nan"), "notify"), InvalidArgument, "instant"),
        (lambda: check(NEW_YORK, 1e20, "notify"), InvalidArgument, "instant"),
        (lambda: check(NEW_YORK, datetime.max.replace(tzinfo=UTC), "notify"), InvalidArgument, "9999"),
        (lambda: check(NEW_YORK, utc(2025, 1, 1), "marketing"), InvalidArgument, "notify, mfa"),
        (lambda: check(NEW_YORK, utc(2025, 1, 1), "notify", zone="Mars/Olympus"), InvalidArgument, "IANA"),
        (lambda: check(NEW_YORK, utc(2025, 1, 1), "notify", zone=5), InvalidArgumentType, "IANA"),
        (lambda: check(NEW_YORK, utc(2025, 1, 1), "notify", hours={}), InvalidArgumentType, "QuietHours"),
        (lambda: Window.parse("8-21"), InvalidArgument, "HH:MM"),
        (lambda: Window.parse("08:00"), InvalidArgument, "HH:MM-HH:MM"),
        (lambda: Window.parse("25:00-06:00"), InvalidArgument, "time of day"),
        (lambda: Window.parse("24:00-06:00"), InvalidArgument, "only as an end"),
        (lambda: Window.parse("08:00-08:00"), InvalidArgument, "None for no quiet hours"),
        (lambda: Window.parse(8), InvalidArgumentType, "HH:MM-HH:MM"),
        (lambda: Window(time(8, tzinfo=UTC), time(21)), InvalidArgument, "naive"),
        (lambda: Window(8, time(21)), InvalidArgumentType, "datetime.time"),  # type: ignore[arg-type]
        (lambda: hours(countries={"USA": DEFAULT_WINDOW}), InvalidArgument, "alpha-2"),
        (lambda: hours(countries=[("US", DEFAULT_WINDOW)]), InvalidArgumentType, "map"),
        (lambda: hours(exempt_purposes="mfa"), InvalidArgumentType, "{'mfa'}"),
        (lambda: hours(exempt_purposes={"sms"}), InvalidArgument, "'sms'"),
        (lambda: hours(on_unknown_zone="deny"), InvalidArgument, "'allow' or 'refuse'"),
    ],
)
def test_bad_input_is_a_typed_error_naming_what_to_pass(call: object, error: type[Exception], words: str) -> None:
    """Every bad argument raises one of Gatekeeper's argument errors, saying what would do."""
    with pytest.raises(error) as caught:
        call()  # type: ignore[operator]
    assert isinstance(caught.value, InvalidArgument | InvalidArgumentType)
    assert words in str(caught.value)


def test_an_error_never_shows_the_whole_number() -> None:
    """A number that cannot be placed is masked in the message."""
    with pytest.raises(InvalidNumber) as caught:
        check("sip:2125551234@example.com", utc(2025, 1, 1), "notify")
    assert "2125551234" not in str(caught.value)


def test_windows_and_rules_are_values() -> None:
    """Windows parse from text and print back; rules compare and hash by content (usable as cache keys)."""
    assert str(Window.parse("08:00-24:00")) == "08:00-24:00"
    assert str(Window.parse(("22:00", "6:00"))) == "22:00-06:00"
    assert Window.parse([time(8), "21:00"]) == DEFAULT_WINDOW
    one = hours(countries={"FR": Window.parse("09:00-20:00"), "US": None})
    two = hours(countries={"us": None, "fr": "09:00-20:00"})
    assert one == two and hash(one) == hash(two)
    assert one != QUIET_HOURS
    with pytest.raises(AttributeError):
        one.default = DEFAULT_WINDOW  # type: ignore[misc]


def test_the_module_is_pure() -> None:
    """gatekeeper.quiet loads in a fresh interpreter without redis, flask, requests or twilio.rest."""
    code = (
        "import importlib.util, sys, types\n"
        "spec = importlib.util.find_spec('gatekeeper')\n"
        "pkg = types.ModuleType('gatekeeper'); pkg.__path__ = list(spec.submodule_search_locations)\n"
        "sys.modules['gatekeeper'] = pkg\n"
        "import gatekeeper.quiet\n"
        "print(','.join(m for m in ('redis', 'flask', 'requests', 'twilio.rest') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
