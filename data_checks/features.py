"""Columns derived from (text, label) that the Great Expectations suite checks row by row.

GX checks values; what a value *means* here (a normalised duplicate, a label conflict, a token count)
has to be computed first. Each computation runs once per distinct text, so a large batch with repeats
costs little more than its distinct texts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from gradus.config.pipeline import ValidateConfig

Tokenize = Callable[[list[str]], list[int]]


def token_counts(texts: pd.Series, cfg: ValidateConfig, tokenize: Tokenize) -> pd.Series:
    """Tokens per row where the bounds are in doubt; <NA> where they provably hold without tokenizing.

    A WordPiece token covers at least one character and every word yields at least one token, so a text
    of at most max_tokens - 2 characters and at least min_tokens words needs no tokenizer.
    """
    text = texts.fillna("")
    doubtful = text.str.len() > cfg.max_tokens - 2
    if cfg.min_tokens > 1:
        doubtful |= text.str.split().str.len() < cfg.min_tokens
    elif cfg.min_tokens == 1:
        doubtful |= text.str.strip() == ""
    doubtful &= texts.notna()
    counts = pd.Series(pd.NA, index=texts.index, dtype="Int64")
    todo = list(text[doubtful].unique())
    if todo:
        lengths = dict(zip(todo, tokenize(todo), strict=True))
        counts[doubtful] = text[doubtful].map(lengths).astype("Int64")
    return counts


def duplicate_of(keys: pd.Series, labels: pd.Series, source_rows: pd.Series) -> pd.Series:
    """For a later copy of (normalised text, label), the source row of its first copy; -1 otherwise."""
    frame = pd.DataFrame({"key": keys, "label": labels.fillna("\0missing")})
    first = frame.groupby(["key", "label"], sort=False).cumcount() == 0
    first_row = source_rows.where(first).groupby([frame["key"], frame["label"]], sort=False).transform("first")
    result = first_row.where(~first & (keys != ""), -1)
    return result.fillna(-1).astype(np.int64)


def conflicting_labels(keys: pd.Series, labels: pd.Series) -> pd.Series:
    """For a normalised text seen with several labels, all of them joined by '|'; '' otherwise."""
    present = pd.DataFrame({"key": keys, "label": labels}).dropna()
    pairs = present[(present["key"] != "") & (present["label"].str.strip() != "")].drop_duplicates()
    several = pairs[pairs["key"].duplicated(keep=False)]  # distinct (key, label) pairs: a repeated key conflicts
    joined = several.sort_values("label").groupby("key")["label"].agg("|".join)
    return keys.map(joined).fillna("")
