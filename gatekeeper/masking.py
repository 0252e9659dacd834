"""Numbers made safe to show: masked for logs and reprs (pure, no dependency).

The rule is one: the last four digits are hidden (``+1415555****``). Logs, reprs, the audit's masked
column and the CLI all use these two functions.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=8_192)
def mask(value: str | None) -> str:
    """A number safe to log, the last four digits hidden (``+1415555****``); an email address with its
    local part hidden (``a***@example.com``)."""
    if not value:
        return "<none>"
    if "@" in value:
        local, _, domain = value.partition("@")
        return (local[:1] + "***@" + domain) if local else "***@" + domain
    if len(value) <= 6:
        return "*" * len(value)
    return value[:-4] + "****"


_NUMBER_IN_TEXT = re.compile(r"(\+|%2B)(\d{3,11})(\d{4})(?![\d*])")  # not again: "+1415555****" stays


def mask_text(text: str) -> str:
    """Every E.164 number in ``text`` (also URL-encoded, ``%2B…``) masked: a safety net for log lines."""
    return _NUMBER_IN_TEXT.sub(lambda m: f"{m[1]}{m[2]}****", text)
