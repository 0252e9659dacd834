"""The inbound classifier: Twilio keywords, OptOutType, extra keywords, and the plain-words corpus."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gatekeeper.webhooks.keywords import Classifier, Intent, revokes_consent

CORPUS = Path(__file__).parent / "data" / "consent.tsv"
SHARED_CORPUS = Path("/work/shared/corpora/consent.tsv")


def _rows(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        label, text = line.split("\t", 1)
        rows.append((label, text))
    return rows


ROWS = _rows(CORPUS)


def test_corpus_has_the_shared_rows_and_enough_of_our_own() -> None:
    """Our copy holds every shared row (when the shared corpus is present) plus at least 25 of our own, both labels."""
    ours = ROWS
    shared = _rows(SHARED_CORPUS) if SHARED_CORPUS.exists() else ours[:50]
    assert ours[: len(shared)] == shared
    added = ours[len(shared) :]
    assert len(added) >= 25
    assert {label for label, _ in added} == {"opt_out", "keep"}


@pytest.mark.parametrize(("label", "text"), ROWS, ids=[f"{i}:{t[:30]}" for i, (_, t) in enumerate(ROWS)])
def test_corpus_row_is_classified_as_labelled(label: str, text: str) -> None:
    """Each corpus row is an opt-out exactly when labelled opt_out."""
    intent = Classifier().classify(text).intent
    assert (intent is Intent.OPT_OUT) == (label == "opt_out")


@pytest.mark.parametrize(
    ("body", "intent"),
    [
        ("STOP", Intent.OPT_OUT),
        ("stopall", Intent.OPT_OUT),
        ("Unsubscribe", Intent.OPT_OUT),
        ("cancel", Intent.OPT_OUT),
        ("END", Intent.OPT_OUT),
        ("quit", Intent.OPT_OUT),
        ("Revoke", Intent.OPT_OUT),
        ("OPTOUT", Intent.OPT_OUT),
        ("START", Intent.OPT_IN),
        ("yes", Intent.OPT_IN),
        ("Unstop!", Intent.OPT_IN),
        ("help", Intent.HELP),
        (" Info? ", Intent.HELP),
        ("hello", Intent.NONE),
        ("", Intent.NONE),
        ("!!!", Intent.NONE),
    ],
)
def test_default_keywords(body: str, intent: Intent) -> None:
    """Twilio's default keywords, case-insensitive, surrounding whitespace and punctuation ignored."""
    result = Classifier().classify(body)
    assert result.intent is intent
    if intent is not Intent.NONE:
        assert result.via == "keyword"


def test_stopall_is_account_wide() -> None:
    """STOPALL (and "stop all") opt out of every sender; STOP does not say so."""
    assert Classifier().classify("STOPALL").account_wide
    assert Classifier().classify("please stop all").account_wide
    assert not Classifier().classify("STOP").account_wide


@pytest.mark.parametrize(
    ("body", "opt_out_type", "intent"),
    [
        ("ARRET", "STOP", Intent.OPT_OUT),  # a service keyword we do not know
        ("stop", "HELP", Intent.HELP),  # Twilio's verdict wins over ours
        ("hello", "start", Intent.OPT_IN),
    ],
)
def test_opt_out_type_wins(body: str, opt_out_type: str, intent: Intent) -> None:
    """With Advanced Opt-Out, Twilio's OptOutType decides."""
    result = Classifier().classify(body, opt_out_type)
    assert (result.intent, result.via) == (intent, "opt_out_type")


def test_unknown_opt_out_type_is_ignored() -> None:
    """An OptOutType value we do not know falls back to our own matching."""
    assert Classifier().classify("STOP", "SOMETHING").intent is Intent.OPT_OUT


def test_extra_keywords_in_other_languages() -> None:
    """Configured keywords (any language, accents folded) join the defaults; unconfigured ones do nothing."""
    c = Classifier(extra_stop=["ARRÊT", "ALTO"], extra_start=["COMMENCER"], extra_help=["AIDE"])
    assert c.classify("arret").intent is Intent.OPT_OUT
    assert c.classify("Arrêt !").keyword == "ARRET"
    assert c.classify("Alto.").intent is Intent.OPT_OUT
    assert c.classify("commencer").intent is Intent.OPT_IN
    assert c.classify("aide").intent is Intent.HELP
    assert Classifier().classify("ALTO").intent is Intent.NONE


def test_extra_keyword_cannot_turn_an_opt_out_into_an_opt_in() -> None:
    """A misconfigured start keyword that is also an opt-out keyword stays an opt-out (fail safe)."""
    assert Classifier(extra_start=["stop"]).classify("STOP").intent is Intent.OPT_OUT


def test_phrases_can_be_disabled() -> None:
    """With consent_phrases off, only keywords count."""
    assert Classifier(phrases=False).classify("stop texting me").intent is Intent.NONE
    assert Classifier(phrases=False).classify("STOP").intent is Intent.OPT_OUT


def test_phrase_opt_out_has_no_keyword() -> None:
    """A plain-words opt-out is labelled as a phrase."""
    result = Classifier().classify("please stop texting me")
    assert (result.intent, result.keyword, result.via, result.label) == (Intent.OPT_OUT, None, "phrase", "phrase")


@pytest.mark.parametrize(
    "body",
    [
        "please " * 3000 + "x",
        "no more " + "spam " * 2000 + "?",
        "i said " * 500,
        "i don't want " + "these " * 1000 + "x",
    ],
)
def test_long_body_is_classified_quickly(body: str) -> None:
    """A long adversarial body is bounded work (no catastrophic regex backtracking)."""
    started = time.perf_counter()
    revokes_consent(body)
    assert time.perf_counter() - started < 0.5
