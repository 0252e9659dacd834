"""No input crashes a handler: arbitrary signed form fields get 200/204/400/413/503, never a 500."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import (
    ALICE,
    BASE,
    OUR_NUMBER,
    PREFIX,
    SERVICE_SID,
    call_status,
    inbound,
    make_app,
    make_gate,
    message_status,
    sid,
    sign,
)

ALLOWED = {200, 204, 400, 413, 503}
ROUTES = ["/messages/inbound", "/messages/status", "/calls/status", "/verify/events"]
KNOWN_FIELDS = [
    "MessageSid",
    "SmsSid",
    "SmsMessageSid",
    "CallSid",
    "From",
    "To",
    "Body",
    "MessageStatus",
    "SmsStatus",
    "CallStatus",
    "ErrorCode",
    "SequenceNumber",
    "OptOutType",
    "MessagingServiceSid",
    "uuid",
    "type",
]
PLAUSIBLE = [
    ALICE,
    OUR_NUMBER,
    f"whatsapp:{ALICE}",
    "client:alice",
    "STOP",
    "start",
    "HELP",
    "stop texting me",
    "STOPALL",
    "delivered",
    "failed",
    "no-answer",
    "30003",
    "21610",
    "-1",
    "99999999999999999999",
    sid("SM"),
    sid("CA"),
    SERVICE_SID,
    "",
]

# One app for every example: a fresh one per example would only be slower. Small body limit so 413 happens too.
GATE = make_gate(max_body_bytes=2048, opt_out_scope="sender")
CLIENT = make_app(GATE).test_client()

# Valid payloads per route, which the test then mutates, so the handlers' deeper paths are reached too.
BASES = {
    "/messages/inbound": [inbound("STOP"), inbound("hello", MessagingServiceSid=SERVICE_SID), inbound("START")],
    "/messages/status": [message_status("delivered"), message_status("failed", error=30003)],
    "/calls/status": [call_status("completed"), call_status("failed", ErrorCode="21610")],
    "/verify/events": [{"uuid": "ev-1", "type": "verification.approved"}],
}

values = st.one_of(st.text(max_size=60), st.sampled_from(PLAUSIBLE))
names = st.one_of(st.sampled_from(KNOWN_FIELDS), st.text(min_size=1, max_size=20))
fields = st.lists(st.tuples(names, values), max_size=14)
headers = st.dictionaries(
    st.sampled_from(["I-Twilio-Idempotency-Token", "X-Forwarded-Proto", "X-Forwarded-Host"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30),
    max_size=2,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    """A route and its fields: a valid payload with fields dropped, replaced and added at random."""
    route = draw(st.sampled_from(ROUTES))
    bases = BASES[route]
    base = dict(bases[draw(st.integers(0, len(bases) - 1))])
    for name in draw(st.sets(st.sampled_from(KNOWN_FIELDS), max_size=3)):
        base.pop(name, None)
    base.update(draw(st.dictionaries(st.sampled_from(KNOWN_FIELDS), values, max_size=3)))
    items = [*base.items(), *draw(fields)]
    padding = draw(st.integers(0, 3000))
    if padding > 2000:  # sometimes over max_body_bytes
        items.append(("Padding", "x" * padding))
    return route, items


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(), extra_headers=headers)
def test_signed_arbitrary_fields_never_500(
    request: tuple[str, list[tuple[str, str]]], extra_headers: dict[str, str]
) -> None:
    """Valid payloads mutated with arbitrary text and keys, correctly signed: never a 5xx other than 503."""
    route, items = request
    url = f"{BASE}{PREFIX}{route}"
    body = urlencode(items).encode()
    response = CLIENT.post(
        PREFIX + route,
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers={**extra_headers, "X-Twilio-Signature": sign(url, items)},
    )
    assert response.status_code in ALLOWED, (response.status_code, response.get_data(as_text=True)[:200])
