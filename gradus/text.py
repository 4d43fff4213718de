"""Text normalisation shared by every stage that compares texts (leak checks, duplicates)."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

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
