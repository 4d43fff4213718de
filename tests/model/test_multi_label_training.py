"""Label sets trained on a tiny real BERT: a sigmoid head (BCE), the probe one-vs-rest, LP-FT from it, and
thresholds chosen on the validation split stored beside the weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from gradus.config.params import load_params
from gradus.modeling import DECISION_FILE, forward, load_classifier
from gradus.task_types.multi_label import TASK, multi_hot, thresholds_of
from tasks.train import fine_tune
from tests.conftest import ROOT, tiny_params

pytestmark = pytest.mark.slow
GOEMOTIONS = ROOT / "benchmarks" / "data" / "goemotions"
LABELS = ["admiration", "amusement", "anger", "gratitude", "love", "neutral"]


@pytest.fixture(scope="module")
def splits(tiny_model_dir: Path) -> dict[str, pd.DataFrame]:
    frames = {}
    for name, source in (("train", "train"), ("val", "dev")):
        rows = pd.read_csv(GOEMOTIONS / f"{source}.csv")
        rows["labels"] = rows["labels"].str.split("|").map(sorted)
        rows = rows[rows["labels"].map(lambda labels: set(labels) <= set(LABELS))]
        frames[name] = rows.head(600 if name == "train" else 200).reset_index(drop=True)
    return frames


def params_for(work: Path, model_dir: Path, **values: object):
    overrides = {**tiny_params(model_dir), "model.task": TASK.name, "paths.checkpoints": work / "checkpoints",
                 "paths.training_log": work / "log", "train.epochs": 2, **values}
    return load_params(ROOT / "params.yaml", [f"{k}={v}" for k, v in overrides.items()])


@pytest.mark.parametrize("method", ["lp_ft", "finetune"])
def test_a_label_set_model_trains_with_sigmoid_scores_and_stores_its_thresholds(
        tmp_path: Path, tiny_model_dir: Path, splits: dict[str, pd.DataFrame], method: str) -> None:
    params = params_for(tmp_path, tiny_model_dir, **{"train.method": method})
    out = tmp_path / "model"
    summary = fine_tune(params, splits["train"], splits["val"], out)

    labels = sorted({label for labels in splits["train"]["labels"] for label in labels})
    assert json.loads((out / "labels.json").read_text())["labels"] == labels
    assert json.loads((out / "config.json").read_text())["problem_type"] == TASK.problem_type
    # The primary metric is micro-F1: the summary and each evaluation say it, and early stopping judged it.
    assert 0.0 < summary["val_micro_f1"] <= 1.0 and "val_hamming_loss" in summary
    assert summary["evaluations"] and all("val_micro_f1" in e for e in summary["evaluations"])
    if method == "lp_ft":
        assert "probe_val_micro_f1" in summary and "finetuned_val_micro_f1" in summary

    # The stored decision is the rule applied to the kept model's validation scores.
    decision = json.loads((out / DECISION_FILE).read_text())
    assert decision == summary["decision"] and decision["labels"] == labels
    model = load_classifier(out)
    scores, _ = forward(model.model, model.tokenizer, list(splits["val"]["text"]), 64, params.train.max_length,
                        bf16=model.bf16)
    assert np.all((scores >= 0) & (scores <= 1)) and not np.allclose(scores.sum(axis=1), 1.0)  # sigmoid, not softmax
    truth = multi_hot(list(splits["val"]["labels"]), labels)
    chosen = TASK.metrics(truth, np.log(scores / (1 - scores)), decision)["micro_f1"]
    at_half = TASK.metrics(truth, np.log(scores / (1 - scores)), {"labels": labels})["micro_f1"]
    # Coordinate ascent from the best global threshold of a grid that holds 0.5: never below 0.5's micro-F1.
    assert chosen >= at_half - 1e-9, (chosen, at_half, decision["per_label"], decision["global"])
    assert thresholds_of(decision, labels).shape == (len(labels),)


def test_lp_ft_starts_from_the_one_vs_rest_probe(tmp_path: Path, tiny_model_dir: Path,
                                                 splits: dict[str, pd.DataFrame]) -> None:
    params = params_for(tmp_path, tiny_model_dir, **{"train.method": "probe"})
    out = tmp_path / "probe"
    summary = fine_tune(params, splits["train"], splits["val"], out)
    weights = load_file(out / "model.safetensors")
    labels = json.loads((out / "labels.json").read_text())["labels"]
    assert weights["classifier.weight"].shape[0] == len(labels)
    assert summary["chosen"] == "probe" and summary["val_micro_f1"] == summary["probe_val_micro_f1"]


def test_positive_weights_weigh_rare_labels_up(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch

    params = params_for(tmp_path, tiny_model_dir, **{"multi_label.positive_weight": "true"})
    targets = multi_hot([["a"], ["a"], ["a"], ["a", "b"]], ["a", "b"]).tolist()
    loss = TASK.loss_function(targets, params)
    assert loss is not None and TASK.loss_function(targets, params_for(tmp_path, tiny_model_dir)) is None
    logits = torch.zeros((1, 2))
    # A missed positive of the rare label (b: 1 of 4 rows, weight 3) costs three times a missed positive of a.
    only_a = loss({"logits": logits}, torch.tensor([[1.0, 0.0]]))
    only_b = loss({"logits": logits}, torch.tensor([[0.0, 1.0]]))
    negative = np.log(2.0) / 2  # each cell's BCE at logit 0 is log 2; one of two cells is positive
    assert float(only_a) == pytest.approx(negative + np.log(2.0) / 2 * 1.0)
    assert float(only_b) == pytest.approx(negative + np.log(2.0) / 2 * 3.0)


def test_the_evaluate_stage_scores_label_sets(tmp_path: Path, tiny_model_dir: Path,
                                              splits: dict[str, pd.DataFrame]) -> None:
    from gradus.probe import probe_baseline
    from tasks.evaluate import evaluate_model

    params = params_for(tmp_path, tiny_model_dir, **{"train.method": "finetune", "evaluate.slice_columns": "[]"})
    out = tmp_path / "model"
    fine_tune(params, splits["train"], splits["val"], out)
    rows = pd.read_csv(GOEMOTIONS / "test.csv")
    rows["labels"] = rows["labels"].str.split("|").map(sorted)
    test = rows[rows["labels"].map(lambda labels: set(labels) <= set(LABELS))].head(300).reset_index(drop=True)
    result = evaluate_model(out, splits["train"], test, params, val=splits["val"])

    labels = json.loads((out / "labels.json").read_text())["labels"]
    decision = json.loads((out / DECISION_FILE).read_text())
    model = load_classifier(out)
    scores, _ = forward(model.model, model.tokenizer, list(test["text"]), 64, params.train.max_length,
                        bf16=model.bf16)
    expected = TASK.decode(scores, labels, decision)
    assert result.predicted == expected and all(isinstance(answer, list) for answer in result.predicted)
    metrics = result.metrics
    truth = multi_hot(list(test["labels"]), labels)
    logits = np.log(scores / (1 - scores))
    assert metrics["micro_f1"] == pytest.approx(TASK.metrics(truth, logits, decision)["micro_f1"], abs=1e-6)
    for key in ("macro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "cardinality_true",
                "cardinality_predicted", "ece"):
        assert key in metrics, key
    assert metrics["cardinality_true"] == pytest.approx(truth.sum(axis=1).mean(), abs=1e-6)
    assert set(result.per_class) == set(labels)
    assert sum(row["support"] for row in result.per_class.values()) == int(truth.sum())
    # Label-level confusion: every given label once (found or missed), every extra answer once.
    confusion = result.plots["confusion"]
    extra = sum(len(set(p) - set(a)) for a, p in zip(test["labels"], result.predicted, strict=True))
    assert len(confusion) == int(truth.sum()) + extra
    curves = result.plots["pr_curves"]
    assert set(curves["label"]) == {label for label in labels if truth[:, labels.index(label)].any()}
    assert metrics["baseline_tfidf"]["micro_f1"] > 0 and 0.05 <= metrics["baseline_tfidf"]["threshold"] <= 0.95
    assert set(result.slices["text_length_chars"]["<=20"]) >= {"rows", "micro_f1", "macro_f1", "subset_accuracy"}
    assert {"case", "punctuation", "typo"} <= set(result.behavioral)

    probe = probe_baseline(str(tiny_model_dir), None, splits["train"], splits["val"], test, params.train.max_length,
                           64, "cpu", params.train.seed, task=TASK.name, params=params)
    assert 0 <= probe["micro_f1"] <= 1 and "val_micro_f1" in probe and probe["C"] > 0
