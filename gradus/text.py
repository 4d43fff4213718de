"""Text normalisation shared by every stage that compares texts (leak checks, duplicates)."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

_NON_WORD = re.compile(r"[^\w\s]+")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Comparison key: NFKC, case-folded, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACES.sub(" ", _NON_WORD.sub(" ", text)).strip()


def normalized(texts: pd.Series) -> pd.Series:
    """normalize_text over a column (missing values become empty keys)."""
    return texts.fillna("").astype(str).map(normalize_text)
