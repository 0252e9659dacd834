"""Step 1, normalize: local verdicts, never a crash, E.164 round-trips, masking."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.errors import InvalidNumber
from gatekeeper.phone import digest, mask, normalize, sender_scope, to_e164


@pytest.mark.parametrize(
    ("raw", "country", "e164", "region"),
    [
        ("(415) 555-2671", "US", "+14155552671", "US"),
        ("415.555.2671", "us", "+14155552671", "US"),
        ("+1 415 555 2671", None, "+14155552671", "US"),
        ("  +14155552671  ", "GB", "+14155552671", "US"),
        ("07400 123456", "GB", "+447400123456", "GB"),
        ("+447911123456", "US", "+447911123456", "GG"),
        ("1-800-FLOWERS", "US", "+18003569377", "US"),
    ],
)
def test_valid_numbers_normalize_to_e164(raw: str, country: str | None, e164: str, region: str) -> None:
    """National and international formats, with or without a hint, give E.164 and the number's own region."""
    phone = normalize(raw, country)
    assert phone.ok
    assert (phone.e164, phone.region, phone.kind) == (e164, region, "e164")


@pytest.mark.parametrize(
    ("raw", "problem", "kind"),
    [
        ("", "not_a_number", "invalid"),
        ("   ", "not_a_number", "invalid"),
        ("hello world!", "not_a_number", "invalid"),
        ("+1415", "impossible", "invalid"),
        ("+1 415 555 26711", "impossible", "invalid"),
        ("+15555551234", "invalid", "invalid"),
        ("12345", "short_code", "short_code"),
        ("898211", "short_code", "short_code"),
        ("ACME", "alphanumeric", "alphanumeric"),
        ("Gatekeeper", "alphanumeric", "alphanumeric"),
        ("9" * 200, "not_a_number", "invalid"),
    ],
)
def test_unreachable_inputs_name_their_problem(raw: str, problem: str, kind: str) -> None:
    """Short codes, sender IDs, impossible and invalid numbers are recognised, not raised."""
    phone = normalize(raw, "US")
    assert not phone.ok
    assert (phone.problem, phone.kind) == (problem, kind)


def test_local_line_type_only_when_unambiguous() -> None:
    """The parse alone knows a UK mobile; a North American number stays unknown until Lookup."""
    assert normalize("+447911123456").local_line_type == "mobile"
    assert normalize("+18005550199").local_line_type == "tollFree"
    assert normalize("+14155552671").local_line_type is None


def test_repeated_numbers_are_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bounded cache answers a repeated number without calling phonenumbers."""
    normalize("+14155550177", "US")
    calls = []
    monkeypatch.setattr(phonenumbers, "parse", lambda *a, **k: calls.append(a))
    assert normalize("+14155550177", "US").e164 == "+14155550177"
    assert calls == []


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_no_input_string_crashes_the_normalizer(raw: str) -> None:
    """Any string gives a Phone: either a reachable E.164 number or a named problem."""
    phone = normalize(raw, "US")
    assert phone.ok or phone.problem is not None
    if phone.ok:
        assert phone.e164 is not None and phone.e164.startswith("+")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["US", "GB", "DE", "FR", "IN", "BR", "JP", "AU", "MX", "ZA"]), st.data())
def test_e164_round_trips(region: str, data: st.DataObject) -> None:
    """A valid number in E.164 or national format normalizes to the same E.164, which normalizes to itself."""
    example = phonenumbers.example_number_for_type(region, data.draw(st.sampled_from([0, 1])))
    if example is None:
        return
    e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
    assert normalize(e164).e164 == e164
    assert normalize(national, region).e164 == e164
    assert normalize(normalize(national, region).e164 or "").e164 == e164


def test_non_string_input_is_a_problem_not_a_crash() -> None:
    """None or a number object is refused with a problem, not a TypeError."""
    assert normalize(None).problem == "not_a_number"
    assert normalize(14155552671).problem == "not_a_number"


def test_to_e164_raises_a_typed_error_that_hides_the_number() -> None:
    """to_e164 raises InvalidNumber (also a ValueError) with the reason, and never echoes the digits."""
    with pytest.raises(InvalidNumber) as info:
        to_e164("+15555551234")
    assert info.value.reason == "invalid"
    assert isinstance(info.value, ValueError)
    assert "5555551234" not in str(info.value)


def test_mask_and_digest() -> None:
    """Masks hide the last four digits; digests are stable, keyed and never the number itself."""
    assert mask("+14155552671") == "+1415555****"
    assert mask(None) == "<none>"
    assert mask("+123") == "****"
    assert digest("+14155552671") == digest("+14155552671")
    assert digest("+14155552671", b"k1") != digest("+14155552671", b"k2")
    assert "4155552671" not in digest("+14155552671")


def test_sender_scopes() -> None:
    """Senders may be numbers, short codes, alphanumeric IDs or Messaging Service SIDs."""
    assert sender_scope("(500) 555-0006", "US") == "+15005550006"
    assert sender_scope("MG" + "a" * 32) == "MG" + "a" * 32
    assert sender_scope("898211") == "898211"
    assert sender_scope("ACME") == "ACME"
    with pytest.raises(InvalidNumber):
        sender_scope("not a sender at all")
