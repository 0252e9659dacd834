"""The fixture book: fixtures, Twilio's magic numbers, stable derived profiles, overrides."""

from __future__ import annotations

from collections import Counter

import pytest

from gatekeeper.sandbox.numbers import FIXTURES, LINE_TYPES, NumberBook, looks_like_e164, mask


@pytest.mark.parametrize(
    ("number", "line_type", "country"),
    [
        ("+14155550100", "mobile", "US"),
        ("+14155550101", "landline", "US"),
        ("+14155550102", "nonFixedVoip", "US"),
        ("+14155550103", "fixedVoip", "US"),
        ("+18005550199", "tollFree", "US"),
        ("+447911123456", "mobile", "GG"),
        ("+14155550104", "mobile", "US"),
    ],
)
def test_house_fixtures(number: str, line_type: str, country: str) -> None:
    """Each house fixture has its documented line type and country, and is valid."""
    profile = NumberBook().profile(number)
    assert (profile.valid, profile.line_type, profile.country_code) == (True, line_type, country)


def test_suppression_fixture_ends_undelivered_30003() -> None:
    """+14155550104 accepts messages that end undelivered with 30003."""
    profile = NumberBook().profile("+14155550104")
    assert (profile.create_error, profile.delivery, profile.delivery_error_code) == (
        None,
        "undelivered",
        30003,
    )


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("+15005550001", 21211),
        ("+15005550002", 21612),
        ("+15005550003", 21408),
        ("+15005550004", 21610),
        ("+15005550009", 21614),
    ],
)
def test_magic_to_numbers_fail_at_create(number: str, code: int) -> None:
    """Twilio's test "To" numbers carry the create error Twilio's test credentials answer."""
    assert NumberBook().profile(number).create_error == code


def test_magic_sender_is_a_valid_mobile() -> None:
    """+15005550006 is a valid mobile with no create error."""
    profile = NumberBook().profile("+15005550006")
    assert (profile.valid, profile.line_type, profile.create_error) == (True, "mobile", None)


def test_derived_profiles_are_stable_across_books() -> None:
    """An unknown valid number answers the same in two independent books."""
    first, second = NumberBook().profile("+14155551234"), NumberBook().profile("+14155551234")
    assert first == second
    assert first.valid
    assert first.line_type in LINE_TYPES
    assert first.carrier_name


def test_derived_line_types_follow_a_weighted_table() -> None:
    """Across many NANP numbers the derived types vary, mobile being the most common."""
    book = NumberBook()
    counts = Counter(book.profile(f"+1212555{n:04d}").line_type for n in range(2000, 2400))
    assert counts.most_common(1)[0][0] == "mobile"
    assert {"mobile", "landline"} <= set(counts)


def test_phonenumbers_type_wins_when_definite() -> None:
    """A number phonenumbers knows as mobile (GB 07...) is derived as mobile with a UK MCC."""
    profile = NumberBook().profile("+447400123456")
    assert profile.line_type == "mobile"
    assert profile.mcc == "234"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("+1415555", "TOO_SHORT"),
        ("+141599299600", "TOO_LONG"),
        ("not a number", "NOT_A_NUMBER"),
        ("+999123456", "INVALID_COUNTRY_CODE"),
        ("+10000000000", "INVALID_BUT_POSSIBLE"),
    ],
)
def test_invalid_numbers_carry_lookup_reasons(raw: str, reason: str) -> None:
    """Invalid input is a profile with valid=False and Lookup's validation error."""
    profile = NumberBook().profile(raw)
    assert (profile.valid, profile.validation_errors) == (False, (reason,))


def test_national_format_uses_the_country() -> None:
    """National input is read with the given country (default US)."""
    book = NumberBook()
    assert book.profile("(415) 555-0100").e164 == "+14155550100"
    assert book.profile("07911 123456", "GB").e164 == "+447911123456"


def test_overrides_change_and_add_numbers() -> None:
    """Overrides lay partial fields over a fixture, or invent a number."""
    book = NumberBook({"+14155550100": {"line_type": "landline"}})
    book.override({"+15551230000": {"line_type": "pager", "carrier_name": "Beep"}})
    assert book.profile("+14155550100").line_type == "landline"
    assert book.profile("+14155550100").carrier_name == FIXTURES["+14155550100"].carrier_name
    invented = book.profile("+15551230000")
    assert (invented.valid, invented.line_type, invented.carrier_name) == (True, "pager", "Beep")


def test_override_to_invalid_gets_a_reason() -> None:
    """Overriding valid=False without reasons still yields a validation error."""
    book = NumberBook({"+14155550100": {"valid": False}})
    assert book.profile("+14155550100").validation_errors == ("INVALID_BUT_POSSIBLE",)


@pytest.mark.parametrize(
    "bad",
    [
        {"+14155550100": {"colour": "red"}},
        {"+14155550100": {"line_type": "cellular"}},
        {"4155550100": {"valid": True}},
        {"+14155550100": {"sms_pumping_risk_score": 101}},
        {"+14155550100": {"delivery": "lost"}},
    ],
)
def test_bad_overrides_are_refused(bad: dict[str, dict[str, object]]) -> None:
    """Unknown fields, bad values and non-E.164 keys raise ValueError."""
    with pytest.raises(ValueError, match=r"."):
        NumberBook(bad)


def test_mask_hides_the_last_four() -> None:
    """Numbers lose their last four digits; emails their local part."""
    assert mask("+14155550100") == "+1415555****"
    assert mask("someone@example.com") == "s***@example.com"
    assert looks_like_e164("+14155550100")
    assert not looks_like_e164("4155550100")


def test_non_phone_text_is_never_keyed_as_a_number() -> None:
    """An email keeps its own text as key and is not a number; phone-shaped junk becomes +digits."""
    book = NumberBook()
    email = book.profile("user1@example.com")
    assert (email.e164, email.validation_errors) == ("user1@example.com", ("NOT_A_NUMBER",))
    assert book.profile("+1 415 555").e164 == "+1415555"
