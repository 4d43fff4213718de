"""Gate statistics and rules on constructed predictions whose right answers are known independently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from gradus.config.pipeline import GateConfig
from gradus.scoring import (
    change_case,
    encode,
    expected_calibration_error,
    mcnemar_exact,
    paired_bootstrap,
    reliability_table,
    small_typo,
    toggle_trailing_punctuation,
    weighted_macro_f1,
)
from tasks.gate import Champion, gate_markdown, gate_numbers, verdict

LABELS = [f"c{i}" for i in range(6)]


def noisy(actual: np.ndarray, error_rate: float, seed: int, classes: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(actual)) < error_rate
    return np.where(wrong, (actual + rng.integers(1, classes, len(actual))) % classes, actual)


def test_macro_f1_matches_scikit_learn_on_the_full_sample() -> None:
    rng = np.random.default_rng(0)
    actual = rng.integers(0, 6, 500)
    predicted = noisy(actual, 0.3, 1)
    ours = weighted_macro_f1(np.ones((1, 500)), actual, predicted, 6)[0]
    assert ours == pytest.approx(f1_score(actual, predicted, average="macro"), abs=1e-12)


def test_paired_bootstrap_is_zero_for_identical_models_and_brackets_a_real_gain() -> None:
    actual = np.random.default_rng(2).integers(0, 6, 800)
    champion = noisy(actual, 0.3, 3)
    same = paired_bootstrap(actual, champion, champion.copy(), 6, 500, 0.95, 0)
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0)
    better = paired_bootstrap(actual, champion, noisy(actual, 0.1, 4), 6, 500, 0.95, 0)
    assert 0 < better.low < better.delta < better.high
    again = paired_bootstrap(actual, champion, noisy(actual, 0.1, 4), 6, 500, 0.95, 0)
    assert again == better  # seeded: the verdict is reproducible


def test_bootstrap_interval_covers_the_true_difference_at_about_its_nominal_rate() -> None:
    """Draw many test sets from one population where the challenger is truly 5 points worse on accuracy."""
    rng = np.random.default_rng(5)
    covered, trials = 0, 60
    population = rng.integers(0, 6, 200_000)
    champ_pop, chall_pop = noisy(population, 0.2, 6), noisy(population, 0.25, 7)
    truth = (weighted_macro_f1(np.ones((1, len(population))), population, chall_pop, 6)[0]
             - weighted_macro_f1(np.ones((1, len(population))), population, champ_pop, 6)[0])
    for trial in range(trials):
        rows = rng.integers(0, len(population), 600)
        ci = paired_bootstrap(population[rows], champ_pop[rows], chall_pop[rows], 6, 400, 0.95, trial)
        covered += ci.low <= truth <= ci.high
    assert covered / trials >= 0.85


def test_mcnemar_exact_matches_the_binomial_test() -> None:
    champion = np.array([True] * 10 + [False] * 2 + [True] * 50)
    challenger = np.array([False] * 10 + [True] * 2 + [True] * 50)
    result = mcnemar_exact(champion, challenger)
    assert result["only_champion_correct"] == 10 and result["only_challenger_correct"] == 2
    assert result["p_value"] == pytest.approx(binomtest(2, 12, 0.5).pvalue)
    assert mcnemar_exact(champion, champion)["p_value"] == 1.0


def _behavioral(rate: float = 1.0) -> dict:
    return {"case": {"rows": 100, "stability": rate, "min_stability": 0.95, "passed": rate >= 0.95}}


def _metrics(accuracy: float, latency_ms: float = 5.0) -> dict:
    return {"accuracy": accuracy, "macro_f1": accuracy, "latency": {"batch1_p95_ms": latency_ms, "device": "cpu"}}


def _names(report: dict, passed: bool) -> list[str]:
    return [c["name"] for c in report["checks"] if c["passed"] is passed]


def test_first_model_is_judged_on_absolute_thresholds_behavior_and_latency() -> None:
    cfg = GateConfig(min_accuracy=0.8, min_macro_f1=0.8, max_latency_ms_p95=50)
    ok = verdict(_metrics(0.9), _behavioral(), ["a"], ["a"], ["a"], None, cfg)
    assert ok["passed"] and ok["mode"] == "first_model" and not ok["reasons"]
    bad = verdict(_metrics(0.7, latency_ms=80), _behavioral(0.5), ["a"], ["a"], ["a"], None, cfg)
    assert not bad["passed"]
    assert set(_names(bad, False)) == {"min_accuracy", "min_macro_f1", "behavioral_case", "latency_p95"}
    assert any("80.0 ms" in r and "gate.max_latency_ms_p95 50" in r for r in bad["reasons"])


def _labels(codes: np.ndarray) -> list[str]:
    return [LABELS[i] for i in codes]


def test_scrambling_one_class_fails_the_per_class_rule_naming_that_class() -> None:
    actual = np.repeat(np.arange(6), 100)
    champion = noisy(actual, 0.05, 8)
    challenger = champion.copy()
    rng = np.random.default_rng(9)
    scrambled = actual == 2
    challenger[scrambled] = rng.choice([0, 1, 3, 4, 5], scrambled.sum())  # class c2 lost entirely
    cfg = GateConfig(min_accuracy=0.0, min_macro_f1=0.0, margin=0.5, bootstrap_samples=300)
    report = verdict(_metrics(0.8), _behavioral(), _labels(actual), _labels(challenger), LABELS,
                     Champion("v1", LABELS, _labels(champion)), cfg)
    assert not report["passed"]
    assert _names(report, False) == ["per_class_recall"]  # a wide margin lets the macro-F1 rule pass
    assert report["per_class"][0]["label"] == "c2" and report["per_class"][0]["recall_challenger"] == 0.0
    assert "c2 0.9" in report["reasons"][0]
    numbers = gate_numbers(report)
    assert numbers["passed"] == 0 and numbers["worst_class_recall_drop"] > 0.9
    assert "| per_class_recall | **FAIL** |" in gate_markdown(report)


def test_identical_challenger_passes_and_a_worse_one_fails_on_macro_f1() -> None:
    actual = np.repeat(np.arange(6), 80)
    champion = noisy(actual, 0.1, 10)
    cfg = GateConfig(min_accuracy=0.0, min_macro_f1=0.0, bootstrap_samples=500)
    same = verdict(_metrics(0.9), _behavioral(), _labels(actual), _labels(champion), LABELS,
                   Champion("v1", LABELS, _labels(champion)), cfg)
    assert same["passed"] and same["bootstrap"]["low"] == 0.0 and same["mcnemar"]["p_value"] == 1.0
    worse = verdict(_metrics(0.7), _behavioral(), _labels(actual), _labels(noisy(actual, 0.3, 11)), LABELS,
                    Champion("v1", LABELS, _labels(champion)), cfg)
    assert "macro_f1_non_inferiority" in _names(worse, False)
    assert worse["bootstrap"]["high"] < 0 and worse["mcnemar"]["p_value"] < 1e-6


def test_a_new_label_is_reported_excluded_from_the_comparison_and_gated_by_params() -> None:
    actual = ["a"] * 30 + ["b"] * 30 + ["new"] * 10
    predicted = actual.copy()
    champion = Champion("v1", ["a", "b"], ["a"] * 30 + ["b"] * 30 + ["a"] * 10)
    strict = verdict(_metrics(1.0), _behavioral(), actual, predicted, ["a", "b", "new"], champion,
                     GateConfig(min_accuracy=0, min_macro_f1=0, bootstrap_samples=200))
    assert strict["labels"] == {"shared": 2, "added": ["new"], "removed": [], "rows_compared": 60, "rows_excluded": 10}
    assert _names(strict, False) == ["new_labels"] and "gate.allow_new_labels" in strict["reasons"][0]
    allowed = verdict(_metrics(1.0), _behavioral(), actual, predicted, ["a", "b", "new"], champion,
                      GateConfig(min_accuracy=0, min_macro_f1=0, bootstrap_samples=200, allow_new_labels=True))
    assert allowed["passed"]
    removed = verdict(_metrics(1.0), _behavioral(), actual[:60], predicted[:60], ["a", "b"],
                      Champion("v1", ["a", "b", "gone"], actual[:60]), GateConfig(min_accuracy=0, min_macro_f1=0))
    assert _names(removed, False) == ["removed_labels"]


def test_calibration_error_is_zero_when_confidence_matches_accuracy() -> None:
    rng = np.random.default_rng(12)
    confidence = rng.uniform(0.05, 1.0, 200_000)
    correct = rng.random(200_000) < confidence
    assert expected_calibration_error(reliability_table(confidence, correct, 10)) < 0.01
    overconfident = reliability_table(np.full(1000, 0.95), np.arange(1000) < 600, 10)
    assert expected_calibration_error(overconfident) == pytest.approx(0.35)
    assert isinstance(overconfident, pd.DataFrame) and overconfident["rows"].sum() == 1000


def test_perturbations_change_only_what_they_claim() -> None:
    assert change_case("Where is my card?") == "WHERE IS MY CARD?"
    assert change_case("NO LETTERS 123") == "no letters 123"
    assert toggle_trailing_punctuation("Where is my card?!") == "Where is my card"
    assert toggle_trailing_punctuation("Where is my card") == "Where is my card?"
    rng = np.random.default_rng(0)
    typo = small_typo("Where is my card", rng)
    assert typo is not None and typo != "Where is my card" and sorted(typo) == sorted("Where is my card")
    assert small_typo("hi yo", rng) is None
    assert list(encode(["b", "zz"], ["a", "b"])) == [1, -1]


def test_the_gain_over_the_frozen_encoder_probe_is_reported_and_gated_when_set() -> None:
    metrics = _metrics(0.9) | {"baseline_probe": {"accuracy": 0.895, "macro_f1": 0.89}}
    reported = verdict(metrics, _behavioral(), ["a"], ["a"], ["a"], None, GateConfig())
    assert reported["passed"] and "gain_over_probe" not in _names(reported, True) + _names(reported, False)
    assert reported["challenger"]["gain_over_probe"] == pytest.approx(0.005)
    required = verdict(metrics, _behavioral(), ["a"], ["a"], ["a"], None, GateConfig(min_gain_over_probe=0.01))
    assert not required["passed"] and _names(required, False) == ["gain_over_probe"]
    assert "gain +0.0050, gate.min_gain_over_probe +0.0100" in required["reasons"][0]
    cleared = verdict(metrics, _behavioral(), ["a"], ["a"], ["a"], None, GateConfig(min_gain_over_probe=0.005))
    assert cleared["passed"]
    unmeasured = verdict(_metrics(0.9), _behavioral(), ["a"], ["a"], ["a"], None, GateConfig(min_gain_over_probe=0))
    assert not unmeasured["passed"] and "evaluate.probe: true" in unmeasured["reasons"][0]
