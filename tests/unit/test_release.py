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


def pairs_frame(champion: list, candidate: list, candidate_confidence: float = 0.6) -> pd.DataFrame:
    rows = []
    for i, (a, b) in enumerate(zip(champion, candidate, strict=True)):
        rows.append({"request_id": f"r{i}", "text": f"t{i}", "version": "vA", "alias": "champion",
                     "predicted_label": a, "confidence": 0.9, "latency_ms": 5.0})
        rows.append({"request_id": f"r{i}", "text": f"t{i}", "version": "vB", "alias": "shadow",
                     "predicted_label": b, "confidence": candidate_confidence, "latency_ms": 6.0})
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


def set_pairs(champion: list[list[str]], candidate: list[list[str]], tmp_path) -> pd.DataFrame:
    """A prediction log of label sets, read back from Parquet as the release reads it (lists come back as
    arrays)."""
    pairs_frame(champion, candidate, candidate_confidence=0.9).to_parquet(tmp_path / "log.parquet")
    return pd.read_parquet(tmp_path / "log.parquet")


def test_label_sets_are_judged_by_mean_jaccard_and_exact_set_agreement(tmp_path) -> None:
    cfg = ReleaseConfig(min_samples=50, min_agreement=0.75, min_exact_agreement=0.7)
    none = pd.DataFrame(columns=["request_id", "text", "label"])
    champion = [["card", "urgent"], ["refund"], []] * 40
    same = {c.name: c for c in analysis.analyze(set_pairs(champion, champion, tmp_path), none,
                                                analysis.CounterWindow(), "vA", "vB", cfg, "multi_label")}
    assert same["agreement (mean Jaccard)"].status == "pass" and same["agreement (mean Jaccard)"].value == 1.0
    assert same["exact-set agreement"].status == "pass" and same["label divergence (JS)"].value == 0.0
    assert same["online micro-F1"].status == "pending"
    # The candidate drops "urgent" from every ticket that has it: a third of the texts differ, by half their set.
    fewer = [[label for label in labels if label != "urgent"] for labels in champion]
    judged = {c.name: c for c in analysis.analyze(set_pairs(champion, fewer, tmp_path), none,
                                                  analysis.CounterWindow(), "vA", "vB", cfg, "multi_label")}
    assert judged["agreement (mean Jaccard)"].value == pytest.approx(1 - 0.5 / 3, abs=1e-4)
    assert judged["agreement (mean Jaccard)"].status == "pass"  # 0.833 ± 0.042: above 0.75
    assert judged["exact-set agreement"].value == pytest.approx(2 / 3, abs=1e-4)
    assert judged["exact-set agreement"].status == "fail"  # 80/120: its lower bound under 0.7
    assert judged["label divergence (JS)"].value > 0.05  # "urgent" vanished from the answers


def test_online_micro_f1_of_label_sets_fails_only_with_evidence(tmp_path) -> None:
    cfg = ReleaseConfig(min_samples=10, min_feedback=40)
    truth = [["card", "urgent"], ["refund"]] * 30
    worse = [["card"], []] * 30  # recall 1/3 of the champion's
    paired = analysis.pairs(set_pairs(truth, worse, tmp_path), "vA", "vB")
    feedback = pd.DataFrame({"request_id": [f"r{i}" for i in range(60)], "text": [f"t{i}" for i in range(60)],
                             "label": truth})
    check = analysis.accuracy_check(paired, feedback, cfg, 1.96, "multi_label")
    assert check.name == "online micro-F1" and check.status == "fail" and not check.required
    assert check.value == pytest.approx(0.5 - 1.0, abs=1e-4)  # micro-F1 2·1/(1+3) = 0.5 vs 1.0
    assert "paired bootstrap" in check.detail
    same = analysis.accuracy_check(analysis.pairs(set_pairs(truth, truth, tmp_path), "vA", "vB"), feedback, cfg,
                                   1.96, "multi_label")
    assert same.status == "pass" and same.value == 0.0
    assert analysis.accuracy_check(paired, feedback.head(20), cfg, 1.96, "multi_label").status == "pending"
