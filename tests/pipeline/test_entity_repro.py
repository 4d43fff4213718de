"""`dvc repro` with model.task token_classification on the demo's support messages with entities marked, in a
fresh git + DVC repository: every stage runs through the task seam and writes the entity outputs the next stage
reads (character spans from ingest to the gate)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gradus.task_types.token_classification import TASK
from tests.conftest import set_params, sh

pytestmark = pytest.mark.slow
DVC = [sys.executable, "-m", "dvc"]


def test_dvc_repro_trains_evaluates_and_gates_an_entity_model(project_repo: Path) -> None:
    set_params(project_repo / "params.yaml", {
        "model.task": TASK.name, "data.sources.0.rows": 1200,
        # Windows: the tiny model reads 16 tokens at a time, so the demo's longer messages come in several.
        "train.max_length": 16, "entities.stride": 4,
        # A toy model: a floor it can clear (the entity figures are what the test checks).
        "gate.min_entity_f1": 0.05, "compress.enabled": True, "compress.max_accuracy_drop": 0.05})
    sh([*DVC, "repro"], project_repo)
    params = yaml.safe_load((project_repo / "params.yaml").read_text())
    paths = {key: project_repo / value for key, value in params["paths"].items()}

    # Validate: the demo's malformed entity rows are quarantined with their reasons; nothing is lost.
    report = json.loads(paths["validation_report"].read_text())
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"] == 1200
    quarantined = [json.loads(line) for line in paths["quarantine"].read_text().splitlines()]
    reasons = " | ".join(row["reasons"] for row in quarantined)
    for words in ("is outside the text (length 13)", "says '4243' but the text there is '4242'", "overlap",
                  "entity type(s) ['vendor']", "[4, 4) is empty"):
        assert words in reasons, words

    # Split: spans in every split, character offsets into the text as written.
    train = pd.read_parquet(paths["splits"] / "train.parquet")
    spans = TASK.targets(train)
    assert sum(map(len, spans)) > len(train) and {s.type for row in spans for s in row} == {
        "amount", "card_ending", "date", "merchant"}
    assert all(0 <= s.start < s.end <= len(text) for text, row in zip(train["text"], spans, strict=True) for s in row)

    # Train: a token head over O and B-/I- of each type, windows recorded for prediction.
    model = paths["model"]
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"][0].endswith("ForTokenClassification")
    labels = json.loads((model / "labels.json").read_text())["labels"]
    assert labels == ["O", "B-amount", "I-amount", "B-card_ending", "I-card_ending", "B-date", "I-date",
                      "B-merchant", "I-merchant"]
    summary = json.loads((model / "training_summary.json").read_text())
    assert summary["stride"] == 4 and summary["max_length"] == 16 and summary["method"] == "finetune"
    assert "val_entity_micro_f1" in summary

    # Evaluate: entity figures beside the dictionary baseline; answers are spans with the text there.
    metrics = json.loads(paths["metrics"].read_text())
    for key in ("entity_micro_f1", "entity_macro_f1", "entity_micro_precision", "entity_micro_recall",
                "partial_f1", "exact_f1", "type_f1", "word_accuracy"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["entity_micro_f1"] > 0.3, metrics  # the toy learns the demo's entities, if not perfectly
    assert metrics["baseline_tfidf"]["method"].startswith("dictionary") and "baseline_probe" not in metrics
    test = pd.read_parquet(paths["splits"] / "test.parquet")
    predictions = pd.read_parquet(paths["predictions"])
    for text, answer in zip(test["text"], predictions["predicted"], strict=True):
        for entity in answer:
            assert text[entity["start"]:entity["end"]] == entity["text"] and 0 < entity["score"] <= 1
    confusion = pd.read_csv(paths["confusion"])  # one row per entity pair, as DVC's confusion template counts
    assert list(confusion.columns) == ["actual", "predicted"] and (confusion["actual"] == confusion["predicted"]).mean(
        ) > 0.8 and len(confusion) >= sum(len(TASK.targets(test)[i]) for i in range(len(test)))
    behavioral = json.loads(paths["behavioral"].read_text())
    assert {"case", "punctuation", "typo", "swap"} <= set(behavioral) and behavioral["swap"]["rows"] > 0

    # Compress: the ONNX graph reads the same windows and answers the same entities; int8 is judged on entity F1.
    compression = json.loads(paths["compression_report"].read_text())
    onnx = compression["variants"]["onnx"]
    assert onnx["agreement"] >= 0.99 and abs(onnx["entity_micro_f1_drop"]) <= 0.01, onnx
    int8 = compression["variants"]["onnx-int8"]
    assert {"agreement", "entity_micro_f1", "entity_micro_f1_drop", "passed"} <= set(int8)

    # Gate: the type's floor on entity micro-F1.
    gate = json.loads(paths["gate_report"].read_text())
    assert gate["mode"] == "first_model" and "entity_micro_f1" in gate["challenger"]
    assert "min_entity_f1" in {c["name"] for c in gate["checks"]}
