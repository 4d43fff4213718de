"""The whole lifecycle once per task type beside classification (whose own is the demo's and tests/flows'), as `gradus
lifecycle` runs it after `gradus run`: the training flow makes the first champion on the type's demo data, then the
same code as the demo serves it, replays traffic whose answers come back as feedback (label sets; entity spans),
retrains on that feedback, releases the retrained candidate through shadow and a canary step judged on the type's
agreement and online figure, and reports drift with the type's signals. Short windows and a toy model (the settings
below say which). One module, so both share one Prefect server."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

from gradus.task_types.multi_label import TASK as LABEL_SETS
from gradus.task_types.token_classification import TASK as ENTITIES
from tests.conftest import set_params
from tests.helpers.lifecycle import first_champion_then_lifecycle, promoted_retrain

pytestmark = pytest.mark.slow

# The release's windows for a test (seconds, not minutes) and limits a toy model retrained on other data clears;
# a worse candidate's rollback on these checks is tests/serving/test_release.py's.
ENTITY_WINDOWS = {"canary_steps": (0.5,), "min_dwell_s": 2, "min_requests": 40, "min_samples": 40,
                  "check_interval_s": 1.5, "min_feedback": 20, "max_step_s": 90, "min_agreement": 0.3,
                  "max_label_js": 0.5, "max_confidence_drop": 0.5, "latency_slack_ms": 2000, "max_accuracy_drop": 0.5}
LABEL_SET_WINDOWS = {**ENTITY_WINDOWS, "min_exact_agreement": 0.05}


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_label_sets_go_through_the_whole_lifecycle(prefect_server, project_repo: Path) -> None:
    set_params(project_repo / "params.yaml", {
        "model.task": LABEL_SETS.name, "data.sources.0.rows": 600,
        # A toy model: floors it clears, and a retrain judged non-inferior within a wide margin (the gate's
        # label-set comparisons are tests/model and tests/unit's).
        "gate.min_micro_f1": 0.2, "gate.min_macro_f1": 0.05, "gate.margin": 0.5, "gate.max_class_recall_drop": 1.0,
        "evaluate.behavioral.min_stability": {"case": 0.2, "punctuation": 0.2, "typo": 0.2},
        "serving.device": "cpu", "serving.threads": 1,
        # The frozen toy encoder's pooled embeddings with a one-vs-rest head learn the tickets' intents in seconds;
        # fine-tuned from its random weights it answers every text the same set for dozens of epochs.
        "train.method": "probe"})
    champion, outcome, said, feedback = first_champion_then_lifecycle(project_repo, LABEL_SETS.name, "micro_f1",
                                                                      LABEL_SET_WINDOWS)
    assert len(feedback) > 300 and all(isinstance(labels, list) and labels for labels in feedback["label"])
    retrain, candidate, judged = promoted_retrain(project_repo, outcome, champion, LABEL_SETS.name, feedback)

    # Release: judged on label-set agreement, exact sets, label frequencies and online micro-F1, then promoted.
    for name in ("agreement (mean Jaccard)", "exact-set agreement", "label divergence (JS)", "online micro-F1"):
        assert name in judged, (name, sorted(judged))
    assert 0 < judged["exact-set agreement"]["value"] <= judged["agreement (mean Jaccard)"]["value"] <= 1
    assert "paired bootstrap" in judged["online micro-F1"]["detail"]
    assert "now served by champion " + candidate in said and "→ [" in said  # a label set, in brackets

    # Drift on the served tickets: the label-set signals measured beside every type's.
    drift = outcome["drift"]
    signals = drift["signals"]
    assert {"predicted_label", "confidence", "embeddings", "label_cardinality", "label_scores"} <= set(signals)
    assert set(drift.get("not_measured", {})) == {"entity_count", "span_score"}  # entities' own signals
    scores = signals["label_scores"]
    assert scores["combined"].endswith("(Bonferroni)") and scores["worst"] in json.loads(
        (Path(retrain["workspace"]["path"]) / "models" / "candidate" / "labels.json").read_text())["labels"]
    assert 0 <= scores["score"] <= 1 and signals["label_cardinality"]["method"] == "ks"


def test_entities_go_through_the_whole_lifecycle(prefect_server, project_repo: Path) -> None:
    set_params(project_repo / "params.yaml", {
        "model.task": ENTITIES.name, "data.sources.0.rows": 600, "train.max_length": 16, "entities.stride": 4,
        "compress.enabled": True, "compress.max_accuracy_drop": 0.05,
        # A toy model: a floor it clears, and a retrain judged non-inferior within a wide margin (the gate's
        # entity comparisons are tests/unit's).
        "gate.min_entity_f1": 0.2, "gate.margin": 0.5, "gate.max_class_recall_drop": 1.0,
        "evaluate.behavioral.min_stability": {"case": 0.2, "punctuation": 0.2, "typo": 0.2, "swap": 0.2},
        "serving.device": "cpu", "serving.threads": 1})
    champion, outcome, said, feedback = first_champion_then_lifecycle(project_repo, ENTITIES.name, "entity_micro_f1",
                                                                     ENTITY_WINDOWS, first_entity_run)
    assert len(feedback) > 300
    for text, spans in zip(feedback["text"], feedback["label"], strict=True):
        assert spans and all(0 <= s["start"] < s["end"] <= len(text) and s["type"] for s in spans)
    retrain, candidate, judged = promoted_retrain(project_repo, outcome, champion, ENTITIES.name, feedback)
    gate = json.loads((Path(retrain["workspace"]["path"]) / "reports" / "gate.json").read_text())
    assert {"entity_f1_non_inferiority", "per_type_f1"} <= {c["name"] for c in gate["checks"]}

    # Release: judged on entity agreement, type frequencies and online entity F1, then promoted.
    for name in ("agreement (entity F1)", "label divergence (JS)", "online entity micro-F1"):
        assert name in judged, (name, sorted(judged))
    assert 0 < judged["agreement (entity F1)"]["value"] <= 1
    assert "paired bootstrap" in judged["online entity micro-F1"]["detail"]
    assert "now served by champion " + candidate in said and "→ [" in said  # entities, in brackets

    # Drift: the entity signals measured on the champion's answers; the other types' signals named as not measured.
    drift = outcome["drift"]
    signals = drift["signals"]
    assert {"predicted_label", "confidence", "embeddings", "entity_count", "span_score"} <= set(signals)
    assert set(drift["not_measured"]) == {"label_cardinality", "label_scores"}
    assert signals["entity_count"]["method"] == "ks" and 0 <= signals["span_score"]["score"] <= 1
    # The prediction log keeps each answer's spans (Parquet), offsets into the text as sent.
    log = pd.concat([pd.read_parquet(path) for path in (project_repo / "data" / "predictions").rglob("*.parquet")])
    assert len(log) > 600 and sum(len(spans) for spans in log["predicted_label"]) > len(log)
    for text, spans in zip(log["text"], log["predicted_label"], strict=True):
        assert all(text[e["start"]:e["end"]] == e["text"] for e in spans)


def first_entity_run(workspace: Path) -> None:
    """What the first entity run's stages wrote (`dvc repro` through the flow, in its workspace): the demo's malformed
    rows quarantined with their reasons, spans in the splits, a token head read in 16-token windows (the demo's
    longer messages come in several), entity figures beside the dictionary baseline, answers whose offsets hold, the
    swap check, ONNX and int8 parity on entities, the type's gate floor."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    paths = {key: workspace / value for key, value in params["paths"].items()}

    # Validate: the demo's malformed entity rows are quarantined with their reasons; nothing is lost.
    report = json.loads(paths["validation_report"].read_text())
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"] == 600
    quarantined = [json.loads(line) for line in paths["quarantine"].read_text().splitlines()]
    reasons = " | ".join(row["reasons"] for row in quarantined)
    for words in ("is outside the text (length 13)", "says '4243' but the text there is '4242'", "overlap",
                  "entity type(s) ['vendor']", "[4, 4) is empty"):
        assert words in reasons, words

    # Split: spans in every split, character offsets into the text as written.
    train = pd.read_parquet(paths["splits"] / "train.parquet")
    spans = ENTITIES.targets(train)
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
        ) > 0.8 and len(confusion) >= sum(len(ENTITIES.targets(test)[i]) for i in range(len(test)))
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
