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
