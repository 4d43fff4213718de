"""The multi-label task type's scoring, decision thresholds, gate comparison and release/ensemble parts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from gradus.config.pipeline import GateConfig
from gradus.scoring import precision_recall_rows
from gradus.task_types.base import Champion
from gradus.task_types.multi_label import (
    MIN_POSITIVES_FOR_OWN_THRESHOLD,
    TASK,
    calibration_by_label,
    choose_decision,
    label_set_reason,
    multi_hot,
    normalise_label_set,
    per_label_table,
    read_label_set,
    sigmoid,
    target_key,
    thresholds_of,
    weighted_micro_f1,
)

LABELS = ["billing", "bug", "feature", "login"]


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def test_metrics_score_the_labels_over_threshold() -> None:
    truth = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=float)
    scores = np.array([[0.9, 0.2, 0.6, 0.4], [0.1, 0.8, 0.1, 0.1], [0.3, 0.1, 0.2, 0.1]])
    figures = TASK.metrics(truth, logit(scores), {})
    # At 0.5: predicted {billing, feature}, {bug}, {}: TP 2, FP 1, FN 1 -> micro-F1 4/6.
    assert figures["micro_f1"] == pytest.approx(4 / 6)
    assert figures["subset_accuracy"] == pytest.approx(2 / 3)  # the second and the empty third
    assert figures["hamming_loss"] == pytest.approx(2 / 12)
    assert figures["cardinality_true"] == pytest.approx(1.0) and figures["cardinality_predicted"] == pytest.approx(1.0)
    lowered = TASK.metrics(truth, logit(scores), {"global": 0.35})  # login's 0.4 now counts: FN 0, FP 1
    assert lowered["micro_f1"] == pytest.approx(6 / 7)
    assert TASK.primary_metric in figures


def test_bootstrap_micro_f1_on_the_full_split_is_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random((200, 6)) < 0.3).astype(float)
    predicted = np.where(rng.random((200, 6)) < 0.8, truth, 1 - truth)
    ours = weighted_micro_f1(np.ones((1, 200)), truth, predicted)[0]
    assert ours == pytest.approx(f1_score(truth, predicted, average="micro"))
    counts = np.bincount(rng.integers(0, 200, 200), minlength=200).astype(float)
    rows = np.repeat(np.arange(200), counts.astype(int))
    resampled = weighted_micro_f1(counts[None, :], truth, predicted)[0]
    assert resampled == pytest.approx(f1_score(truth[rows], predicted[rows], average="micro"))


def test_thresholds_are_chosen_per_label_on_validation_where_a_label_has_enough_positives() -> None:
    rng = np.random.default_rng(0)
    n = 400
    truth = np.zeros((n, 3))
    truth[:, 0] = rng.random(n) < 0.4
    truth[:, 1] = rng.random(n) < 0.4
    truth[:3, 2] = 1  # too few positives for a threshold of its own
    scores = np.full((n, 3), 0.05)
    # Label 0 separates at 0.3 (positives 0.32-0.4, negatives below 0.25); label 1 at 0.8.
    scores[:, 0] = np.where(truth[:, 0] == 1, rng.uniform(0.32, 0.4, n), rng.uniform(0.0, 0.25, n))
    scores[:, 1] = np.where(truth[:, 1] == 1, rng.uniform(0.82, 0.95, n), rng.uniform(0.5, 0.78, n))
    decision = choose_decision(truth, scores, ["a", "b", "rare"])
    thresholds = thresholds_of(decision, ["a", "b", "rare"])
    assert "rare" not in decision["per_label"] and "b" in decision["per_label"]  # a may keep the global one
    assert 0.25 < thresholds[0] <= 0.32 and 0.78 < thresholds[1] <= 0.82
    assert str(MIN_POSITIVES_FOR_OWN_THRESHOLD) in decision["rule"]
    assert thresholds_of(decision, ["a", "b", "rare"])[2] == decision["global"]
    decoded = TASK.decode(scores, ["a", "b", "rare"], decision)
    assert multi_hot(decoded, ["a", "b", "rare"])[:, :2].tolist() == truth[:, :2].tolist()
    only_global = choose_decision(truth, scores, ["a", "b", "rare"], per_label=False)
    assert only_global["per_label"] == {}
    worse = TASK.metrics(truth, logit(np.clip(scores, 1e-6, 1 - 1e-6)), only_global)["micro_f1"]
    better = TASK.metrics(truth, logit(np.clip(scores, 1e-6, 1 - 1e-6)), decision)["micro_f1"]
    assert better > worse


def test_per_label_thresholds_never_lower_validation_micro_f1_below_the_global_one() -> None:
    # A label the model is unsure of (positives and negatives both scored low): its own best F1 is at 0.05, where it
    # is answered for nearly every text; micro-F1 over all labels is better without that.
    rng = np.random.default_rng(1)
    n = 500
    truth = (rng.random((n, 3)) < [0.4, 0.4, 0.05]).astype(float)
    scores = np.where(truth == 1, rng.uniform(0.55, 1.0, (n, 3)), rng.uniform(0.0, 0.45, (n, 3)))
    scores[:, 2] = np.where(truth[:, 2] == 1, rng.uniform(0.04, 0.2, n), rng.uniform(0.0, 0.12, n))
    decision = choose_decision(truth, scores, ["a", "b", "unsure"])
    only_global = choose_decision(truth, scores, ["a", "b", "unsure"], per_label=False)
    micro = {name: TASK.metrics(truth, logit(np.clip(scores, 1e-6, 1 - 1e-6)), d)["micro_f1"]
             for name, d in (("per_label", decision), ("global", only_global))}
    assert micro["per_label"] >= micro["global"]
    # Each label's own best F1 would answer "unsure" at 0.05: lower micro-F1 than the rule's choice.
    own_best = {**decision, "per_label": {**decision["per_label"], "unsure": 0.05}}
    assert TASK.metrics(truth, logit(np.clip(scores, 1e-6, 1 - 1e-6)), own_best)["micro_f1"] < micro["per_label"]


def gate_case(challenger_misses: str | None) -> tuple[dict, list]:
    rng = np.random.default_rng(0)
    actual = [sorted(label for label in LABELS if rng.random() < 0.35) for _ in range(300)]
    champion = [list(answer) for answer in actual]
    for i in range(0, 300, 10):  # both models make the same few mistakes
        champion[i] = champion[i][1:]
    challenger = [[label for label in answer if label != challenger_misses] for answer in champion]
    cfg = GateConfig(bootstrap_samples=500)
    return TASK.compare(actual, challenger, Champion("v1", LABELS, champion, "multi_label"), LABELS, cfg)


def test_the_gate_passes_an_equal_challenger_and_fails_one_that_loses_a_label() -> None:
    info, checks = gate_case(None)
    assert all(check.passed for check in checks), checks
    assert info["bootstrap"]["delta"] == 0.0 and info["scores"]["challenger"] == info["scores"]["champion"]
    info, checks = gate_case("login")
    failed = {check.name: check.detail for check in checks if not check.passed}
    assert set(failed) == {"micro_f1_non_inferiority", "per_label_recall"}
    assert "login" in failed["per_label_recall"] and info["bootstrap"]["high"] < 0
    assert info["per_label"][0]["label"] == "login" and info["per_label"][0]["recall_challenger"] == 0.0


def test_label_changes_are_checked_and_only_shared_labels_scored() -> None:
    actual = [["billing", "bug"], ["login"], []]
    _, checks = TASK.compare(actual, [["billing", "bug"], ["login", "refund"], []],
                             Champion("v1", ["billing", "bug", "login"], [["billing"], ["login"], []]),
                             ["billing", "bug", "login", "refund"], GateConfig(bootstrap_samples=100))
    new_labels = next(check for check in checks if check.name == "new_labels")
    assert not new_labels.passed and "refund" in new_labels.detail


def test_agreement_is_the_jaccard_index_and_frequencies_count_texts() -> None:
    left = [["a", "b"], ["a"], [], ["c"]]
    right = [["a"], ["a"], [], ["d"]]
    assert TASK.agreement(left, right).tolist() == [0.5, 1.0, 1.0, 0.0]
    assert TASK.frequencies([["a", "b"], ["a", "a"], []]) == {"a": 2, "b": 1}


def test_soft_voting_averages_sigmoid_scores() -> None:
    one, two = sigmoid(np.array([[2.0, -2.0]])), sigmoid(np.array([[0.0, 0.0]]))
    voted = TASK.average([one, two], [3.0, 1.0])
    assert voted == pytest.approx((3 * one + two) / 4)
    assert ((voted >= 0) & (voted <= 1)).all()


def test_label_cells_read_as_sets_from_arrays_and_separated_strings() -> None:
    assert read_label_set('["bug", "login"]', "array", "|") == (["bug", "login"], None)
    assert read_label_set("bug|login", None, "|") == (["bug", "login"], None)
    assert read_label_set("bug;login", None, ";") == (["bug", "login"], None)
    assert read_label_set(None, None, "|") == ([], None) and read_label_set("  ", None, "|") == ([], None)
    labels, reason = read_label_set('["bug", 7]', "array", "|")
    assert labels is None and "non-string" in reason and '["bug", 7]' in reason
    labels, reason = read_label_set("42", "number", "|")
    assert labels is None and "JSON number" in reason


def test_normalising_trims_folds_case_and_counts_duplicates() -> None:
    assert normalise_label_set([" Bug", "login", "bug ", "", "LOGIN"], "lower") == (["bug", "login"], 2)
    assert normalise_label_set(["Bug", "bug"], "keep") == (["Bug", "bug"], 0)
    assert target_key(["login", "bug"]) == target_key(["bug", "login"]) == "bug|login"


def test_label_sets_outside_the_allowed_labels_or_cardinality_have_a_reason() -> None:
    allowed = {"bug", "login", "billing"}
    assert label_set_reason(["bug"], allowed, 1, 2, False) is None
    assert "unknown label(s) ['refund']" in label_set_reason(["bug", "refund"], allowed, 1, 2, False)
    assert "more than multi_label.max_labels=2" in label_set_reason(["billing", "bug", "login"], allowed, 1, 2, False)
    assert "empty label set" in label_set_reason([], allowed, 1, 2, False)
    assert label_set_reason([], allowed, 1, 2, True) is None
    assert "fewer than multi_label.min_labels=2" in label_set_reason(["bug"], None, 2, None, False)


def scored_texts(rows: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Truth for 3 labels and scores that are calibrated probabilities (a label holds with its score's chance)."""
    rng = np.random.default_rng(3)
    scores = rng.uniform(0, 1, (rows, 3))
    return (rng.uniform(0, 1, (rows, 3)) < scores).astype(float), scores


