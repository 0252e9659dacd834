"""Lookup v2 through the real twilio SDK over HTTP."""

from __future__ import annotations

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gatekeeper.models import LOOKUP_PACKAGES
from gatekeeper.sandbox import Sandbox

PACKAGES = LOOKUP_PACKAGES


def _lookup(client: Client, number: str, **kwargs: str) -> dict[str, object]:
    result = client.lookups.v2.phone_numbers(number).fetch(**kwargs)
    return {
        key: getattr(result, key)
        for key in (
            "phone_number",
            "valid",
            "validation_errors",
            "country_code",
            "calling_country_code",
            "national_format",
            *PACKAGES,
        )
    }


@pytest.mark.parametrize(
    ("number", "line_type", "carrier"),
    [
        ("+14155550100", "mobile", "T-Mobile USA, Inc."),
        ("+14155550101", "landline", "Pacific Bell"),
        ("+14155550102", "nonFixedVoip", "Twilio - SMS/MMS-SVR"),
        ("+14155550103", "fixedVoip", "Comcast Phone"),
        ("+18005550199", "tollFree", None),
    ],
)
def test_line_type_intelligence_for_fixtures(client: Client, number: str, line_type: str, carrier: str | None) -> None:
    """Line Type Intelligence reports each fixture's type and carrier (null carrier for toll-free)."""
    result = _lookup(client, number, fields="line_type_intelligence")
    lti = result["line_type_intelligence"]
    assert isinstance(lti, dict)
    assert (lti["type"], lti["carrier_name"], lti["error_code"]) == (line_type, carrier, None)
    assert result["valid"] is True
    assert result["country_code"] == "US"


def test_guernsey_mobile(client: Client) -> None:
    """+447911123456 is a GG mobile with calling code 44 and a Guernsey carrier MCC/MNC."""
    result = _lookup(client, "+447911123456", fields="line_type_intelligence")
    lti = result["line_type_intelligence"]
    assert isinstance(lti, dict)
    assert (result["country_code"], result["calling_country_code"]) == ("GG", "44")
    assert (lti["type"], lti["mobile_country_code"], lti["mobile_network_code"]) == ("mobile", "234", "55")


def test_basic_lookup_leaves_every_package_null(client: Client) -> None:
    """Without Fields only formatting and validation come back; every package is null."""
    result = _lookup(client, "+14155550100")
    assert result["valid"] is True
    assert result["national_format"] == "(415) 555-0100"
    assert all(result[p] is None for p in PACKAGES)


def test_every_package_can_be_requested(client: Client) -> None:
    """All eleven Fields values are accepted and each requested package is an object."""
    result = _lookup(client, "+14155550100", fields="validation," + ",".join(PACKAGES))
    assert all(isinstance(result[p], dict) for p in PACKAGES)
    assert result["caller_name"] == {
        "caller_name": "ALEX SANDBOX",
        "caller_type": "CONSUMER",
        "error_code": None,
    }


def test_sms_pumping_risk_package(client: Client) -> None:
    """The pumping-risk fixture scores high; the plain mobile scores low."""
    risky = _lookup(client, "+14155550107", fields="sms_pumping_risk")["sms_pumping_risk"]
    calm = _lookup(client, "+14155550100", fields="sms_pumping_risk")["sms_pumping_risk"]
    assert isinstance(risky, dict)
    assert isinstance(calm, dict)
    assert (risky["carrier_risk_category"], risky["sms_pumping_risk_score"]) == ("high", 92)
    assert calm["carrier_risk_category"] == "low"
    assert calm["number_blocked"] is False


@pytest.mark.parametrize(
    ("number", "reason"),
    [("+1415555", "TOO_SHORT"), ("+141599299600", "TOO_LONG"), ("+15005550001", "INVALID_BUT_POSSIBLE")],
)
def test_invalid_numbers_answer_200_valid_false(client: Client, number: str, reason: str) -> None:
    """Invalid numbers are HTTP 200 with valid=false, a reason, and null packages even when asked."""
    result = _lookup(client, number, fields="line_type_intelligence")
    assert (result["valid"], result["validation_errors"]) == (False, [reason])
    assert result["line_type_intelligence"] is None
    assert result["country_code"] is None


def test_national_format_with_country_code(client: Client, sandbox: Sandbox) -> None:
    """A national-format number is read with CountryCode and counted under its E.164 form."""
    result = _lookup(client, "07911123456", country_code="GB", fields="line_type_intelligence")
    assert result["phone_number"] == "+447911123456"
    assert sandbox.lookup_count("+447911123456") == 1


def test_unknown_field_is_a_400_60200(client: Client) -> None:
    """An unknown Fields value answers HTTP 400 with code 60200."""
    with pytest.raises(TwilioRestException) as caught:
        client.lookups.v2.phone_numbers("+14155550100").fetch(fields="line_type_intelligence,horoscope")
    assert (caught.value.status, caught.value.code) == (400, 60200)


def test_bad_country_code_is_a_400(client: Client) -> None:
    """A CountryCode that is not two letters answers HTTP 400 with code 60200."""
    with pytest.raises(TwilioRestException) as caught:
        client.lookups.v2.phone_numbers("4155550100").fetch(country_code="USA")
    assert (caught.value.status, caught.value.code) == (400, 60200)


def test_unknown_numbers_answer_the_same_twice(client: Client, sandbox: Sandbox) -> None:
    """A number outside the fixtures gets identical answers on repeated Lookups."""
    first = _lookup(client, "+13125550142", fields="line_type_intelligence,caller_name,sms_pumping_risk")
    second = _lookup(client, "+13125550142", fields="line_type_intelligence,caller_name,sms_pumping_risk")
    assert first == second
    assert first["valid"] is True
    assert sandbox.lookup_count("+13125550142") == 2


def test_exactly_one_lookup_is_counted(client: Client, sandbox: Sandbox) -> None:
    """One fetch is one counted Lookup request for that number, and no other number is counted."""
    client.lookups.v2.phone_numbers("+14155550100").fetch(fields="line_type_intelligence")
    assert sandbox.lookup_count("+14155550100") == 1
    assert sandbox.lookup_counts() == {"+14155550100": 1}
    (recorded,) = sandbox.requests("lookup")
    assert recorded.query == {"Fields": ["line_type_intelligence"]}
    assert recorded.status == 200


def test_overrides_change_the_answer(client: Client, sandbox: Sandbox) -> None:
    """A number override from the control API shows up in the next Lookup."""
    sandbox.override_numbers({"+14155550100": {"line_type": "landline", "carrier_name": "Override Telco"}})
    lti = _lookup(client, "+14155550100", fields="line_type_intelligence")["line_type_intelligence"]
    assert isinstance(lti, dict)
    assert (lti["type"], lti["carrier_name"]) == ("landline", "Override Telco")


def test_caller_name_outside_north_america_has_an_error_code(client: Client) -> None:
    """CNAM for a GG number answers null names with error 60607 (country unsupported)."""
    cnam = _lookup(client, "+447911123456", fields="caller_name")["caller_name"]
    assert cnam == {"caller_name": None, "caller_type": None, "error_code": 60607}
