"""The whole lifecycle once with entities (model.task token_classification), as `gradus lifecycle` runs it after
`gradus run`: the training flow makes the first champion on the demo's support messages with entities marked, then
the same code as the demo serves it, replays message traffic whose entities come back as feedback spans, retrains on
that feedback, releases the retrained candidate through shadow and a canary step judged on entity agreement, type
frequencies and online entity F1, and reports drift with the entity signals. Short windows and a toy model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from gradus.registry.versions import open_registry
from gradus.task_types.token_classification import TASK
from tests.conftest import set_params
from tests.helpers.lifecycle import first_champion_then_lifecycle, judged_checks

pytestmark = pytest.mark.slow

# The release's windows for a test (seconds, not minutes) and limits a toy model retrained on other data clears;
# a worse entity candidate's rollback on these checks is tests/serving/test_release.py's.
WINDOWS = {"canary_steps": (0.5,), "min_dwell_s": 2, "min_requests": 40, "min_samples": 40, "check_interval_s": 1.5,
           "min_feedback": 20, "max_step_s": 90, "min_agreement": 0.3, "max_label_js": 0.5,
           "max_confidence_drop": 0.5, "latency_slack_ms": 2000, "max_accuracy_drop": 0.5}


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_entities_go_through_the_whole_lifecycle(prefect_server, project_repo: Path) -> None:
    set_params(project_repo / "params.yaml", {
        "model.task": TASK.name, "data.sources.0.rows": 600, "train.max_length": 24, "entities.stride": 4,
        # A toy model: a floor it clears, and a retrain judged non-inferior within a wide margin (the gate's
        # entity comparisons are tests/unit's).
        "gate.min_entity_f1": 0.2, "gate.margin": 0.5, "gate.max_class_recall_drop": 1.0,
        "evaluate.behavioral.min_stability": {"case": 0.2, "punctuation": 0.2, "typo": 0.2, "swap": 0.2},
        "serving.device": "cpu", "serving.threads": 1})
    champion, outcome, said, feedback = first_champion_then_lifecycle(project_repo, TASK.name, "entity_micro_f1",
                                                                     WINDOWS)
    assert len(feedback) > 300
    for text, spans in zip(feedback["text"], feedback["label"], strict=True):
        assert spans and all(0 <= s["start"] < s["end"] <= len(text) and s["type"] for s in spans)
    retrain = outcome["retrain"]
    assert 600 + 400 < retrain["data"]["rows_in"] <= 600 + len(feedback), retrain["data"]
    assert retrain["gate"]["passed"] and retrain["gate"]["mode"] == "challenger", retrain["gate"]
    gate = json.loads((Path(retrain["workspace"]["path"]) / "reports" / "gate.json").read_text())
    assert {"entity_f1_non_inferiority", "per_type_f1"} <= {c["name"] for c in gate["checks"]}
    candidate = retrain["registry"]["version"]
    registry = open_registry(str(project_repo / "registry"))
    assert registry.require(candidate)["task"] == TASK.name

    # Release: judged on entity agreement, type frequencies and online entity F1, then promoted.
    assert outcome["release"]["outcome"] == "promoted", outcome["release"]
    assert registry.aliases().champion == candidate and registry.aliases().previous == champion
    judged = judged_checks(registry, candidate)
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
