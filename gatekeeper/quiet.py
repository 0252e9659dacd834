"""Quiet hours: is it a decent hour where the recipient is, and if not, when will it be? Pure.

A window is when sending is **allowed**, in the recipient's local wall-clock time: ``08:00-21:00`` allows
from 08:00 up to (not including) 21:00. A window whose end is before its start wraps midnight:
``22:00-06:00`` allows from 22:00 until 06:00 the next morning, and ``08:00-24:00`` (stored as an end of
00:00) allows until midnight. A start equal to the end is refused as ambiguous: a country without quiet
hours gets ``None`` as its window. Every day is treated alike; there are no weekday or holiday rules.

The recipient's zones come from the number (``phonenumbers.timezone``): a geographic number gives the zones
of its area code, a mobile or toll-free number of most countries gives every zone of its calling code, and
a number phonenumbers cannot place (``Etc/Unknown``) falls back to the zones of its calling code
(``source="country"``). Numbers of non-geographic calling codes (+800, +882 …) have no zone at all
(``source="unknown"``) and follow ``QuietHours.on_unknown_zone``. A caller that knows better (a user's
profile) passes ``zone=``.

Where there are several zones the most restrictive reading holds: a send is allowed only when the local
time is inside the window in every zone, and the earliest allowed time is the first instant inside it in all
of them. A calling code shared by several countries (+1, +7) spans them all, so a US toll-free number is
read in Guam's and Hawaii's time as well as New York's: the allowed stretch is short, and for a narrow
window it can be empty (``earliest=None``).

Local time is computed with :mod:`zoneinfo`, so DST is exact: on a spring-forward day a window starting
inside the skipped hour opens at the instant the clocks jump, and on a fall-back day the repeated hour is
judged by what the clock reads each time round.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from types import MappingProxyType
from typing import Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_timezone

from gatekeeper.errors import ConfigError, InvalidArgument, InvalidArgumentType, InvalidNumber
from gatekeeper.masking import mask
from gatekeeper.models import PURPOSES, Phone
from gatekeeper.phone import normalize

#: Where a verdict's zones came from: the number's own prefix, its calling code, the caller, or nowhere.
ZoneSource = Literal["number", "country", "caller", "unknown"]
UnknownZoneRule = Literal["allow", "refuse"]
#: What ``check`` takes as a number: an E.164 string (``whatsapp:+…`` too), a Phone, or a parsed number.
NumberLike: TypeAlias = str | Phone | phonenumbers.PhoneNumber

_UTC = timezone.utc
_DAY = timedelta(days=1)
#: How far ahead the earliest allowed time is looked for. Windows repeat daily, so three days is a whole
#: cycle with a margin for a DST shift; nothing found by then means the zones never share the window.
HORIZON = timedelta(days=3)
# Offsets are sampled this often to find DST transitions (then bisected to the second). Real zones change
# offset at most a few times a year; two changes within 12 h that cancel out would go unseen.
_SAMPLE = timedelta(hours=12)
_UNKNOWN = "Etc/Unknown"
_LAST_YEAR = 9998
_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_REGION = re.compile(r"[A-Z]{2}")


def _parse_time(text: str, *, end: bool) -> time:
    match = _TIME.fullmatch(text.strip())
    if not match:
        raise InvalidArgument(f"a window time must read HH:MM or HH:MM:SS, such as '08:00', not {text!r}")
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if end and (hour, minute, second) == (24, 0, 0):
        return time(0)  # "until midnight": an end before the start, so the window runs to the day's end
    if hour > 23 or minute > 59 or second > 59:
        raise InvalidArgument(f"{text!r} is not a time of day (00:00 to 23:59:59; '24:00' only as an end)")
    return time(hour, minute, second)


def _as_time(value: object, *, end: bool) -> time:
    if isinstance(value, str):
        return _parse_time(value, end=end)
    if not isinstance(value, time):
        kind = type(value).__name__
        raise InvalidArgumentType(f"a window time must be a datetime.time or 'HH:MM', not {kind}")
    if value.tzinfo is not None:
        raise InvalidArgument("a window time is the recipient's wall-clock time: pass a naive time such as time(8)")
    return value


@dataclass(frozen=True, slots=True)
class Window:
    """Local wall-clock hours when sending is allowed: ``start`` up to (not including) ``end``; an ``end``
    before ``start`` wraps midnight. From text: ``Window.parse("08:00-24:00")`` (24:00 only as an end)."""

    start: time
    end: time

    def __post_init__(self) -> None:
        start, end = _as_time(self.start, end=False), _as_time(self.end, end=True)
        if start == end:
            raise InvalidArgument(
                f"window {start:%H:%M}-{end:%H:%M} is empty or the whole day: give distinct start and end, "
                "or None for no quiet hours"
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @classmethod
    def parse(cls, value: object) -> Window:
        """A Window from a Window, ``"08:00-21:00"``, or a ``(start, end)`` pair of times or strings."""
        if isinstance(value, Window):
            return value
        if isinstance(value, str):
            start, dash, end = value.partition("-")
            if not dash:
                raise InvalidArgument(f"a window reads 'HH:MM-HH:MM', such as '08:00-21:00', not {value!r}")
            return cls(_parse_time(start, end=False), _parse_time(end, end=True))
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(_as_time(value[0], end=False), _as_time(value[1], end=True))
        kind = type(value).__name__
        raise InvalidArgumentType(f"a window is a Window, 'HH:MM-HH:MM' or a (start, end) pair, not {kind}")

    @property
    def wraps(self) -> bool:
        """True when the window runs past midnight into the next day."""
        return self.end < self.start

    def contains(self, local: time) -> bool:
        """Whether a local wall-clock time is inside the window."""
        local = local.replace(tzinfo=None, fold=0)
        if self.wraps:
            return local >= self.start or local < self.end
        return self.start <= local < self.end

    def __str__(self) -> str:
        return f"{_fmt(self.start)}-{'24:00' if self.end == time(0) else _fmt(self.end)}"


def _fmt(value: time) -> str:
    return value.strftime("%H:%M:%S" if value.second or value.microsecond else "%H:%M")


#: 08:00-21:00: the hours the US TCPA allows for calls and texts, and a common courtesy elsewhere.
DEFAULT_WINDOW = Window(time(8), time(21))


@dataclass(frozen=True, slots=True)
class LocalZones:
    """Where a number's recipient may be: the ``region`` whose window applies (ISO alpha-2; None for a
    non-geographic calling code), the candidate ``zones`` (IANA names) and where they came from."""

    region: str | None
    calling_code: int
    zones: tuple[str, ...]
    source: ZoneSource


@dataclass(frozen=True, slots=True)
class QuietVerdict:
    """The answer for one send at one instant.

    ``earliest`` is the first instant at or after the one asked about when sending is allowed (UTC): the
    instant itself when ``allowed``; None when no instant within :data:`HORIZON` is inside the window in every
    zone (or the zone is unknown and ``on_unknown_zone`` refuses), so deferring cannot help.
    ``reason`` (set when not allowed) is ``quiet_hours:<region>:<zone>`` naming a zone where it is quiet now,
    or ``quiet_hours:<region>:unknown_zone``; ``<region>`` is ``+<calling code>`` when there is no region.
    """

    allowed: bool
    earliest: datetime | None
    zones: tuple[str, ...]
    reason: str | None = None
    region: str | None = None
    source: ZoneSource = "number"
    window: Window | None = None  # the window applied; None when the region has no quiet hours
    exempt: bool = False  # the purpose is exempt (MFA by default): allowed whatever the hour


@dataclass(frozen=True, slots=True)
class QuietHours:
    """The quiet-hours rule: a ``default`` window, per-country windows (ISO alpha-2 -> Window, or None for no
    quiet hours there), the purposes exempt from it, and what to do with a number no zone is known for.

    A strategy in the house style: configure once, then ``hours.check(number, at, purpose)`` (or call it).
    """

    default: Window = DEFAULT_WINDOW
    countries: Mapping[str, Window | None] = field(default_factory=lambda: MappingProxyType({}))
    exempt_purposes: frozenset[str] = frozenset({"mfa"})
    # A non-geographic number (+800, +882 …) has no local time. Allowing it keeps such rare numbers reachable;
    # "refuse" is for senders who must prove every send was at a decent hour.
    on_unknown_zone: UnknownZoneRule = "allow"

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", Window.parse(self.default))
        if not isinstance(self.countries, Mapping):
            kind = type(self.countries).__name__
            raise InvalidArgumentType(
                f"countries must map ISO alpha-2 codes to windows, such as {{'FR': ...}}, not {kind}"
            )
        countries: dict[str, Window | None] = {}
        for key, value in self.countries.items():
            region = key.strip().upper() if isinstance(key, str) else ""
            if not _REGION.fullmatch(region):
                raise InvalidArgument(f"countries keys are ISO 3166 alpha-2 codes such as 'FR', not {key!r}")
            countries[region] = None if value is None else Window.parse(value)
        object.__setattr__(self, "countries", MappingProxyType(countries))
        if isinstance(self.exempt_purposes, str) or not isinstance(self.exempt_purposes, Iterable):
            raise InvalidArgumentType("exempt_purposes is a set of purposes, such as {'mfa'}")
        exempt = frozenset(self.exempt_purposes)
        if unknown := sorted(exempt - set(PURPOSES)):
            raise InvalidArgument(f"unknown purpose(s) {', '.join(map(repr, unknown))} (known: {', '.join(PURPOSES)})")
        object.__setattr__(self, "exempt_purposes", exempt)
        if self.on_unknown_zone not in ("allow", "refuse"):
            raise InvalidArgument(f"on_unknown_zone is 'allow' or 'refuse', not {self.on_unknown_zone!r}")

    def __hash__(self) -> int:  # the mapping is read-only but not hashable; hash its items
        items = tuple(sorted(self.countries.items()))
        return hash((self.default, items, self.exempt_purposes, self.on_unknown_zone))

    def window_for(self, region: str | None) -> Window | None:
        """The window for a region: its own when configured (None: no quiet hours there), else the default."""
        if region is not None and region in self.countries:
            return self.countries[region]
        return self.default

    def check(self, number: NumberLike, at: datetime | float, purpose: str, *, zone: str | None = None) -> QuietVerdict:
        """Whether ``purpose`` may be sent to ``number`` at ``at`` (an aware datetime, or epoch seconds as the
        gate's clock gives them), and if not, the earliest instant it may. ``zone`` (an IANA name the caller
        knows the recipient to be in) replaces the zones read from the number."""
        if purpose not in PURPOSES:
            raise InvalidArgument(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
        instant = _instant(at)
        where = local_zones(number) if zone is None else _caller_zone(number, zone)
        window = self.window_for(where.region)
        exempt = purpose in self.exempt_purposes
        verdict = QuietVerdict(True, instant, where.zones, None, where.region, where.source, window, exempt)
        if exempt or window is None:
            return verdict
        label = where.region or f"+{where.calling_code}"
        if not where.zones:
            if self.on_unknown_zone == "allow":
                return verdict
            return _refused(verdict, None, f"quiet_hours:{label}:unknown_zone")
        tzs = [_zone(name) for name in where.zones]
        quiet = [name for name, tz in zip(where.zones, tzs, strict=True) if not window.contains(_wall(instant, tz))]
        if not quiet:
            return verdict
        return _refused(verdict, earliest_allowed(tzs, window, instant), f"quiet_hours:{label}:{quiet[0]}")

    __call__ = check


def _wall(instant: datetime, tz: ZoneInfo) -> time:
    return instant.astimezone(tz).time()


def _refused(verdict: QuietVerdict, earliest: datetime | None, reason: str) -> QuietVerdict:
    return QuietVerdict(
        False, earliest, verdict.zones, reason, verdict.region, verdict.source, verdict.window, verdict.exempt
    )


#: The rule with every default: 08:00-21:00 everywhere, MFA exempt, unknown zones allowed.
QUIET_HOURS = QuietHours()


def check(
    number: NumberLike, at: datetime | float, purpose: str, *, hours: QuietHours = QUIET_HOURS, zone: str | None = None
) -> QuietVerdict:
    """:meth:`QuietHours.check` under ``hours`` (the defaults unless given)."""
    if not isinstance(hours, QuietHours):
        raise InvalidArgumentType(f"hours must be a QuietHours, not {type(hours).__name__}")
    return hours.check(number, at, purpose, zone=zone)


def _instant(at: object) -> datetime:
    if isinstance(at, bool) or not isinstance(at, (datetime, int, float)):
        raise InvalidArgumentType(f"at must be an aware datetime or epoch seconds, not {type(at).__name__}")
    if isinstance(at, datetime) and (at.tzinfo is None or at.utcoffset() is None):
        raise InvalidArgument("at must be an aware datetime, such as datetime.now(timezone.utc); it is naive")
    try:
        instant = at.astimezone(_UTC) if isinstance(at, datetime) else datetime.fromtimestamp(at, _UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidArgument(f"at must be an instant within the years 1-9999, not {at!r}") from exc
    if instant.year > _LAST_YEAR:  # the search looks days ahead; datetime ends at 9999
        raise InvalidArgument(f"at must be before the year {_LAST_YEAR + 1}, not {instant:%Y-%m-%d}")
    return instant


def _e164(number: object) -> str:
    if isinstance(number, phonenumbers.PhoneNumber):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if isinstance(number, str):
        number = normalize(number)
    if not isinstance(number, Phone):
        kind = type(number).__name__
        raise InvalidArgumentType(f"number must be an E.164 string, a Phone or a phonenumbers.PhoneNumber, not {kind}")
    if number.e164 is None:
        problem = number.problem or number.kind  # a sip:/client:/messenger: address has no number
        raise InvalidNumber(
            f"{mask(number.raw)} has no phone number to place in a time zone ({problem}): pass an E.164 number "
            "such as +14155550100, or a Phone from gatekeeper.phone.normalize(raw, country)",
            reason=problem,
        )
    return number.e164


def local_zones(number: NumberLike) -> LocalZones:
    """The time zones a number's recipient may be in, read from the number alone (see the module's docs)."""
    return _zones_of(_e164(number))


@lru_cache(maxsize=8_192)
def _zones_of(e164: str) -> LocalZones:
    parsed = phonenumbers.parse(e164, None)
    code = parsed.country_code or 0
    region = phonenumbers.region_code_for_number(parsed)
    if region is None:  # parseable but invalid: the calling code's main country (+1 -> US)
        region = phonenumbers.region_code_for_country_code(code)
    country = _known(pn_timezone._country_level_time_zones_for_number(parsed))  # the stubs declare it
    own = _known(pn_timezone.time_zones_for_number(parsed))
    if own:
        source: ZoneSource = "country" if own == country else "number"
        zones = own
    else:
        source, zones = ("country", country) if country else ("unknown", ())
    return LocalZones(region if _REGION.fullmatch(region or "") else None, code, zones, source)


def _known(zones: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(z for z in zones if z != _UNKNOWN))


def _caller_zone(number: NumberLike, zone: object) -> LocalZones:
    if not isinstance(zone, str):
        raise InvalidArgumentType(
            f"zone must be an IANA time zone name such as 'Europe/Paris', not {type(zone).__name__}"
        )
    try:
        _zone(zone)
    except (ConfigError, ValueError) as exc:
        raise InvalidArgument(f"zone {zone!r} is not an IANA time zone name, such as 'Europe/Paris'") from exc
    where = local_zones(number)
    return LocalZones(where.region, where.calling_code, (zone,), "caller")


@lru_cache(maxsize=1_024)  # ZoneInfo keeps only 8 zones strongly; a +1 toll-free number alone reads 42
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError as exc:
        raise ConfigError(
            f"time zone {name!r} is not in this machine's time zone database: install or update the tzdata "
            "package (pip install -U tzdata)"
        ) from exc


# --- The earliest allowed instant: allowed UTC intervals per zone, intersected. ---
Interval = tuple[datetime, datetime]  # [start, end), aware UTC


def earliest_allowed(zones: Iterable[ZoneInfo], window: Window, at: datetime) -> datetime | None:
    """The first instant at or after ``at`` (aware) whose local time is inside ``window`` in every zone, or
    None when there is none within :data:`HORIZON`."""
    lo = _instant(at)
    common: list[Interval] = [(lo, lo + HORIZON)]
    for tz in zones:
        common = _intersect(common, _allowed(tz, window, lo, lo + HORIZON))
        if not common:
            return None
    return common[0][0]


def _allowed(tz: ZoneInfo, window: Window, lo: datetime, hi: datetime) -> list[Interval]:
    """The instants in [lo, hi) whose wall-clock time in ``tz`` is inside ``window``, as sorted intervals.

    Within a stretch of constant UTC offset, local time is UTC plus the offset, so each day's window maps to
    one UTC interval exactly; the stretches are cut at DST transitions, which is what makes a skipped hour
    and a repeated one come out right without special cases."""
    out: list[Interval] = []
    for start, stop, offset in _stretches(tz, lo, hi):
        first, last = _local(start, offset).date() - _DAY, _local(stop, offset).date()
        day: date = first
        while day <= last:
            opens = datetime.combine(day, window.start)
            closes = datetime.combine(day + _DAY if window.wraps else day, window.end)
            a = max((opens - offset).replace(tzinfo=_UTC), start)
            b = min((closes - offset).replace(tzinfo=_UTC), stop)
            if a < b:
                out.append((a, b))
            day += _DAY
    return out


def _local(instant: datetime, offset: timedelta) -> datetime:
    return (instant + offset).replace(tzinfo=None)


def _offset(tz: ZoneInfo, epoch_seconds: float) -> timedelta:
    return datetime.fromtimestamp(epoch_seconds, tz).utcoffset() or timedelta(0)


def _stretches(tz: ZoneInfo, lo: datetime, hi: datetime) -> list[tuple[datetime, datetime, timedelta]]:
    """[lo, hi) cut where ``tz`` changes its UTC offset: (start, stop, offset) for each piece."""
    pieces: list[tuple[datetime, datetime, timedelta]] = []
    start = t = lo
    offset = _offset(tz, lo.timestamp())
    while t < hi:
        ahead = min(t + _SAMPLE, hi)
        if _offset(tz, ahead.timestamp()) == offset:
            t = ahead
            continue
        # Bisect on whole seconds (tz transitions fall on them) for the first second with the new offset.
        before, after = math.floor(t.timestamp()), math.ceil(ahead.timestamp())
        while after - before > 1:
            middle = (before + after) // 2
            if _offset(tz, middle) == offset:
                before = middle
            else:
                after = middle
        change = min(datetime.fromtimestamp(after, _UTC), hi)
        pieces.append((start, change, offset))
        start = t = change
        offset = _offset(tz, after)
    if start < hi:
        pieces.append((start, hi, offset))
    return pieces


def _intersect(xs: list[Interval], ys: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        a, b = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if a < b:
            out.append((a, b))
        if xs[i][1] <= ys[j][1]:
            i += 1
        else:
            j += 1
    return out
