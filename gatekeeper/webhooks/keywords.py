"""What an inbound message asks for: opt-out, opt-in, help, or nothing. Pure: no I/O, no Flask.

Two layers, in this order:

1. **Keywords** — Twilio's rule: the whole body, case-insensitive, is one keyword
   (surrounding whitespace and punctuation ignored here, so ``"Stop."`` counts).
   ``OptOutType`` (Twilio Advanced Opt-Out) wins over the body when present.
2. **Plain words** — the FCC's "any reasonable means": ``"stop texting me"``,
   ``"please unsubscribe me"``, ``"no more messages"``. Conservative by design (a
   wrong opt-out silences a customer): a clause must *start* with a revocation,
   after at most a polite or intent prefix ("please", "can you", "I want to"), so
   "don't stop", "I'll stop by", "why did you stop texting me" and "cancel my order"
   are not opt-outs. Quoted text is ignored. Plain words only ever opt *out*:
   opting back in takes an explicit keyword.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

OPT_OUT_KEYWORDS: frozenset[str] = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS: frozenset[str] = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS: frozenset[str] = frozenset({"HELP", "INFO"})
#: Opt-outs that apply to every sender of the account whatever ``opt_out_scope`` says.
ACCOUNT_WIDE_KEYWORDS: frozenset[str] = frozenset({"STOPALL"})


class Intent(str, enum.Enum):
    """What an inbound message asks for."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


Via = Literal["opt_out_type", "keyword", "phrase"]


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict on one message body.

    ``keyword`` is the matched keyword upper-cased (``"STOP"``) or ``None`` for a
    plain-words revocation; ``via`` says which layer decided; ``account_wide`` is
    True for STOPALL (and "stop all"), which ignores a per-sender scope.
    """

    intent: Intent
    keyword: str | None = None
    via: Via | None = None
    account_wide: bool = False

    @property
    def label(self) -> str:
        """A short name for consent sources and logs: the keyword, or ``"phrase"``."""
        return self.keyword or (self.via or "none")


NOTHING = Classification(Intent.NONE)


def fold(text: str) -> str:
    """Case-, width- and accent-insensitive form: ``"ARRÊT"`` and ``"arret"`` fold alike."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")


def _strip_edges(text: str) -> str:
    """Drop surrounding whitespace, punctuation and symbols (``"STOP!!!"`` → ``"STOP"``)."""
    start, end = 0, len(text)
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return " ".join(text[start:end].split())


def keyword_of(body: str) -> str:
    """The body as a keyword candidate: folded, edges stripped, inner whitespace collapsed."""
    return _strip_edges(fold(body))


# -- plain words -----------------------------------------------------------------------
# Words allowed before a revocation at the start of a clause: politeness, asking, wanting.
_PREFIX = (
    r"(?:(?:please|pls|plz|pleas|kindly|ok|okay|just|now|hey|hi|hello|yes|yeah|no|sorry|so|but|and|then|"
    r"(?:you|u) (?:can|may|should|could)|(?:can|could|would|will|can't|cant) (?:you|u)|"
    r"i (?:want|need|would like|wish|would love|demand)(?: you)? to|i'd like(?: you)? to|i wanna|"
    r"i (?:said|told you|asked you|already said|already told you|already asked you)(?: to)?|"
    r"how (?:do|can|would) i|how to|let me|i(?:'m| am) asking you to)\s+)*"
)
_CONTACT = r"(?:text|txt|message|msg|contact|call|sms|email|e-mail|spam|bother|harass|ping|notify)"
_CONTACTING = (
    r"(?:texting|txting|messaging|msging|contacting|calling|smsing|emailing|e-mailing|spamming|bothering|harassing|"
    r"pinging|notifying)"
)
_MESSAGES = (
    r"(?:texts?|txts?|messages?|msgs?|sms|sms's|mms|texting|messaging|notifications?|notifs?|alerts?|reminders?|"
    r"promos?|promotions?|offers?|ads|adverts?|advertisements?|marketing|spam|updates|newsletters?|emails?|calls?)"
)
_DETERMINERS = (
    r"(?:(?:these|those|this|the|your|ur|any|all|more|of|other|such|stupid|damn|annoying|spam|marketing)\s+)*"
)
_FILLERS = r"(?:\s+(?:please|pls|plz|now|thanks|thank you|thx|ty|immediately|asap|already|right now|it|at once))*"

_REVOCATIONS = [
    # bare strong keyword with fillers: "stop please", "unsubscribe pls", "stop it now"
    r"(?:stop|stop ?all|unsubscribe|unsub|opt ?out|revoke)" + _FILLERS,
    # "stop texting me", "stop calling this number", "please stop sending me these messages"
    r"stop " + _CONTACTING + r"\b.*",
    r"stop sending(?: (?:me|us|to me|to this number))?(?: " + _DETERMINERS + _MESSAGES + r"\b.*)?" + _FILLERS,
    # "unsubscribe me", "unsubscribe me from this list", "opt me out", "opt out of texts"
    r"(?:unsubscribe|unsub|opt ?out)(?: me| this number| my number)?(?: (?:from|of) .*)?" + _FILLERS,
    r"opt (?:me|this number|my number) out\b.*",
    # "remove me from your list", "take me off this list", "delete my number"
    r"(?:remove|delete|drop|erase|take) (?:me|my number|this number|my (?:phone|cell|mobile)(?: number)?)"
    r"(?: (?:from|off|out of) .*)?" + _FILLERS,
    r"take me off\b.*",
    # "do not text me again", "don't contact me anymore", "never message me again", "stop contacting me"
    r"(?:do not|don't|dont|never|stop) " + _CONTACT + r" (?:me|us|this number|my number)\b.*",
    # "no more texts please", "no more messages"
    r"no more " + _DETERMINERS + _MESSAGES + r"\b.*",
    # "I don't want these texts anymore", "I do not want to receive messages"
    r"i (?:do not|don't|dont|no longer) (?:want|wish) (?:to (?:receive|get|be sent) )?"
    + _DETERMINERS
    + _MESSAGES
    + r"\b.*",
    r"i (?:do not|don't|dont|no longer) (?:want|wish) to be (?:texted|messaged|contacted|called)\b.*",
    # "I revoke my consent", "withdraw my consent", "I revoke"
    r"(?:i )?(?:hereby )?(?:revoke|withdraw|rescind|retract) (?:my |all |any )*(?:consent|permission|subscription|agreement|opt ?in)\b.*",  # noqa: E501
    r"i (?:hereby )?revoke\b.*",
    # "cancel my subscription", "cancel these texts" (but not "cancel my order")
    r"(?:cancel|end) (?:my |the |these |this |your |all |text |sms )*(?:subscription|" + _MESSAGES + r")\b.*",
    r"leave me alone\b.*",
]
_REVOCATION = re.compile(_PREFIX + r"(?:" + "|".join(_REVOCATIONS) + r")", re.ASCII)
_STOP_ALL = re.compile(_PREFIX + r"stop ?all\b" + _FILLERS, re.ASCII)

