"""Neutralising untrusted mesh text before it is placed inside a prompt."""

from __future__ import annotations

import re
from collections.abc import Iterable

CONTEXT_OPEN = "<context>"
CONTEXT_CLOSE = "</context>"

# Any spelling a model might read as our delimiter: "<context", "< / CONTEXT", "</context x=1>".
_DELIMITER = re.compile(r"<(\s*/?\s*context\b)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MAX_PASSES = 16


def one_line(text: str) -> str:
    """Collapse whitespace (newlines included) and drop control characters, so a field cannot
    start a line of its own and pose as part of the surrounding layout."""
    return " ".join(_CONTROL.sub("", text).split())


def neutralise(text: str, special_tokens: Iterable[str] = ()) -> str:
    """Defuse context delimiters and tokenizer special tokens inside untrusted text.

    Idempotent. "<" in a delimiter becomes "&lt;"; a special token is broken up so the
    tokenizer can no longer match it as one token (it could otherwise open a new chat turn).
    """
    tokens = [t for t in special_tokens if len(t) > 1]
    pattern = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))) if tokens else None
    for _ in range(_MAX_PASSES):
        before = text
        text = _DELIMITER.sub(r"&lt;\1", text)
        if pattern is not None:
            text = pattern.sub(lambda m: _break_token(m.group(0)), text)
        if text == before:
            return text
    # Pathological overlaps that keep producing matches: drop the characters that build them.
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("|", "¦")


def _break_token(token: str) -> str:
    if "<" in token:
        return token.replace("<", "&lt;")
    # A word joiner is invisible to a reader but splits the token for the tokenizer.
    return token[0] + "\u2060" + token[1:]
