"""POST /messages/inbound: consent changes, scopes, replies, hooks, duplicates, suppression lifting."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import Replies
from gatekeeper.stores.base import ACCOUNT_SCOPE

from .helpers import (
    ALICE,
    BOB,
    OTHER_NUMBER,
    OUR_NUMBER,
    SERVICE_SID,
    FakeClock,
    Recorder,
    inbound,
    make_app,
    make_gate,
    post,
    sid,
)

PATH = "/messages/inbound"
REPLIES = Replies()
EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response />'


def _reply(text: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{text}</Message></Response>'


def test_stop_opts_out_and_replies(client: FlaskClient, gate: Gatekeeper, clock: FakeClock) -> None:
    """STOP records an account-wide opt-out with time and source, and answers with the STOP reply."""
    response = post(client, PATH, inbound("STOP"))
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert response.get_data(as_text=True) == _reply(REPLIES.stop)
    assert gate.is_opted_out(ALICE)
    [change] = gate.stores.opt_outs.consent_history(ALICE)
    assert (change.scope, change.opted_out, change.at) == (ACCOUNT_SCOPE, True, clock.now)
    assert change.source == f"webhook:STOP:{sid('SM', 1)}"


def test_start_opts_back_in(client: FlaskClient, gate: Gatekeeper) -> None:
    """START lifts the opt-out and answers with the START reply; both changes are in the history."""
    post(client, PATH, inbound("STOP", n=1))
    response = post(client, PATH, inbound("start", n=2))
    assert response.get_data(as_text=True) == _reply(REPLIES.start)
    assert not gate.is_opted_out(ALICE)
    assert [c.opted_out for c in gate.stores.opt_outs.consent_history(ALICE)] == [False, True]


def test_help_replies_without_consent_change(client: FlaskClient, gate: Gatekeeper, recorder: Recorder) -> None:
    """HELP answers with the HELP reply and changes no consent."""
    response = post(client, PATH, inbound("HELP"))
    assert response.get_data(as_text=True) == _reply(REPLIES.help)
    assert gate.stores.opt_outs.consent_history(ALICE) == []
    assert recorder.consent == []


def test_plain_words_revocation_opts_out_with_stop_reply(client: FlaskClient, gate: Gatekeeper) -> None:
    """ "Please stop texting me" is an opt-out, answered with the STOP reply."""
    response = post(client, PATH, inbound("Please stop texting me"))
    assert response.get_data(as_text=True) == _reply(REPLIES.stop)
    assert gate.is_opted_out(ALICE)
    assert gate.stores.opt_outs.consent_history(ALICE)[0].source.startswith("webhook:phrase:")


def test_other_message_gets_empty_response(client: FlaskClient, gate: Gatekeeper, recorder: Recorder) -> None:
    """An ordinary message gets an empty <Response/> and still reaches on_inbound."""
    response = post(client, PATH, inbound("What time do you open?"))
    assert response.get_data(as_text=True) == EMPTY
    assert not gate.is_opted_out(ALICE)
    [event] = recorder.inbound
    assert (event.body, event.intent.value, event.from_number) == ("What time do you open?", "none", ALICE)


def test_custom_reply_texts_are_escaped(clock: FakeClock) -> None:
    """Configured replies are used, XML-escaped by TwiML."""
    gate = make_gate(clock=clock, replies={"stop": "Bye & thanks <3"})
    client = make_app(gate).test_client()
    assert post(client, PATH, inbound("STOP")).get_data(as_text=True) == _reply("Bye &amp; thanks &lt;3")


def test_advanced_opt_out_keywords_get_empty_response(clock: FakeClock) -> None:
    """With advanced_opt_out, Twilio replies to keywords itself; plain words still get our STOP reply."""
    gate = make_gate(clock=clock, advanced_opt_out=True)
    client = make_app(gate).test_client()
    assert post(client, PATH, inbound("STOP", n=1)).get_data(as_text=True) == EMPTY
    assert gate.is_opted_out(ALICE)
    assert post(client, PATH, inbound("HELP", n=2)).get_data(as_text=True) == EMPTY
    phrase = post(client, PATH, inbound("stop texting me", frm=BOB, n=3))
    assert phrase.get_data(as_text=True) == _reply(REPLIES.stop)
    assert gate.is_opted_out(BOB)


def test_opt_out_type_wins_and_twilio_replies(client: FlaskClient, gate: Gatekeeper) -> None:
    """OptOutType=STOP opts out even for a keyword we do not know, and we do not reply twice."""
    response = post(client, PATH, inbound("ARRET", OptOutType="STOP", MessagingServiceSid=SERVICE_SID))
    assert response.get_data(as_text=True) == EMPTY
    assert gate.is_opted_out(ALICE)
    assert gate.stores.opt_outs.consent_history(ALICE)[0].source.startswith("webhook:STOP:")


def test_extra_keywords_from_settings(clock: FakeClock) -> None:
    """[webhooks] keywords add per-language keywords."""
    gate = make_gate(clock=clock, keywords={"stop": ["ARRÊT"], "start": ["COMMENCER"]})
    client = make_app(gate).test_client()
    post(client, PATH, inbound("arrêt", n=1))
    assert gate.is_opted_out(ALICE)
    post(client, PATH, inbound("Commencer", n=2))
    assert not gate.is_opted_out(ALICE)


def test_consent_phrases_off(clock: FakeClock) -> None:
    """With consent_phrases = false, plain words change nothing."""
    gate = make_gate(clock=clock, consent_phrases=False)
    client = make_app(gate).test_client()
    assert post(client, PATH, inbound("stop texting me")).get_data(as_text=True) == EMPTY
    assert not gate.is_opted_out(ALICE)


# -- scope --------------------------------------------------------------------------------
def test_sender_scope_uses_the_to_number(clock: FakeClock) -> None:
    """With opt_out_scope = "sender", STOP blocks only the number it was sent to."""
    gate = make_gate(clock=clock, opt_out_scope="sender")
    client = make_app(gate).test_client()
    post(client, PATH, inbound("STOP", to=OUR_NUMBER))
    assert gate.is_opted_out(ALICE, sender=OUR_NUMBER)
    assert not gate.is_opted_out(ALICE, sender=OTHER_NUMBER)
    assert gate.decide(ALICE, sender=OUR_NUMBER).twilio_code == 21610
    assert not gate.decide(ALICE, sender=OTHER_NUMBER).refused


def test_sender_scope_prefers_messaging_service(clock: FakeClock) -> None:
    """A message to a Messaging Service opts out of the whole service."""
    gate = make_gate(clock=clock, opt_out_scope="sender")
    client = make_app(gate).test_client()
    post(client, PATH, inbound("STOP", MessagingServiceSid=SERVICE_SID))
    assert gate.is_opted_out(ALICE, sender=SERVICE_SID)
    assert not gate.is_opted_out(ALICE, sender=OUR_NUMBER)


def test_stopall_is_account_wide_in_sender_mode(clock: FakeClock) -> None:
    """STOPALL opts out of every sender even with opt_out_scope = "sender"."""
    gate = make_gate(clock=clock, opt_out_scope="sender")
    client = make_app(gate).test_client()
    post(client, PATH, inbound("STOPALL", to=OUR_NUMBER))
    assert gate.is_opted_out(ALICE, sender=OTHER_NUMBER)
    assert gate.stores.opt_outs.consent_history(ALICE)[0].scope == ACCOUNT_SCOPE


def test_start_lifts_only_the_matching_sender(clock: FakeClock) -> None:
    """In sender mode START to one number lifts that sender's opt-out, not another's."""
    gate = make_gate(clock=clock, opt_out_scope="sender")
    client = make_app(gate).test_client()
    post(client, PATH, inbound("STOP", to=OUR_NUMBER, n=1))
    post(client, PATH, inbound("STOP", to=OTHER_NUMBER, n=2))
    post(client, PATH, inbound("START", to=OUR_NUMBER, n=3))
    assert not gate.is_opted_out(ALICE, sender=OUR_NUMBER)
    assert gate.is_opted_out(ALICE, sender=OTHER_NUMBER)


def test_a_whatsapp_stop_opts_the_number_out_of_whatsapp_only() -> None:
    """A STOP on WhatsApp is kept for the number behind the address, on that channel: SMS still reaches it."""
    gate = make_gate()
    client = make_app(gate).test_client()
    post(client, PATH, inbound("STOP", frm=f"whatsapp:{ALICE}", to=f"whatsapp:{OUR_NUMBER}"))
    assert gate.is_opted_out(f"whatsapp:{ALICE}")
    assert not gate.is_opted_out(ALICE)
    assert [c.scope for c in gate.stores.opt_outs.consent_history(ALICE)] == ["channel:whatsapp"]


def test_a_whatsapp_stop_can_silence_every_channel() -> None:
    """With channel_opt_outs = "account", a WhatsApp STOP opts the number out everywhere."""
    gate = make_gate(channel_opt_outs="account")
    client = make_app(gate).test_client()
    post(client, PATH, inbound("STOP", frm=f"whatsapp:{ALICE}", to=f"whatsapp:{OUR_NUMBER}"))
    assert gate.is_opted_out(ALICE) and gate.is_opted_out(f"whatsapp:{ALICE}")


def test_a_messenger_stop_is_kept_under_the_address() -> None:
    """A channel without numbers keeps consent under the address itself."""
    gate = make_gate()
    client = make_app(gate).test_client()
    assert post(client, PATH, inbound("STOP", frm="messenger:4242", to="messenger:1010")).status_code == 200
    assert gate.is_opted_out("messenger:4242")


# -- hooks, duplicates, suppression ----------------------------------------------------------
def test_hooks_called_once_per_unique_message(client: FlaskClient, gate: Gatekeeper, recorder: Recorder) -> None:
    """A redelivered STOP gets the same reply but no second store write or hook call."""
    first = post(client, PATH, inbound("STOP"))
    again = post(client, PATH, inbound("STOP"))
    assert first.get_data() == again.get_data()
    assert again.status_code == 200
    assert len(recorder.inbound) == 1
    [change] = recorder.consent
    assert (change.e164, change.opted_out, change.changed, change.scope) == (ALICE, True, True, ACCOUNT_SCOPE)
    assert len(gate.stores.opt_outs.consent_history(ALICE)) == 1


def test_hooks_see_the_stored_state(gate: Gatekeeper) -> None:
    """Hooks run after the store write: the opt-out is already visible inside on_consent."""
    seen: list[bool] = []
    rec = Recorder()
    rec.on_consent = lambda event: seen.append(gate.is_opted_out(event.e164))  # type: ignore[method-assign]
    client = make_app(gate, rec).test_client()
    post(client, PATH, inbound("STOP"))
    assert seen == [True]


def test_hook_exception_is_logged_not_a_5xx(gate: Gatekeeper, caplog: pytest.LogCaptureFixture) -> None:
    """A failing hook is logged; the answer is still 200 and the event is stored, not redelivered."""

    def boom(event: object) -> None:
        raise RuntimeError("hook bug")

    rec = Recorder()
    rec.on_inbound = boom  # type: ignore[method-assign]
    rec.on_consent = boom  # type: ignore[method-assign]
    client = make_app(gate, rec).test_client()
    response = post(client, PATH, inbound("STOP"))
    assert response.status_code == 200
    assert gate.is_opted_out(ALICE)
    assert "on_inbound hook raised RuntimeError" in caplog.text
    assert "on_consent hook raised RuntimeError" in caplog.text
    assert ALICE not in caplog.text


def test_any_inbound_lifts_delivery_suppression(client: FlaskClient, gate: Gatekeeper, clock: FakeClock) -> None:
    """A message from a suppressed number shows it is reachable: the suppression is lifted."""
    gate.stores.failures.suppress(ALICE, ttl_seconds=3600, reason="test", at=clock.now)
    assert gate.decide(ALICE).refused
    post(client, PATH, inbound("thanks!"))
    assert not gate.decide(ALICE).refused


def test_missing_from_is_400(client: FlaskClient) -> None:
    """A message without From is refused with a clear message."""
    fields = inbound("STOP")
    del fields["From"]
    response = post(client, PATH, fields)
    assert response.status_code == 400
    assert "From is required" in response.get_data(as_text=True)


def test_from_not_a_number_is_400(client: FlaskClient) -> None:
    """A From that is not a phone number is refused."""
    response = post(client, PATH, inbound("STOP", frm="not a number"))
    assert response.status_code == 400
    assert "From is not a phone number" in response.get_data(as_text=True)


def test_missing_message_sid_is_400(client: FlaskClient) -> None:
    """A message without a MessageSid cannot be deduplicated, so it is refused."""
    fields = {k: v for k, v in inbound("STOP").items() if not k.endswith("Sid") or k == "AccountSid"}
    assert post(client, PATH, fields).status_code == 400


# -- end to end with the gate ----------------------------------------------------------------
def test_stop_blocks_notify_but_not_mfa(client: FlaskClient, gate: Gatekeeper) -> None:
    """After STOP via the webhook, notify is refused 21610; mfa is not (opt_out_blocks_mfa is off)."""
    assert not gate.decide(ALICE).refused
    assert post(client, PATH, inbound("STOP")).status_code == 200
    notify = gate.decide(ALICE)
    assert (notify.refused, notify.twilio_code) == (True, 21610)
    assert not gate.decide(ALICE, purpose="mfa").refused


def test_stop_blocks_mfa_when_configured(clock: FakeClock) -> None:
    """With [policy] opt_out_blocks_mfa = true, mfa is refused too."""
    gate = make_gate(clock=clock, policy={"opt_out_blocks_mfa": True})
    client = make_app(gate).test_client()
    post(client, PATH, inbound("STOP"))
    assert gate.decide(ALICE, purpose="mfa").twilio_code == 21610