def test_per_label_figures_are_scikit_learns() -> None:
    truth, scores = scored_texts()
    predicted = (scores >= 0.5).astype(float)
    table = per_label_table(truth, predicted, ["a", "b", "c"])
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, zero_division=0)
    assert [row["support"] for row in table] == support.tolist()
    assert [row["precision"] for row in table] == pytest.approx(precision, abs=1e-4)
    assert [row["recall"] for row in table] == pytest.approx(recall, abs=1e-4)
    assert [row["f1"] for row in table] == pytest.approx(f1, abs=1e-4)


def test_precision_recall_curves_are_thinned_per_label_and_skip_labels_without_positives() -> None:
    truth, scores = scored_texts()
    truth[:, 2] = 0
    rows = precision_recall_rows(truth, scores, ["a", "b", "c"], points=21)
    by_label = {label: [r for r in rows if r["label"] == label] for label in ("a", "b", "c")}
    assert 10 < len(by_label["a"]) <= 21 and by_label["c"] == []
    recalls = [r["recall"] for r in by_label["a"]]
    assert recalls == sorted(recalls, reverse=True)  # a higher threshold never finds more


def test_calibration_per_label_tells_calibrated_scores_from_overconfident_ones() -> None:
    truth, scores = scored_texts(3000)
    calibrated = calibration_by_label(truth, scores, ["a", "b", "c"], bins=10)
    overconfident = calibration_by_label(truth, (scores > 0.5).astype(float), ["a", "b", "c"], bins=10)
    assert max(calibrated.values()) < 0.05 and min(overconfident.values()) > 0.2


def test_drift_signals_hold_cardinality_and_each_labels_score() -> None:
    scores = np.array([[0.9, 0.7, 0.1], [0.2, 0.1, 0.3]])
    frame = TASK.prediction_signals(scores, ["a", "b", "c"], {"global": 0.5, "per_label": {"c": 0.25}})
    assert frame["label_cardinality"].tolist() == [2, 1]
    assert list(frame.columns) == ["label_cardinality", "label_scores:a", "label_scores:b", "label_scores:c"]
    assert frame["label_scores:c"].tolist() == [0.1, 0.3]
