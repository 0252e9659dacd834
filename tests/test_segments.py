"""SMS segment counting (GSM-7 vs UCS-2), the characters that force UCS-2, and Smart Encoding's look-alikes."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatekeeper.errors import GatekeeperError, InvalidArgumentType
from gatekeeper.segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    SMART_ENCODING,
    Culprit,
    Segments,
    advice,
    encoding,
    segments,
    smart_encode,
    ucs2_culprits,
)

EURO, EMOJI, ZHE, CURLY = "\u20ac", "\U0001f600", "\u0416", "\u2019"  # euro, emoji, Cyrillic zhe, apostrophe


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # GSM-7: 160 alone, 153 a part.
        ("", Segments("GSM-7", 1, 0, 160)),
        ("a", Segments("GSM-7", 1, 1, 160)),
        ("a" * 160, Segments("GSM-7", 1, 160, 160)),
        ("a" * 161, Segments("GSM-7", 2, 161, 153)),
        ("a" * 153 * 2, Segments("GSM-7", 2, 306, 153)),
        ("a" * 307, Segments("GSM-7", 3, 307, 153)),
        ("a" * 1600, Segments("GSM-7", 11, 1600, 153)),
        # The extension table costs 2 units; an escape pair is never split across two parts.
        (EURO * 80, Segments("GSM-7", 1, 160, 160)),
        ("a" * 159 + EURO, Segments("GSM-7", 2, 161, 153)),
        ("a" * 151 + EURO + "a" * 153, Segments("GSM-7", 2, 306, 153)),  # the pair ends part 1 exactly
        ("a" * 152 + EURO + "a" * 152, Segments("GSM-7", 3, 306, 153)),  # the pair would straddle: part 2 overflows
        ("a" * 152 + "[" + "a" * 152, Segments("GSM-7", 3, 306, 153)),
        (EURO * 153, Segments("GSM-7", 3, 306, 153)),  # 76 pairs a part, not 76.5
        ("^{}\\[~]|\f" + EURO, Segments("GSM-7", 1, 20, 160)),
        # GSM-7 has these, so they cost nothing extra.
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\r\n", Segments("GSM-7", 1, 44, 160)),
        # UCS-2: 70 alone, 67 a part, in UTF-16 code units.
        (ZHE * 70, Segments("UCS-2", 1, 70, 70)),
        (ZHE * 71, Segments("UCS-2", 2, 71, 67)),
        (ZHE * 67 * 2, Segments("UCS-2", 2, 134, 67)),
        (ZHE * 135, Segments("UCS-2", 3, 135, 67)),
        ("a" * 69 + CURLY, Segments("UCS-2", 1, 70, 70)),
        ("a" * 70 + CURLY, Segments("UCS-2", 2, 71, 67)),
        ("a" * 159 + CURLY, Segments("UCS-2", 3, 160, 67)),  # one apostrophe: 3 segments instead of 1
        # An emoji is a surrogate pair, 2 units, never split across two parts.
        (EMOJI, Segments("UCS-2", 1, 2, 70)),
        (EMOJI * 35, Segments("UCS-2", 1, 70, 70)),
        (EMOJI * 36, Segments("UCS-2", 2, 72, 67)),
        (ZHE * 65 + EMOJI + ZHE * 67, Segments("UCS-2", 2, 134, 67)),  # the pair ends part 1 exactly
        (ZHE * 66 + EMOJI + ZHE * 66, Segments("UCS-2", 3, 134, 67)),  # the pair would straddle
        (EMOJI * 67, Segments("UCS-2", 3, 134, 67)),  # 33 pairs a part
        ("\ud83d", Segments("UCS-2", 1, 1, 70)),  # a lone surrogate (bad decoding upstream) is one code unit
        # An extension character in a UCS-2 body is one code unit like any other.
        (ZHE * 69 + EURO, Segments("UCS-2", 1, 70, 70)),
    ],
)
def test_segments(body: str, expected: Segments) -> None:
    """Encoding, segments, units and units per segment at each boundary that matters."""
    assert segments(body) == expected
    assert encoding(body) == expected.encoding


def test_the_alphabet_is_the_standards() -> None:
    """127 basic characters (128 minus the escape) and 10 extension characters, disjoint; small c cedilla is not one."""
    assert (len(GSM7_BASIC), len(GSM7_EXTENSION)) == (127, 10)
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert "\x1b" not in GSM7_BASIC
    assert {"Ç", "é", "É", "\n", "\r", " "} <= GSM7_BASIC
    assert encoding("ç") == encoding("á") == encoding("`") == encoding("\t") == "UCS-2"


def parts_by_bytes(body: str) -> int:
    """A reference that measures each part in encoded bytes (UTF-16 for UCS-2, septets for GSM-7), filling each part
    with as many whole characters as fit."""
    gsm = all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body)

    def units(char: str) -> int:
        if gsm:
            return 2 if char in GSM7_EXTENSION else 1
        return len(char.encode("utf-16-be", "surrogatepass")) // 2

    total = sum(units(c) for c in body)
    if total <= (160 if gsm else 70):
        return 1
    capacity, used = (153 if gsm else 67), 0
    parts: list[list[str]] = [[]]
    for char in body:
        if used + units(char) > capacity:
            parts.append([])
            used = 0
        parts[-1].append(char)
        used += units(char)
    assert "".join("".join(p) for p in parts) == body
    return len(parts)


ALPHABET = st.sampled_from([*sorted(GSM7_BASIC | GSM7_EXTENSION), EMOJI, ZHE, CURLY, "\u2026", "\u00a0", "\u00e1"])


@given(st.text(alphabet=ALPHABET, max_size=700))
def test_segments_agree_with_a_reference_that_counts_bytes(body: str) -> None:
    """Any body of GSM-7, extension, emoji and UCS-2 characters: the same count as filling parts by encoded size."""
    counted = segments(body)
    assert counted.segments == parts_by_bytes(body)
    assert counted.segments >= -(-counted.units // counted.per_segment)  # never fewer than the units need


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("plain text", ()),
        ("", ()),
        ("a{b}€", ()),
        ("It\u2019s", (Culprit(2, "\u2019", "RIGHT SINGLE QUOTATION MARK", "'"),)),
        (
            "\u201cok\u201d \u2013 1\u00a02\u2026",
            (
                Culprit(0, "\u201c", "LEFT DOUBLE QUOTATION MARK", '"'),
                Culprit(3, "\u201d", "RIGHT DOUBLE QUOTATION MARK", '"'),
                Culprit(5, "\u2013", "EN DASH", "-"),
                Culprit(8, "\u00a0", "NO-BREAK SPACE", " "),
                Culprit(10, "\u2026", "HORIZONTAL ELLIPSIS", "..."),
            ),
        ),
        ("a\u200bb", (Culprit(1, "\u200b", "ZERO WIDTH SPACE", ""),)),
        ("\u2014\u2014", (Culprit(0, "\u2014", "EM DASH", "-"), Culprit(1, "\u2014", "EM DASH", "-"))),
        (f"hi {EMOJI}", (Culprit(3, EMOJI, "GRINNING FACE", None),)),
        ("ça", (Culprit(0, "ç", "LATIN SMALL LETTER C WITH CEDILLA", None),)),
        ("\ud83d", (Culprit(0, "\ud83d", "U+D83D", None),)),  # no Unicode name: its code point
    ],
)
def test_ucs2_culprits(body: str, expected: tuple[Culprit, ...]) -> None:
    """Each character that forces UCS-2, every occurrence, with its index and its look-alike (None: none)."""
    assert ucs2_culprits(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("It\u2019s \u2018fine\u2019", "It's 'fine'"),
        ("\u201cQuote\u201d \u00abguillemets\u00bb", '"Quote" "guillemets"'),
        ("a\u2013b\u2014c\u2212d \u2022 e", "a-b-c-d - e"),
        ("wait\u2026", "wait..."),
        ("1\u00a0000\u2009km\u202fok\u3000x\ty", "1 000 km ok x y"),
        ("in\u200bvis\u2060ible\ufeff soft\u00adhyphen", "invisible softhyphen"),
        ("\uff21\uff22\uff23\uff11\uff12\uff01\uff5e\uff40", "ABC12!~'"),
        ("\u00bd \u00bc \u00be \u2044 \u00f7", "1/2 1/4 3/4 / /"),
        ("\u2039a\u203a \u203c", "<a> !!"),
        ("line\u2028next", "line\nnext"),
        ("5 \u2126", "5 \u03a9"),
        # Kept: letters with no GSM-7 twin, emoji and the joiner inside an emoji sequence.
        ("caf\u00e1 \u00e7a", "caf\u00e1 \u00e7a"),
        (f"{EMOJI}\u200d{EMOJI}", f"{EMOJI}\u200d{EMOJI}"),
        ("already GSM-7 {ok} \u20ac5", "already GSM-7 {ok} \u20ac5"),
    ],
)
def test_smart_encode(body: str, expected: str) -> None:
    """Look-alikes become their GSM-7 twins; what has no twin is left alone."""
    assert smart_encode(body) == expected


def test_smart_encoding_maps_only_ucs2_characters_to_gsm7() -> None:
    """Every character replaced forces UCS-2, and every replacement is GSM-7: replacing never breaks a GSM-7 body."""
    assert len(SMART_ENCODING) > 100
    assert all(encoding(chr(code)) == "UCS-2" for code in SMART_ENCODING)
    assert all(encoding(twin) == "GSM-7" for twin in SMART_ENCODING.values())


def test_smart_encoding_halves_the_cost_of_a_pasted_message() -> None:
    """A 150-character notice with curly quotes and an en dash: 3 UCS-2 segments, 1 GSM-7 segment once replaced."""
    body = ("Your order \u201cA-12\u201d ships today \u2013 it\u2019ll arrive soon. " * 3)[:150]
    assert (segments(body).encoding, segments(body).segments) == ("UCS-2", 3)
    assert segments(smart_encode(body)) == Segments("GSM-7", 1, 150, 160)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("all GSM-7 {here}", None),
        (
            "a" * 98 + "\u2019s",
            "'\u2019' (RIGHT SINGLE QUOTATION MARK) at 98, use \"'\" forces UCS-2: 2 UCS-2 segments; "
            "with look-alikes replaced (smart_encode): 1 GSM-7 segment",
        ),
        (
            "\u2018a\u2019 \u2013 b\u2026c \u00a0d",
            "'\u2018' (LEFT SINGLE QUOTATION MARK) at 0, use \"'\"; '\u2019' (RIGHT SINGLE QUOTATION MARK) at 2, "
            "use \"'\"; '\u2013' (EN DASH) at 4, use '-'; 2 more force UCS-2: 1 UCS-2 segment",
        ),  # no saving: 1 segment either way, so no suggestion
        (f"{EMOJI} hello", f"'{EMOJI}' (GRINNING FACE) at 0 forces UCS-2: 1 UCS-2 segment"),
        ("\u2026" * 70, "'\u2026' (HORIZONTAL ELLIPSIS) at 0, use '...' forces UCS-2: 1 UCS-2 segment"),  # 210 units
    ],
)
def test_advice(body: str, expected: str | None) -> None:
    """One sentence naming the distinct culprits, suggesting smart_encode only when it saves segments."""
    assert advice(body) == expected


@pytest.mark.parametrize("call", [encoding, segments, ucs2_culprits, smart_encode, advice])
@pytest.mark.parametrize("bad", [None, b"bytes", 160, ["a"]])
def test_a_body_that_is_not_a_str_is_a_typed_error(call: object, bad: object) -> None:
    """bytes, None or a number: InvalidArgumentType (a GatekeeperError and a TypeError) naming the type."""
    assert callable(call)
    with pytest.raises(InvalidArgumentType, match=type(bad).__name__) as raised:
        call(bad)
    assert isinstance(raised.value, GatekeeperError) and isinstance(raised.value, TypeError)


def test_results_are_frozen() -> None:
    """Segments and Culprit are values: a budget rule cannot change one it was handed."""
    counted, culprit = segments("hi"), ucs2_culprits("\u2019")[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        counted.segments = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        culprit.index = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        SMART_ENCODING[0x2019] = "x"  # type: ignore[index]
