"""How many SMS segments a body costs, and which characters made it cost more. Pure.

Twilio bills an SMS per *segment*, and the encoding decides how many there are (3GPP TS 23.038 / GSM 03.38):

- **GSM-7** when every character is in the GSM 7-bit default alphabet: 160 units in a lone SMS, 153 in each part of a
  concatenated one (the 6-octet header that joins the parts eats 7 septets). A character of the *extension table*
  (``^ { } \\ [ ~ ] | €`` and form feed) is an escape plus a character, 2 units, and the pair is never split across
  two parts.
- **UCS-2** as soon as one character is outside that alphabet: 70 UTF-16 code units alone, 67 per part. A character
  beyond the Basic Multilingual Plane (most emoji) is a surrogate pair, 2 units, never split across two parts.

One character pasted from a word processor (a curly apostrophe, an en dash, a non-breaking space) turns a 150-character
GSM-7 message of 1 segment into a UCS-2 message of 3. :func:`ucs2_culprits` names those characters with their
positions, :func:`smart_encode` replaces the look-alikes, :func:`advice` says it in one sentence.

Units are counted per code point, as Twilio's published segment calculator does for everything but one case: it keeps
a whole grapheme cluster (an emoji joined by U+200D, a flag, a letter and its combining accent) in one part, where
this module keeps only a surrogate pair whole, so a long UCS-2 message with such a cluster across a boundary can cost
one segment more there than here. National language shift tables (Turkish, Spanish, Portuguese, Indian) are not
used: Twilio does not send with them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from gatekeeper.errors import InvalidArgumentType

Encoding = Literal["GSM-7", "UCS-2"]

#: Units in a lone SMS and in each part of a concatenated one, per encoding (septets for GSM-7, UTF-16 code units
#: for UCS-2).
SINGLE_UNITS: Mapping[Encoding, int] = MappingProxyType({"GSM-7": 160, "UCS-2": 70})
PART_UNITS: Mapping[Encoding, int] = MappingProxyType({"GSM-7": 153, "UCS-2": 67})
#: The longest Body Twilio's Messages API accepts, in characters (longer is refused with error 21617).
MAX_BODY_CHARS = 1600

#: The GSM 7-bit default alphabet, in table order (0x00-0x7F), without 0x1B (the escape to the extension table).
#: 0x09 is the capital C with cedilla, as in the standard's table and in Twilio's calculator; the small one is UCS-2.
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The extension table: each costs 2 units (escape + character). ``\f`` is form feed (a page break).
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

_NOT_GSM7 = re.compile("[^" + "".join(re.escape(c) for c in sorted(GSM7_BASIC | GSM7_EXTENSION)) + "]")


def _smart_table() -> dict[int, str]:
    """Look-alikes people paste by accident -> their GSM-7 twin (see :func:`smart_encode`)."""
    same = {
        "'": "\u2018\u2019\u201a\u201b\u2032\u2035\u02b9\u02bb\u02bc\u02bd\u02c8\u02ca\u02cb\u00b4`\u275b\u275c",
        '"': "\u201c\u201d\u201e\u201f\u2033\u2036\u00ab\u00bb\u02ba\u02ee\u275d\u275e\u301d\u301e",
        "-": "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043\u2022\u00b7\u2027\ufe63",
        " ": "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000\t",
        "\n": "\u2028\u2029\u0085\u000b",
        "": "\u200b\u2060\ufeff\u00ad",  # zero-width space, word joiner, BOM, soft hyphen: invisible either way
        "<": "\u2039",
        ">": "\u203a",
        "/": "\u2044\u2215\u00f7",
        "*": "\u2217\u204e",
        ",": "\u3001",
        ".": "\u3002\uff61",
        "~": "\u02dc\u223c",
        "^": "\u02c6",
        "|": "\u2223",
        "\u03a9": "\u2126",  # OHM SIGN looks like (and NFC-normalises to) the GSM-7 capital omega
    }
    table = {ord(src): dst for dst, sources in same.items() for src in sources}
    table.update(
        {
            ord("\u2026"): "...",  # horizontal ellipsis
            ord("\u203c"): "!!",
            ord("\u00bc"): "1/4",
            ord("\u00bd"): "1/2",
            ord("\u00be"): "3/4",
        }
    )
    # Fullwidth ASCII (U+FF01-U+FF5E) is ASCII shifted by 0xFEE0; the grave accent has no GSM-7 twin: an apostrophe.
    for code in range(0xFF01, 0xFF5F):
        twin = chr(code - 0xFEE0)
        table[code] = "'" if twin == "`" else twin
    return table


#: ``str.translate`` table of :func:`smart_encode`. Every replacement is GSM-7 (a test holds it so).
SMART_ENCODING: Mapping[int, str] = MappingProxyType(_smart_table())


@dataclass(frozen=True, slots=True)
class Segments:
    """What a body costs as SMS: its ``encoding``, the ``segments`` billed, the ``units`` it holds (septets for GSM-7,
    UTF-16 code units for UCS-2) and ``per_segment``, the units each segment holds at this length (160/70 for a lone
    SMS, 153/67 for each part of a concatenated one)."""

    encoding: Encoding
    segments: int
    units: int
    per_segment: int


@dataclass(frozen=True, slots=True)
class Culprit:
    """A character that forces UCS-2: its ``index`` in the body (a Python string index, so a code point), the
    ``char``, its Unicode ``name`` and the GSM-7 ``replacement`` :func:`smart_encode` would use (None: no look-alike,
    as for most letters of other scripts and for emoji)."""

    index: int
    char: str
    name: str
    replacement: str | None

    def __str__(self) -> str:
        fix = f", use {self.replacement!r}" if self.replacement is not None else ""
        return f"{self.char!r} ({self.name}) at {self.index}{fix}"


def _check(body: object) -> str:
    if not isinstance(body, str):
        raise InvalidArgumentType(f"body must be a str, not {type(body).__name__}")
    return body


def encoding(body: str) -> Encoding:
    """``"GSM-7"`` when every character of ``body`` is in the GSM 7-bit alphabet (extension table included), else
    ``"UCS-2"``. Raises :class:`~gatekeeper.errors.InvalidArgumentType` for anything but a ``str``."""
    return "UCS-2" if _NOT_GSM7.search(_check(body)) else "GSM-7"


def _parts(sizes: list[int], capacity: int) -> int:
    """Parts of ``capacity`` units needed to hold ``sizes`` in order, no item split across two parts."""
    parts, used = 1, 0
    for size in sizes:
        if used + size > capacity:
            parts, used = parts + 1, size
        else:
            used += size
    return parts


def segments(body: str) -> Segments:
    """The segments Twilio bills for ``body`` sent as one SMS (see the module docstring for the rules).

    An empty body counts as 1 segment of 0 units: an SMS with no text is still one message on the network, Twilio's
    own segment calculator says 1, and a budget should never price a send at nothing. (Twilio refuses to send an
    empty Body without media anyway.) Raises :class:`~gatekeeper.errors.InvalidArgumentType` for anything but a
    ``str``.
    """
    enc = encoding(body)
    if enc == "GSM-7":
        sizes = [2 if c in GSM7_EXTENSION else 1 for c in body]  # escape + character
    else:
        sizes = [2 if ord(c) > 0xFFFF else 1 for c in body]  # a surrogate pair in UTF-16
    units = sum(sizes)
    single = SINGLE_UNITS[enc]
    if units <= single:
        return Segments(enc, 1, units, single)
    part = PART_UNITS[enc]
    if units == len(body):  # every character one unit: nothing can straddle a boundary
        return Segments(enc, -(-units // part), units, part)
    return Segments(enc, _parts(sizes, part), units, part)


def ucs2_culprits(body: str) -> tuple[Culprit, ...]:
    """Every character of ``body`` outside GSM-7, in order, each with its index and its GSM-7 look-alike if it has
    one: ``()`` when the body is GSM-7. Every occurrence is listed, so a caller can show each place to fix."""
    found = []
    for match in _NOT_GSM7.finditer(_check(body)):
        char = match.group()
        name = unicodedata.name(char, f"U+{ord(char):04X}")
        found.append(Culprit(match.start(), char, name, SMART_ENCODING.get(ord(char))))
    return tuple(found)


def smart_encode(body: str) -> str:
    """``body`` with look-alike characters replaced by GSM-7 ones: curly quotes and primes by straight ones, dashes
    and bullets by ``-``, the ellipsis by ``...``, unusual spaces (no-break, thin, ideographic, tab) by a space,
    invisible characters (zero-width space, word joiner, byte-order mark, soft hyphen) removed, fullwidth ASCII by
    ASCII.

    Twilio does the same when a message is sent with ``SmartEncoded=true`` or through a Messaging Service with Smart
    Encoding on. This table is ours, modelled on the one in Twilio's segment calculator; Twilio's own replacement of
    a rare character may differ. Letters with no GSM-7 twin (``á``, ``ç``, other scripts), emoji and the joiners
    inside emoji and scripts (U+200C, U+200D) are left as they are: changing them would change the words. In a body
    that stays UCS-2, replacing can cost more: ``...`` is 3 units where the ellipsis was 1. Raises
    :class:`~gatekeeper.errors.InvalidArgumentType` for a non-``str``.
    """
    return _check(body).translate(SMART_ENCODING)


def advice(body: str, *, limit: int = 3) -> str | None:
    """One sentence on what forces ``body`` into UCS-2 and what replacing the look-alikes would save, naming up to
    ``limit`` distinct characters; None when the body is GSM-7 already.

    For example, for a 100-character body with one curly apostrophe at index 2: ``'\\u2019' (RIGHT SINGLE QUOTATION
    MARK) at 2, use "'" forces UCS-2: 2 UCS-2 segments; with look-alikes replaced (smart_encode): 1 GSM-7 segment``.
    """
    culprits = ucs2_culprits(body)
    if not culprits:
        return None
    distinct: dict[str, Culprit] = {}
    for culprit in culprits:
        distinct.setdefault(culprit.char, culprit)
    named = [str(c) for c in list(distinct.values())[:limit]]
    more = len(distinct) - len(named)
    if more:
        named.append(f"{more} more")
    now, then = segments(body), segments(smart_encode(body))
    verb = "forces" if len(distinct) == 1 else "force"
    sentence = f"{'; '.join(named)} {verb} UCS-2: {_count(now)}"
    if then.segments < now.segments:  # "..." for "\u2026" is 3 units: replacing does not always save
        sentence += f"; with look-alikes replaced (smart_encode): {_count(then)}"
    return sentence


def _count(counted: Segments) -> str:
    return f"{counted.segments} {counted.encoding} segment{'' if counted.segments == 1 else 's'}"
