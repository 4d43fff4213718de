"""Entity extraction's figures (gradus/task_types/entity_scores.py): seqeval's strict entity scores and nervaluate's
partial matches, on hand-made answers whose right figures are known, and on real HWU64-slots texts."""

from __future__ import annotations

import json

import pytest

from gradus.spans import Span, from_entities
from gradus.task_types.entity_scores import entity_figures, word_tags_of
from tests.conftest import ROOT


def test_words_are_tagged_by_the_spans_they_overlap() -> None:
    text = "fly to new york, at 10:30 tomorrow"
    assert word_tags_of(text, [Span(7, 15, "place"), Span(20, 25, "time")]) == [
        "O", "O", "B-place", "I-place", "O", "O", "B-time", "I-time", "I-time", "O"]


def test_exact_answers_score_one_and_each_kind_of_mistake_costs_what_it_should() -> None:
    texts = ["wake me at seven tomorrow", "play jazz by miles davis"]
    truth = [[Span(11, 16, "time"), Span(17, 25, "date")], [Span(5, 9, "genre"), Span(13, 24, "artist")]]
    perfect, per_type = entity_figures(texts, truth, truth)
    assert perfect["entity_micro_f1"] == perfect["entity_macro_f1"] == perfect["partial_f1"] == 1.0
    assert perfect["word_accuracy"] == 1.0 and per_type["artist"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                                                     "support": 1}
    # One entity missed, one cut short ("miles" of "miles davis"), one with the wrong type: strict counts only
    # the date right (1 of 3 answered, 1 of 4 true); partial matching gives the short one half credit.
    answer = [[Span(11, 16, "date"), Span(17, 25, "date")], [Span(13, 18, "artist")]]
    figures, per_type = entity_figures(texts, truth, answer)
    assert figures["entity_micro_precision"] == pytest.approx(1 / 3, abs=1e-6)
    assert figures["entity_micro_recall"] == pytest.approx(1 / 4, abs=1e-6)
    assert figures["entity_micro_f1"] == pytest.approx(2 / 7, abs=1e-6)
    assert per_type["genre"]["recall"] == 0.0 and per_type["date"]["precision"] == 0.5
    # nervaluate: exact boundaries ignore the type (time→date counts), type ignores the boundaries.
    assert figures["exact_f1"] > figures["entity_micro_f1"] and figures["type_f1"] > figures["entity_micro_f1"]
    assert figures["partial_f1"] >= figures["exact_f1"]


def test_hwu64_slots_answers_that_drop_every_other_entity_halve_the_recall() -> None:
    rows = [json.loads(line) for line in (ROOT / "benchmarks/data/hwu64-slots/test.jsonl").read_text().splitlines()]
    reads = [from_entities(row["text"], row["entities"]) for row in rows]
    texts, truth = [r.text for r in reads], [r.spans for r in reads]
    flat = [(i, s) for i, spans in enumerate(truth) for s in spans]
    kept = {flat[k] for k in range(0, len(flat), 2)}
    answer = [[s for s in spans if (i, s) in kept] for i, spans in enumerate(truth)]
    figures, _ = entity_figures(texts, truth, answer)
    assert figures["entity_micro_precision"] == 1.0
    assert figures["entity_micro_recall"] == pytest.approx(len(kept) / len(flat), abs=0.002)


def test_the_dictionary_baseline_finds_training_strings_longest_first() -> None:
    from gradus.task_types.entity_scores import dictionary_baseline

    train = ["call new york office", "weather in york", "play new york new york"]
    spans = [[Span(5, 13, "place")], [Span(11, 15, "place")], [Span(5, 22, "song")]]
    found = dictionary_baseline(train, spans, ["Fly to New York today", "newyork", "york and new york new york"])
    assert found == [[Span(7, 15, "place")], [], [Span(0, 4, "place"), Span(9, 26, "song")]]


def test_the_model_must_beat_the_dictionary_on_hwu64_slots() -> None:
    from gradus.task_types.entity_scores import dictionary_baseline

    def read(name: str) -> tuple[list[str], list[list[Span]]]:
        rows = [json.loads(line) for line in (ROOT / f"benchmarks/data/hwu64-slots/{name}.jsonl").read_text()
                .splitlines()]
        reads = [from_entities(row["text"], row["entities"]) for row in rows]
        return [r.text for r in reads], [r.spans for r in reads]

    (train_texts, train_spans), (texts, truth) = read("train"), read("test")
    figures, _ = entity_figures(texts, truth, dictionary_baseline(train_texts, train_spans, texts))
    # A real but weak baseline: it finds known strings (recall well above 0) and fires on common words that are
    # entities only sometimes (precision well below 1).
    assert 0.3 < figures["entity_micro_recall"] < 0.9 and 0.1 < figures["entity_micro_precision"] < 0.9, figures
