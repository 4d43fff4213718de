"""What a text is: the rules a text must meet (the validate stage's and the service's, one definition), and the
normalisation every stage that compares texts shares (leak checks, duplicates)."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

BLANK = r"^\s*$"
# C0/C1 control characters (tab, newline and carriage return allowed), the replacement character left
# by a lossy decode, and lone surrogates (invalid Unicode that cannot be encoded as UTF-8).
CONTROL_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]"
CONTROL_OR_INVALID = CONTROL_CHARS[:-1] + r"\ud800-\udfff]"
_BLANK, _CONTROL_OR_INVALID = re.compile(BLANK), re.compile(CONTROL_OR_INVALID)
# The rules by the names the validate stage gives them (quarantine reasons, Data Docs) and the service's 422s.
TEXT_NOT_BLANK, TEXT_LENGTH, TEXT_CONTROL_CHARS = "text_not_blank", "text_length", "text_control_chars"
REASONS = {TEXT_NOT_BLANK: "text is empty or only whitespace",
           TEXT_CONTROL_CHARS: "text has control characters or invalid Unicode"}


def length_reason(min_chars: int, max_chars: int) -> str:
    return f"text length is outside {min_chars}..{max_chars} characters"


def text_problem(text: str, min_chars: int, max_chars: int) -> tuple[str, str] | None:
    """The first rule a text breaks, as (rule, reason), or None: blank, then length, then control characters
    or invalid Unicode (a lone surrogate, which no tokenizer can encode)."""
    if _BLANK.match(text):
        return TEXT_NOT_BLANK, REASONS[TEXT_NOT_BLANK]
    if not min_chars <= len(text) <= max_chars:
        return TEXT_LENGTH, f"{length_reason(min_chars, max_chars)} ({len(text)})"
    if found := _CONTROL_OR_INVALID.search(text):
        return TEXT_CONTROL_CHARS, f"{REASONS[TEXT_CONTROL_CHARS]} (U+{ord(found.group()):04X} at {found.start()})"
    return None


_NON_WORD = re.compile(r"[^\w\s]+")
# For ASCII text the same result without regexes: NFKC is the identity and casefold is lower().
_ASCII_NON_WORD = str.maketrans({c: " " for c in map(chr, range(128))
                                 if not (c.isalnum() or c == "_" or c.isspace())})


def normalize_text(text: str) -> str:
    """Comparison key: NFKC, case-folded, punctuation dropped, whitespace collapsed."""
    if text.isascii():
        return " ".join(text.lower().translate(_ASCII_NON_WORD).split())
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NON_WORD.sub(" ", text).split())


def normalized(texts: pd.Series) -> pd.Series:
    """normalize_text over a column, computed once per distinct text (missing values become empty keys)."""
    keys = {text: normalize_text(str(text)) for text in texts.dropna().unique()}
    return texts.map(keys).fillna("")
