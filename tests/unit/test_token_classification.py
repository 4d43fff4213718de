"""The span-level parts of entity extraction written so far (gradus/task_types/token_classification.py): targets
read back from Parquet, the split, the gate's comparison, the release's agreement and online figure, on
HWU64-slots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradus.config.pipeline import GateConfig, SplitConfig
from gradus.release.analysis import agreement_check
from gradus.spans import Span, from_entities
from gradus.task_types.base import Champion
from gradus.task_types.token_classification import TASK
from tests.conftest import ROOT


def hwu(name: str, rows: int | None = None) -> pd.DataFrame:
    lines = (ROOT / f"benchmarks/data/hwu64-slots/{name}.jsonl").read_text().splitlines()[:rows]
    reads = [from_entities(json.loads(line)["text"], json.loads(line)["entities"]) for line in lines]
    return pd.DataFrame({"text": [r.text for r in reads], "entities": [[s.row() for s in r.spans] for r in reads]})


def test_targets_survive_a_parquet_round_trip_and_make_the_tag_vocabulary(tmp_path: Path) -> None:
    frame = hwu("train", 300)
    frame.to_parquet(tmp_path / "train.parquet")
    back = pd.read_parquet(tmp_path / "train.parquet")
    assert TASK.targets(back) == TASK.targets(frame) and any(TASK.targets(back))
    vocabulary = TASK.vocabulary(back)
    assert vocabulary[0] == "O" and len(vocabulary) == 1 + 2 * len(TASK.types(back))
    assert vocabulary[1:3] == [f"B-{TASK.types(back)[0]}", f"I-{TASK.types(back)[0]}"]


def test_the_split_keeps_each_entity_types_share_and_texts_together() -> None:
    frame = hwu("train")
    frame = pd.concat([frame, frame.head(200)], ignore_index=True)  # repeated texts must land together
    split = TASK.split(frame, SplitConfig())
    assert split.groupby(frame["text"]).nunique().max() == 1
    shares = {}
    for name in ("train", "test"):
        counts = TASK.frequencies(TASK.targets(frame[split == name]))
        total = sum(counts.values())
        shares[name] = {kind: counts[kind] / total for kind in ("date", "time", "place_name", "person")}
    assert all(abs(shares["train"][k] - shares["test"][k]) < 0.02 for k in shares["train"]), shares


def test_the_gate_passes_the_same_answers_and_names_a_type_the_challenger_lost() -> None:
    test = hwu("test")
    truth = TASK.targets(test)
    cfg = GateConfig(min_support=20, bootstrap_samples=300)
    champion = Champion("v1", TASK.types(test), truth)
    numbers, checks = TASK.compare(truth, truth, champion, TASK.types(test), cfg)
    assert all(c.passed for c in checks) and numbers["entity_micro_f1"]["challenger"] == 1.0
    no_dates = [[s for s in spans if s.type != "date"] for spans in truth]
    numbers, checks = TASK.compare(truth, no_dates, champion, TASK.types(test), cfg)
    by_name = {c.name: c for c in checks}
    assert not by_name["per_type_f1"].passed and "date 1.00→0.00" in by_name["per_type_f1"].detail
    assert not by_name["entity_f1_non_inferiority"].passed  # every date gone: micro-F1 falls beyond the margin
    assert numbers["per_type"][0]["type"] == "date"


def test_release_agreement_and_online_f1_judge_entity_answers() -> None:
    truth = TASK.targets(hwu("test"))
    measure = TASK.agreements(truth, truth)[0]
    assert measure.name == "agreement (entity F1)" and agreement_check(measure, 0.9, ">= 0.9", 1.96).status == "pass"
    shifted = [[Span(s.start, s.end + 1, s.type) for s in spans] for spans in truth]  # every end one too far
    texts_with_entities = np.array([bool(spans) for spans in truth])
    values = TASK.agreements(truth, shifted)[0].values
    assert values[texts_with_entities].max() == 0.0 and values[~texts_with_entities].min() == 1.0
    worse = [spans[:1] for spans in truth]  # only the first entity of each text
    score = TASK.online_score(truth, worse, truth, 0.95, 0)
    assert score.champion == 1.0 and score.candidate < 1.0 and score.high < 0, score
    assert score.difference == pytest.approx(score.candidate - score.champion)


def test_the_swap_check_replaces_each_entity_by_another_of_its_type_and_moves_the_spans() -> None:
    from gradus.task_types.token_classification import entity_pool, swap_entities

    train = hwu("train", 2000)
    pool = entity_pool(list(train["text"]), TASK.targets(train))
    rng = np.random.default_rng(0)
    text, spans = "wake me at seven am tomorrow", [Span(11, 19, "time"), Span(20, 28, "date")]
    swapped, moved = swap_entities(text, spans, pool, rng)
    assert [s.type for s in moved] == ["time", "date"]
    assert [swapped[s.start:s.end] for s in moved] != ["seven am", "tomorrow"]
    assert all(swapped[s.start:s.end] in pool[s.type] for s in moved)
    assert swapped.startswith("wake me at ") and swapped[moved[0].end:moved[1].start] == " "
    assert swap_entities("no entity here", [], pool, rng) is None
    assert swap_entities("play kazoo", [Span(5, 10, "instrument")], pool, rng) is None  # no other such string


def test_soft_voting_averages_token_probabilities_before_decoding_and_refuses_other_windows() -> None:
    from gradus.errors import ModelError
    from gradus.spans import TextWindows

    tags = ["O", "B-date", "I-date", "B-time", "I-time"]
    text = "wake me tomorrow"  # words: wake [0, 4), me [5, 7), tomorrow [8, 16)
    offsets, words = [(0, 0), (0, 4), (5, 7), (8, 16), (0, 0)], [None, 0, 1, 2, None]
    sure_date = np.array([[1, 0, 0, 0, 0], [0.9, 0.1, 0, 0, 0], [0.9, 0, 0, 0.1, 0], [0.1, 0.6, 0, 0.3, 0],
                          [1, 0, 0, 0, 0]])
    sure_time = sure_date[:, [0, 3, 4, 1, 2]]  # the same confidence, for time
    one = np.array([TextWindows(text, [(offsets, words, sure_date)])], dtype=object)
    other = np.array([TextWindows(text, [(offsets, words, sure_time)])], dtype=object)
    assert TASK.decode(one, tags, {})[0][0]["type"] == "date" and TASK.decode(other, tags, {})[0][0]["type"] == "time"
    voted = TASK.average([one, other], [3.0, 1.0])
    np.testing.assert_allclose(voted[0].windows[0][2], (3 * sure_date + sure_time) / 4)
    [entity] = TASK.decode(voted, tags, {})[0]
    assert (entity["type"], entity["start"], entity["end"], entity["text"]) == ("date", 8, 16, "tomorrow")
    assert entity["score"] == pytest.approx((3 * 0.6 + 0.3) / 4)
    # Columns in another member's order are aligned first (the ensemble's label order).
    reordered = TASK.columns(other, [0, 3, 4, 1, 2])
    np.testing.assert_allclose(reordered[0].windows[0][2], sure_date)
    # Members that cut the text into other tokens cannot be averaged token by token.
    split = np.array([TextWindows(text, [([(0, 0), (0, 4), (5, 7), (8, 12), (12, 16), (0, 0)],
                                          [None, 0, 1, 2, 2, None], np.vstack([sure_date, sure_date[-1:]]))])],
                     dtype=object)
    with pytest.raises(ModelError, match=r"tokenize text 0 .* differently"):
        TASK.average([one, split], [1.0, 1.0])


def test_answer_figures_score_exact_spans_without_the_texts() -> None:
    truth = [[Span(0, 4, "date"), Span(5, 9, "time")], [Span(2, 6, "date")], []]
    answers = [[{"start": 0, "end": 4, "type": "date", "text": "x", "score": 0.9}],      # one found, one missed
               [{"start": 2, "end": 7, "type": "date", "text": "x", "score": 0.8}],      # wrong end: no match
               [{"start": 0, "end": 2, "type": "time", "text": "x", "score": 0.7}]]      # a false alarm
    figures, per_type = TASK.answer_figures(truth, answers, [])
    assert figures["entity_micro_precision"] == pytest.approx(1 / 3)
    assert figures["entity_micro_recall"] == pytest.approx(1 / 3)
    assert figures["entity_micro_f1"] == pytest.approx(1 / 3)
    assert per_type["date"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert per_type["time"]["f1"] == 0.0 and figures["entity_macro_f1"] == pytest.approx(0.25)


def test_a_perturbation_is_judged_only_where_the_entities_text_and_offsets_survive() -> None:
    answer = [{"start": 8, "end": 13, "type": "merchant"}]
    text = "paid at tesco ok"
    assert TASK.unchanged(answer, text, text.upper()) == answer                 # case: the entity must stay found
    assert TASK.unchanged(answer, text, "piad at tesco ok") == answer            # a typo outside the entity
    assert TASK.unchanged(answer, text, "paid at tsceo ok") is None              # a typo inside it: another entity
    assert TASK.unchanged(answer, text, text + "?") == answer                    # after the last entity
    moved = [{"start": 7, "end": 12, "type": "merchant"}]
    assert TASK.unchanged(moved, "straße tesco", "STRASSE TESCO") is None       # a length change before it
