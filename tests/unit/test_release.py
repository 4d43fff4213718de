"""The release analysis's statistics and bookkeeping, on small hand-made windows."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from gradus.config.operations import ReleaseConfig
from gradus.config.params import load_params
from gradus.errors import ConfigError
from gradus.registry.aliases import AliasState
from gradus.release import analysis
from gradus.release.controller import Step, plan, resume_index


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = analysis.wilson(0, 100, 1.96)
    assert low == 0 and high == pytest.approx(0.0370, abs=1e-4)  # "zero errors in n bounds the rate at ~3.7/n"
    low, high = analysis.wilson(950, 1000, 1.96)
    assert (low, high) == (pytest.approx(0.9347, abs=1e-4), pytest.approx(0.9619, abs=1e-4))


def test_js_divergence_is_zero_for_equal_and_one_for_disjoint_distributions() -> None:
    assert analysis.js_divergence(Counter(a=5, b=5), Counter(a=50, b=50)) == pytest.approx(0)
    assert analysis.js_divergence(Counter(a=5), Counter(b=5)) == pytest.approx(1)


def test_counters_survive_a_service_restart() -> None:
    window = analysis.CounterWindow()
    key = ("requests", "canary", "v1", "200")
    window.observe({key: 100})
    window.observe({key: 130, ("requests", "canary", "v1", "500"): 2})
    window.observe({key: 10})  # restarted: counted from zero again
    assert window.errors("v1", ("canary",)) == (2, 42)


def pairs_frame(champion: list[str], candidate: list[str]) -> pd.DataFrame:
    rows = []
    for i, (a, b) in enumerate(zip(champion, candidate, strict=True)):
        rows.append({"request_id": f"r{i}", "text": f"t{i}", "version": "vA", "alias": "champion",
                     "predicted_label": a, "confidence": 0.9, "latency_ms": 5.0})
        rows.append({"request_id": f"r{i}", "text": f"t{i}", "version": "vB", "alias": "shadow",
                     "predicted_label": b, "confidence": 0.6, "latency_ms": 6.0})
    return pd.DataFrame(rows)


def test_agreement_divergence_and_confidence_are_judged_on_the_same_texts() -> None:
    cfg = ReleaseConfig(min_samples=50, min_agreement=0.9, max_confidence_drop=0.2)
    same = analysis.analyze(pairs_frame(["x", "y"] * 50, ["x", "y"] * 50), pd.DataFrame(columns=["request_id",
                           "text", "label"]), analysis.CounterWindow(), "vA", "vB", cfg)
    by_name = {c.name: c for c in same}
    assert by_name["agreement"].status == "pass" and by_name["agreement"].value == 1.0
    assert by_name["confidence drop"].status == "fail"  # 0.9 -> 0.6
    assert by_name["error rate"].status == "pending" and by_name["online accuracy"].status == "pending"
    swapped = analysis.analyze(pairs_frame(["x", "y"] * 50, ["y", "x"] * 50), pd.DataFrame(
        columns=["request_id", "text", "label"]), analysis.CounterWindow(), "vA", "vB", cfg)
    assert {c.name: c.status for c in swapped}["agreement"] == "fail"


def test_online_accuracy_fails_only_with_evidence() -> None:
    cfg = ReleaseConfig(min_samples=10, min_feedback=40)
    log = pairs_frame(["x"] * 60, ["y"] * 60)
    feedback = pd.DataFrame({"request_id": [f"r{i}" for i in range(60)], "text": [f"t{i}" for i in range(60)],
                             "label": ["x"] * 60})
    check = analysis.accuracy_check(analysis.pairs(log, "vA", "vB"), feedback, cfg, 1.96)
    assert check.status == "fail" and check.value == -1.0 and not check.required
    few = analysis.accuracy_check(analysis.pairs(log, "vA", "vB"), feedback.head(20), cfg, 1.96)
    assert few.status == "pending"


def test_steps_and_resume_follow_the_registry() -> None:
    steps = plan(ReleaseConfig())
    assert [s.name for s in steps] == ["shadow", "canary 5%", "canary 25%", "canary 50%"]
    assert Step("canary 25%", 0.25).key == "canary-25"
    midway = AliasState(generation=7, champion="v1", shadow="v2", canary={"version": "v2", "weight": 0.25})
    assert resume_index(midway, "v2", steps) == 2 and resume_index(midway, "v3", steps) == 0


def test_release_params_are_validated(tmp_path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("release:\n  canary_steps: [0.5, 0.25]\n")
    with pytest.raises(ConfigError, match="canary_steps must be increasing"):
        load_params(bad)
