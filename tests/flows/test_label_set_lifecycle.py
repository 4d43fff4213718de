"""The whole lifecycle once with label sets (model.task multi_label), as `gradus lifecycle` runs it after `gradus
run`: the training flow makes the first champion on the demo's support tickets, then the same code as the demo
serves it, replays ticket traffic whose label sets come back as feedback, retrains on that feedback, releases the
retrained candidate through shadow and a canary step judged on label-set agreement and online micro-F1, and reports
drift with the label-set signals. Short windows and a toy model (the settings below say which)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from gradus.registry.versions import open_registry
from gradus.task_types.multi_label import TASK
from tests.conftest import set_params
from tests.helpers.lifecycle import first_champion_then_lifecycle, judged_checks

pytestmark = pytest.mark.slow

# The release's windows for a test (seconds, not minutes) and limits a toy model retrained on other data clears;
# a worse candidate's rollback on these checks is tests/serving/test_release.py's.
WINDOWS = {"canary_steps": (0.5,), "min_dwell_s": 2, "min_requests": 40, "min_samples": 40, "check_interval_s": 1.5,
           "min_feedback": 20, "max_step_s": 90, "min_agreement": 0.3, "min_exact_agreement": 0.05,
           "max_label_js": 0.5, "max_confidence_drop": 0.5, "latency_slack_ms": 2000, "max_accuracy_drop": 0.5}


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_label_sets_go_through_the_whole_lifecycle(prefect_server, project_repo: Path) -> None:
    set_params(project_repo / "params.yaml", {
        "model.task": TASK.name, "data.sources.0.rows": 600,
        # A toy model: floors it clears, and a retrain judged non-inferior within a wide margin (the gate's
        # label-set comparisons are tests/model and tests/unit's).
        "gate.min_micro_f1": 0.2, "gate.min_macro_f1": 0.05, "gate.margin": 0.5, "gate.max_class_recall_drop": 1.0,
        "evaluate.behavioral.min_stability": {"case": 0.2, "punctuation": 0.2, "typo": 0.2},
        "serving.device": "cpu", "serving.threads": 1,
        # The frozen toy encoder's pooled embeddings with a one-vs-rest head learn the tickets' intents in seconds;
        # fine-tuned from its random weights it answers every text the same set for dozens of epochs.
        "train.method": "probe"})
    champion, outcome, said, feedback = first_champion_then_lifecycle(project_repo, TASK.name, "micro_f1", WINDOWS)
    assert len(feedback) > 300 and all(isinstance(labels, list) and labels for labels in feedback["label"])
    retrain = outcome["retrain"]
    # The demo's 600 rows and the first replay's feedback (15 s at 40/s; the release's replay came later).
    assert 600 + 400 < retrain["data"]["rows_in"] <= 600 + len(feedback), retrain["data"]
    assert retrain["gate"]["passed"] and retrain["gate"]["mode"] == "challenger", retrain["gate"]
    candidate = retrain["registry"]["version"]
    registry = open_registry(str(project_repo / "registry"))
    assert registry.require(candidate)["task"] == TASK.name

    # Release: judged on label-set agreement, exact sets, label frequencies and online micro-F1, then promoted.
    assert outcome["release"]["outcome"] == "promoted", outcome["release"]
    assert registry.aliases().champion == candidate and registry.aliases().previous == champion
    judged = judged_checks(registry, candidate)
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