# Quoted spans ("reply STOP to end") are someone else's words, not the sender's request.
_QUOTE_MARKS = '"\u201c\u201d\u00ab\u00bb\u201e'
_QUOTED = re.compile(f"[{_QUOTE_MARKS}][^{_QUOTE_MARKS}]*[{_QUOTE_MARKS}]")
_CLAUSE_BREAK = re.compile(r"([.!?;:,\n\r\t()\[\]{}]+|\s+-+\s+)")
_NOT_WORDY = re.compile(r"[^a-z0-9' -]+")
# A question is a request only when it asks for one: "can you stop texting me?", "how do I opt out?".
# "No more messages?" or "opt out?" asked about something else is not.
_ASKING = re.compile(
    r"(?:(?:please|pls|ok|okay|so|but|hey|hi) )*"
    r"(?:(?:can|could|would|will|can't|cant) (?:you|u)|how (?:do|can|would) i|how to)\b",
    re.ASCII,
)
_BARE = re.compile(_PREFIX + _REVOCATIONS[0], re.ASCII)
_MAX_PHRASE_CHARS = 2000  # a revocation is short; bound the work on a long body


def clauses(body: str) -> list[tuple[str, bool]]:
    """The body's clauses as ``(words, is_question)``: folded, quoted text replaced, symbols dropped."""
    text = _QUOTED.sub(" quoted ", fold(body[:_MAX_PHRASE_CHARS]))
    parts = _CLAUSE_BREAK.split(text)
    out = []
    for i in range(0, len(parts), 2):
        words = " ".join(_NOT_WORDY.sub(" ", parts[i]).split()).strip(" '-")
        if words:
            ending = parts[i + 1] if i + 1 < len(parts) else ""
            out.append((words, "?" in ending))
    return out


def _clause_revokes(words: str, question: bool) -> bool:
    if question and not (_ASKING.match(words) or _BARE.fullmatch(words)):
        return False
    return _REVOCATION.fullmatch(words) is not None


def revokes_consent(body: str) -> bool:
    """True if some clause of ``body`` is a plain-words withdrawal of consent."""
    return any(_clause_revokes(words, question) for words, question in clauses(body))


def _revokes_all(body: str) -> bool:
    return any(_STOP_ALL.fullmatch(words) for words, _ in clauses(body))


@dataclass(frozen=True)
class Classifier:
    """Classifies inbound bodies; extra keywords (any language) add to Twilio's defaults.

    >>> Classifier().classify("Stop.").intent
    <Intent.OPT_OUT: 'opt_out'>
    """

    extra_stop: Iterable[str] = ()
    extra_start: Iterable[str] = ()
    extra_help: Iterable[str] = ()
    phrases: bool = True
    _table: dict[str, Intent] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        table: dict[str, Intent] = {}
        # Later groups do not override earlier ones: an opt-out keyword stays an opt-out.
        groups = (
            (OPT_OUT_KEYWORDS, self.extra_stop, Intent.OPT_OUT),
            (OPT_IN_KEYWORDS, self.extra_start, Intent.OPT_IN),
            (HELP_KEYWORDS, self.extra_help, Intent.HELP),
        )
        for builtin, extra, intent in groups:
            for word in (*builtin, *extra):
                key = keyword_of(word)
                if key:
                    table.setdefault(key, intent)
        object.__setattr__(self, "_table", table)

    def classify(self, body: str, opt_out_type: str | None = None) -> Classification:
        """The intent of ``body``; ``opt_out_type`` (STOP/START/HELP from Twilio) wins when present."""
        word = keyword_of(body)
        upper = word.upper()
        forced = {"STOP": Intent.OPT_OUT, "START": Intent.OPT_IN, "HELP": Intent.HELP}.get(
            (opt_out_type or "").strip().upper()
        )
        intent = self._table.get(word)
        if forced is not None:
            # Twilio matched one of the service's keywords (maybe one we do not know, in any language).
            known = intent is forced
            return Classification(
                forced,
                keyword=upper if known else str(opt_out_type).strip().upper(),
                via="opt_out_type",
                account_wide=known and upper in ACCOUNT_WIDE_KEYWORDS,
            )
        if intent is not None:
            return Classification(intent, keyword=upper, via="keyword", account_wide=upper in ACCOUNT_WIDE_KEYWORDS)
        if self.phrases and revokes_consent(body):
            return Classification(Intent.OPT_OUT, via="phrase", account_wide=_revokes_all(body))
        return NOTHING
