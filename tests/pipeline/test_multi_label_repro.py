"""`dvc repro` with model.task multi_label on the demo's support tickets (label sets), in a fresh git + DVC
repository: every stage runs through the task seam and writes the label-set outputs the next stage reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from gradus.modeling import DECISION_FILE
from gradus.task_types.multi_label import TASK
from tests.conftest import set_params, sh

pytestmark = pytest.mark.slow
DVC = [sys.executable, "-m", "dvc"]


def test_dvc_repro_trains_gates_and_compresses_a_label_set_model(project_repo: Path) -> None:
    set_params(project_repo / "params.yaml", {
        "model.task": TASK.name, "evaluate.probe": True, "compress.enabled": True,
        # A toy model: floors it can clear (the label-set figures are what the test checks).
        "gate.min_micro_f1": 0.2, "gate.min_macro_f1": 0.05, "compress.min_agreement": 0.9,
        "compress.max_accuracy_drop": 0.05})
    sh([*DVC, "repro"], project_repo)
    params = json.loads(json.dumps(__import__("yaml").safe_load((project_repo / "params.yaml").read_text())))
    paths = {key: project_repo / value for key, value in params["paths"].items()}

    # Validate: the demo's malformed label sets are quarantined with their reasons; nothing is lost.
    report = json.loads(paths["validation_report"].read_text())
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"]
    quarantined = [json.loads(line) for line in paths["quarantine"].read_text().splitlines()]
    reasons = " | ".join(row["reasons"] for row in quarantined)
    for words in ("empty label set", "holds the label separator '|'", "unknown label(s) ['plan_upgrade']"):
        assert words in reasons, words
    raw = pd.read_parquet(paths["raw"])
    assert raw["label_type"].eq("array").sum() > 0.9 * len(raw)  # the demo's label lists stayed lists

    # Split and train: label lists in every split; a sigmoid head with thresholds stored beside it.
    train = pd.read_parquet(paths["splits"] / "train.parquet")
    assert all(len(labels) >= 1 for labels in train["labels"])
    model = paths["model"]
    assert json.loads((model / "config.json").read_text())["problem_type"] == TASK.problem_type
    decision = json.loads((model / DECISION_FILE).read_text())
    assert decision["labels"] == json.loads((model / "labels.json").read_text())["labels"]

    # Evaluate: the label-set figures, the TF-IDF and probe baselines in the same terms, curves per label.
    metrics = json.loads(paths["metrics"].read_text())
    for key in ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "cardinality_predicted"):
        assert key in metrics, key
    assert 0 < metrics["micro_f1"] <= 1 and 0 < metrics["baseline_tfidf"]["micro_f1"] <= 1, metrics
    assert "micro_f1" in metrics["baseline_probe"] and "accuracy" not in metrics
    predictions = pd.read_parquet(paths["predictions"])
    assert all(len(set(answer)) == len(answer) for answer in predictions["predicted"])
    curves = pd.read_csv(paths["pr_curves"])
    assert set(curves.columns) == {"label", "threshold", "precision", "recall"} and curves["label"].nunique() > 5

    # Compress: ONNX parity judged on exact label-set agreement and micro-F1; gate: the type's floors.
    compression = json.loads(paths["compression_report"].read_text())
    for variant in compression["variants"].values():
        assert {"agreement", "micro_f1", "micro_f1_drop"} <= set(variant)
    assert compression["variants"]["onnx"]["agreement"] >= 0.99  # the same weights answer the same sets
    gate = json.loads(paths["gate_report"].read_text())
    assert gate["mode"] == "first_model" and "micro_f1" in gate["challenger"]
    assert {c["name"] for c in gate["checks"]} >= {"min_micro_f1", "min_macro_f1"}
    numbers = json.loads(paths["gate_metrics"].read_text())
    assert numbers["passed"] == int(gate["passed"])
