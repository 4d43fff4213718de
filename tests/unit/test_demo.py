"""The embedded demo dataset: deterministic, big and varied enough, learnable but not trivial."""

from __future__ import annotations

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from gradus.demo import generate, intents


def clean(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame["text"].fillna("").str.strip().astype(bool) & frame["label"].fillna("").astype(bool)
    return frame[ok]


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    pd.testing.assert_frame_equal(generate(2500, 3), generate(2500, 3))
    assert not generate(2500, 3).equals(generate(2500, 4))


def test_size_intents_and_malformed_rows() -> None:
    frame = generate(3000, 7)
    assert len(frame) == 3000 and list(frame.columns) == ["text", "label"]
    assert len(intents()) >= 10 and set(clean(frame)["label"]) == set(intents())
    malformed = len(frame) - len(clean(frame))
    assert 3 <= malformed <= 20
    assert frame["text"].isna().any() and frame["label"].isna().any()


def test_phrasings_vary_and_vocabulary_overlaps_between_intents() -> None:
    frame = clean(generate(3000, 7))
    assert frame["text"].str.lower().nunique() > 0.8 * len(frame)
    words_by_intent = {label: set(" ".join(group["text"]).lower().split()) for label, group in frame.groupby("label")}
    shared = [w for w in ("card", "transfer", "account", "money", "payment")
              if sum(w in words for words in words_by_intent.values()) >= 3]
    assert len(shared) >= 3, shared


def test_tfidf_baseline_learns_but_stays_clearly_below_perfect() -> None:
    frame = clean(generate(3000, 7))
    train, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["label"])
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(max_iter=2000, C=10.0).fit(vectorizer.fit_transform(train["text"]), train["label"])
    accuracy = (model.predict(vectorizer.transform(test["text"])) == test["label"]).mean()
    assert 0.6 < accuracy < 0.985, accuracy


def test_the_entity_demo_marks_its_spans_exactly_and_carries_each_kind_of_bad_span() -> None:
    from gradus.demo import generate_entities
    from gradus.spans import from_entities, resolve_overlaps, unknown_types

    frame = generate_entities(600, 3)
    assert frame.equals(generate_entities(600, 3)) and len(frame) == 600
    problems, types = [], set()
    for text, entities in zip(frame["text"], frame["label"], strict=True):
        read = from_entities(text or "", entities)
        _, clash, _ = resolve_overlaps(read.spans, "quarantine")
        unknown = unknown_types(read.spans, ["amount", "date", "card_ending", "merchant"])
        reason = read.problem or clash or (f"unknown {unknown}" if unknown else None)
        if reason or not (text or "").strip():
            problems.append(reason or "blank text")
        types |= {span.type for span in read.spans}
    assert types == {"amount", "date", "card_ending", "merchant", "vendor"}  # vendor: the unknown type's row
    assert sorted(problems, key=str) == sorted([
        "blank text", "span amount [10, 40) is outside the text (length 13); offsets are characters into the text, "
        "end exclusive", "span card_ending [5, 9) says '4243' but the text there is '4242' (offsets shifted, or "
        "counted in other units)", "spans merchant [0, 6) and date [3, 11) overlap (entities.overlaps: "
        "keep_longest to keep the longer)", "unknown ['vendor']",
        "span card_ending [4, 4) is empty; offsets are characters into the text, end exclusive"], key=str)
    assert any("💳" in text for text in frame["text"]) and any("é" in text for text in frame["text"])
