"""Statistics for evaluation and the promotion gate: calibration, paired bootstrap, McNemar, perturbations."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

_TRAILING_PUNCT = re.compile(r"[.?!]+$")
_WORD = re.compile(r"[A-Za-z]{4,}")


def reliability_table(confidence: np.ndarray, correct: np.ndarray, bins: int) -> pd.DataFrame:
    """Equal-width confidence bins: rows, mean confidence and accuracy per bin (the reliability diagram)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append({"bin": b, "lower": round(float(edges[b]), 4), "upper": round(float(edges[b + 1]), 4),
                     "rows": int(mask.sum()),
                     "confidence": round(float(confidence[mask].mean()), 6) if mask.any() else None,
                     "accuracy": round(float(correct[mask].mean()), 6) if mask.any() else None})
    return pd.DataFrame(rows)


def expected_calibration_error(table: pd.DataFrame) -> float:
    """Row-weighted mean |accuracy - confidence| over the bins of a reliability table."""
    used = table[table["rows"] > 0]
    total = used["rows"].sum()
    if not total:
        return 0.0
    gaps = (used["accuracy"].astype(float) - used["confidence"].astype(float)).abs()
    return float((gaps * used["rows"]).sum() / total)


def encode(values: list[str] | pd.Series, labels: list[str]) -> np.ndarray:
    """Label names as indexes into `labels`; a name outside them is -1 (it never counts as correct)."""
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index.get(v, -1) for v in values], dtype=np.int64)


def _one_hot(codes: np.ndarray, classes: int) -> np.ndarray:
    out = np.zeros((len(codes), classes), dtype=np.float64)
    valid = codes >= 0
    out[np.flatnonzero(valid), codes[valid]] = 1.0
    return out


def weighted_macro_f1(weights: np.ndarray, actual: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Macro-F1 for each row of `weights` (a bootstrap resample as row counts), over the classes present
    in that resample: F1 = 2TP / (2TP + FP + FN). One matrix product per count, not a loop per resample."""
    truth, guess = _one_hot(actual, classes), _one_hot(predicted, classes)
    tp = weights @ (truth * guess)
    support, predicted_n = weights @ truth, weights @ guess
    present = support > 0
    f1 = np.where(present, 2 * tp / np.maximum(support + predicted_n, 1e-12), np.nan)
    return np.nanmean(f1, axis=1)


def z_value(confidence: float) -> float:
    """Two-sided normal quantile for a confidence level (0.95 -> 1.96)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def paired_difference(candidate: np.ndarray, champion: np.ndarray, z: float) -> tuple[float, float, float]:
    """Mean of candidate - champion (per-item scores on the same items) with a normal interval."""
    return mean_interval(candidate.astype(float) - champion.astype(float), z)


def mean_interval(values: np.ndarray, z: float) -> tuple[float, float, float]:
    """The mean of per-item values with a normal interval (mean ± z·se; no interval from one item)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("inf")
    return mean, mean - z * se, mean + z * se


@dataclass(frozen=True)
class BootstrapResult:
    delta: float  # challenger - champion on the full test split
    low: float
    high: float
    samples: int
    confidence: float


def paired_bootstrap(actual: np.ndarray, champion: np.ndarray, challenger: np.ndarray, classes: int,
                     samples: int, confidence: float, seed: int) -> BootstrapResult:
    """Percentile CI of (challenger - champion) macro-F1, both scored on the same resampled rows each time."""
    def delta(weights: np.ndarray) -> np.ndarray:
        return (weighted_macro_f1(weights, actual, challenger, classes)
                - weighted_macro_f1(weights, actual, champion, classes))

    return paired_bootstrap_of(delta, len(actual), samples, confidence, seed)


def paired_bootstrap_of(delta: Callable[[np.ndarray], np.ndarray], n: int, samples: int, confidence: float,
                        seed: int) -> BootstrapResult:
    """Percentile CI of a paired difference of two models' scores over n texts. `delta(weights)` scores both models
    on each row of `weights` (a resample as counts per text, shape resamples x n) and returns the differences; the
    full test split is the all-ones row. A task type supplies its own metric through `delta`."""
    point = float(delta(np.ones((1, n)))[0])
    rng = np.random.default_rng(seed)
    deltas = []
    for start in range(0, samples, 250):  # chunks keep the weight matrix small
        k = min(250, samples - start)
        draws = rng.integers(0, n, size=(k, n))
        weights = np.bincount((draws + np.arange(k)[:, None] * n).ravel(), minlength=k * n).reshape(k, n)
        deltas.append(delta(weights.astype(np.float64)))
    values = np.concatenate(deltas)
    tail = (1 - confidence) / 2
    return BootstrapResult(point, float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail)),
                           samples, confidence)


def mcnemar_exact(champion_correct: np.ndarray, challenger_correct: np.ndarray) -> dict[str, float]:
    """Exact (binomial) McNemar test on the discordant pairs; p = 1 when the models never disagree."""
    from scipy.stats import binomtest

    only_champion = int(np.sum(champion_correct & ~challenger_correct))
    only_challenger = int(np.sum(~champion_correct & challenger_correct))
    discordant = only_champion + only_challenger
    p = 1.0 if discordant == 0 else float(binomtest(min(only_champion, only_challenger), discordant, 0.5).pvalue)
    return {"only_champion_correct": only_champion, "only_challenger_correct": only_challenger,
            "p_value": min(1.0, p)}


def recall_by_class(actual: np.ndarray, predicted: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(support, recall) per class index."""
    support = np.bincount(actual[actual >= 0], minlength=classes)
    hits = np.bincount(actual[(actual >= 0) & (actual == predicted)], minlength=classes)
    return support, np.divide(hits, support, out=np.zeros(classes), where=support > 0)


# Behavioral (CheckList-style) invariance: a perturbation that should not change what the text asks.

def change_case(text: str) -> str:
    """All upper case (all lower case if it already is)."""
    upper = text.upper()
    return upper if upper != text else text.lower()


def toggle_trailing_punctuation(text: str) -> str:
    """Drop trailing . ? ! if there are any, else add a '?'."""
    stripped = _TRAILING_PUNCT.sub("", text.rstrip())
    return stripped if stripped != text.rstrip() else text.rstrip() + "?"


def small_typo(text: str, rng: np.random.Generator) -> str | None:
    """Swap two adjacent inner letters of one word of 4+ letters; None if the text has no such word."""
    words = list(_WORD.finditer(text))
    if not words:
        return None
    word = words[int(rng.integers(len(words)))]
    i = word.start() + 1 + int(rng.integers(len(word.group()) - 2))
    if text[i] == text[i + 1]:
        return None
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def precision_recall_rows(truth: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                          points: int = 51) -> list[dict[str, Any]]:
    """Each label's precision-recall curve, thinned to at most `points` thresholds (rows for a DVC plot:
    label, threshold, precision, recall); a label without positives has no curve."""
    from sklearn.metrics import precision_recall_curve

    rows = []
    for c, label in enumerate(labels):
        if not truth[:, c].any():
            continue
        precision, recall, thresholds = precision_recall_curve(truth[:, c], scores[:, c])
        keep = np.unique(np.linspace(0, len(thresholds) - 1, min(points, len(thresholds))).round().astype(int))
        rows.extend({"label": label, "threshold": round(float(thresholds[i]), 4),
                     "precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4)}
                    for i in keep)
    return rows
