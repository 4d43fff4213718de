"""Split: stratified, seeded, and no normalised text in two splits."""

from __future__ import annotations

import pandas as pd

from gradus.config.pipeline import SplitConfig
from gradus.demo import generate
from gradus.stratify import split_by_label
from gradus.text import normalize_text, normalized


def demo_rows() -> pd.DataFrame:
    frame = generate(3000, 11).dropna()
    return frame[frame["text"].str.strip().astype(bool) & frame["label"].astype(bool)].reset_index(drop=True)


def test_no_normalised_text_in_two_splits() -> None:
    frame = demo_rows()
    # Near-duplicates that differ only in case, spacing and punctuation must land together.
    extra = pd.DataFrame({"text": ["My card WAS declined!!", "my card was  declined", "my card was declined?"],
                          "label": ["card_declined"] * 3})
    frame = pd.concat([frame, extra], ignore_index=True)
    split = split_by_label(frame, SplitConfig())
    keys = normalized(frame["text"])
    assert (pd.DataFrame({"key": keys, "split": split}).groupby("key")["split"].nunique() == 1).all()
    assert split.iloc[-3:].nunique() == 1


def test_split_is_seeded_and_stratified() -> None:
    frame = demo_rows()
    cfg = SplitConfig(val_fraction=0.1, test_fraction=0.2, seed=5)
    first, again = split_by_label(frame, cfg), split_by_label(frame, cfg)
    assert first.equals(again)
    assert not first.equals(split_by_label(frame, SplitConfig(val_fraction=0.1, test_fraction=0.2, seed=6)))
    assert set(first) == {"train", "val", "test"}
    share = pd.crosstab(frame["label"], first, normalize="index")
    assert share["test"].between(0.12, 0.28).all(), share["test"]
    assert share["val"].between(0.04, 0.16).all(), share["val"]


def test_a_class_too_small_to_split_stays_in_train() -> None:
    frame = pd.concat([demo_rows(), pd.DataFrame({"text": ["rare one", "rare two"], "label": ["rare"] * 2})],
                      ignore_index=True)
    split = split_by_label(frame, SplitConfig())
    assert (split[frame["label"] == "rare"] == "train").all()


def test_normalize_text() -> None:
    assert normalize_text("  Ｈello,   WORLD!! ") == "hello world"


def test_added_rows_never_move_training_text_into_test() -> None:
    """A retrain on grown data: the champion's training text stays out of the new test split (the gate
    compares both models on text neither trained on)."""
    rows = demo_rows()
    old = rows.iloc[:2400].reset_index(drop=True)
    before = split_by_label(old, SplitConfig())
    after = split_by_label(rows, SplitConfig()).iloc[:2400]  # 25 % more rows, old rows first
    assert len(rows) > 2900
    moved_into_test = (before == "train") & (after == "test")
    assert not moved_into_test.any(), old[moved_into_test].head()
    assert (after[before == "test"] == "test").mean() > 0.9  # and the old test split mostly stays test
