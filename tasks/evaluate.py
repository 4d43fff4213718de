"""Evaluate stage: score the trained model on the test split — quality, calibration, latency, slices and
behavioral invariance — next to a TF-IDF baseline. Writes what the gate and `dvc metrics/plots` read."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, classification_report, f1_score

from gradus.config.pipeline import EvaluateConfig, StageParams
from gradus.errors import DataError
from gradus.io import write_json, write_parquet
from gradus.modeling import Classifier, load_classifier, pick_device
from gradus.probe import probe_baseline
from gradus.scoring import (
    change_case,
    expected_calibration_error,
    reliability_table,
    small_typo,
    toggle_trailing_punctuation,
)

LATENCY_BATCH = 32


def tfidf_baseline(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """A cheap bag-of-words baseline the fine-tuned model has to beat."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(max_iter=2000, C=10.0)
    model.fit(vectorizer.fit_transform(train["text"]), train["label"])
    predicted = model.predict(vectorizer.transform(test["text"]))
    return {"accuracy": round(float(accuracy_score(test["label"], predicted)), 6),
            "macro_f1": round(float(f1_score(test["label"], predicted, average="macro")), 6)}


def score(actual: list[str], predicted: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro and weighted F1, and the per-class report."""
    report = classification_report(actual, predicted, labels=labels, output_dict=True, zero_division=0)
    per_class = {label: {k: round(float(v), 6) for k, v in report[label].items()} for label in labels}
    return {
        "accuracy": round(float(accuracy_score(actual, predicted)), 6),
        "macro_f1": round(float(f1_score(actual, predicted, labels=labels, average="macro", zero_division=0)), 6),
        "weighted_f1": round(float(f1_score(actual, predicted, labels=labels, average="weighted",
                                            zero_division=0)), 6),
        "per_class": per_class,
    }


def latency(model: Classifier, texts: list[str], samples: int) -> dict[str, float]:
    """Milliseconds per text (tokenizing included, as a service would) at batch 1 and batch 32: p50 and p95.

    At batch 32 the per-text figure is the batch's time / 32, one figure per batch.
    """
    pool = (texts * (samples // max(len(texts), 1) + 1))[:samples] if texts else []
    if not pool:
        return {}
    predict = model.predict
    predict(pool[:LATENCY_BATCH], LATENCY_BATCH)  # warm-up: first calls allocate and pick kernels
    single = []
    for text in pool:
        start = time.perf_counter()
        predict([text], 1)
        single.append((time.perf_counter() - start) * 1000)
    batched = []
    for start_index in range(0, max(samples, LATENCY_BATCH * 10), LATENCY_BATCH):
        batch = [pool[(start_index + j) % len(pool)] for j in range(LATENCY_BATCH)]
        start = time.perf_counter()
        predict(batch, LATENCY_BATCH)
        batched.append((time.perf_counter() - start) * 1000 / LATENCY_BATCH)
    return {"batch1_p50_ms": _pct(single, 50), "batch1_p95_ms": _pct(single, 95),
            f"batch{LATENCY_BATCH}_p50_ms": _pct(batched, 50), f"batch{LATENCY_BATCH}_p95_ms": _pct(batched, 95)}


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


def length_bucket(lengths: pd.Series, bounds: tuple[int, ...]) -> pd.Series:
    """'<=20', '21-40', ..., '>80' from character lengths and sorted bounds."""
    edges = sorted(bounds)
    names = [f"<={edges[0]}"] + [f"{a + 1}-{b}" for a, b in itertools.pairwise(edges)] + [f">{edges[-1]}"]
    return pd.Series(pd.cut(lengths, [-1, *edges, np.inf], labels=names), index=lengths.index).astype(str)


def slice_report(test: pd.DataFrame, predicted: list[str], labels: list[str],
                 cfg: EvaluateConfig, test_file: str) -> dict[str, Any]:
    """Rows, accuracy and macro-F1 per text-length bucket and per value of each configured column."""
    missing = [c for c in cfg.slice_columns if c not in test.columns]
    if missing:
        raise DataError(f"{test_file}: evaluate.slice_columns names {missing}, not columns of the test split "
                        f"(it has {list(test.columns)}); carry them with a source's metadata_columns or fix params")
    frame = test.assign(predicted=predicted, length=length_bucket(test["text"].str.len(), cfg.length_buckets))
    report: dict[str, Any] = {}
    for column in ("length", *cfg.slice_columns):
        groups = {}
        for value, part in frame.groupby(column, sort=True, dropna=False):
            groups[str(value)] = {
                "rows": len(part),
                "accuracy": round(float(accuracy_score(part["label"], part["predicted"])), 6),
                "macro_f1": round(float(f1_score(part["label"], part["predicted"], labels=sorted(
                    set(part["label"]) & set(labels)) or labels, average="macro", zero_division=0)), 6),
            }
        report["text_length_chars" if column == "length" else column] = groups
    return report


def behavioral(model: Classifier, texts: list[str], original: list[str], cfg: EvaluateConfig) -> dict[str, Any]:
    """Share of test rows whose prediction survives each perturbation, against params' thresholds."""
    rng = np.random.default_rng(cfg.behavioral.seed)
    rows = np.arange(len(texts))
    if len(rows) > cfg.behavioral.max_rows:
        rows = np.sort(rng.choice(rows, cfg.behavioral.max_rows, replace=False))
    perturbations = {
        "case": [change_case(texts[i]) for i in rows],
        "punctuation": [toggle_trailing_punctuation(texts[i]) for i in rows],
        "typo": [small_typo(texts[i], rng) for i in rows],
    }
    report = {}
    for name, changed in perturbations.items():
        kept = [(i, text) for i, text in zip(rows, changed, strict=True) if text is not None and text != texts[i]]
        after = model.predict([text for _, text in kept], cfg.batch_size).labels() if kept else []
        stable = sum(original[i] == label for (i, _), label in zip(kept, after, strict=True))
        rate = stable / len(kept) if kept else 1.0
        threshold = cfg.behavioral.min_stability.get(name, 0.0)
        examples = [{"text": texts[i], "perturbed": text, "before": original[i], "after": label}
                    for (i, text), label in zip(kept, after, strict=True) if label != original[i]][:5]
        report[name] = {"rows": len(kept), "stability": round(rate, 6), "min_stability": threshold,
                        "passed": rate >= threshold, "examples": examples}
    return report


@dataclass
class Evaluation:
    """Everything the evaluate stage measures about one model on one test split."""

    metrics: dict[str, Any]
    per_class: dict[str, Any]
    behavioral: dict[str, Any]
    slices: dict[str, Any]
    reliability: pd.DataFrame
    predicted: list[str]
    confidence: np.ndarray


def evaluate_model(model_dir: Path, train: pd.DataFrame, test: pd.DataFrame, params: StageParams,
                   test_file: str = "test split") -> Evaluation:
    """Score the model in model_dir on `test` (train only feeds the TF-IDF baseline)."""
    model = load_classifier(model_dir, pick_device(params.train.device), max_length=params.train.max_length)
    return evaluate_loaded(model, train, test, params, test_file)


def evaluate_loaded(model: Classifier, train: pd.DataFrame, test: pd.DataFrame, params: StageParams,
                    test_file: str = "test split") -> Evaluation:
    """Score a loaded classifier (a single model or an ensemble) on `test`."""
    cfg = params.evaluate
    labels = list(model.labels)
    texts, actual = list(test["text"]), list(test["label"])
    predictions = model.predict(texts, cfg.batch_size)
    predicted, confidence = predictions.labels(), predictions.confidence
    correct = np.array(actual) == np.array(predicted)
    result = score(actual, predicted, labels)
    reliability = reliability_table(confidence, correct, cfg.calibration_bins)
    checks = behavioral(model, texts, predicted, cfg)
    timing = latency(model, texts, cfg.latency_samples)
    majority = test["label"].value_counts(normalize=True).iloc[0] if len(test) else 0.0
    metrics = {
        "test_rows": len(test),
        "accuracy": result["accuracy"],
        "macro_f1": result["macro_f1"],
        "weighted_f1": result["weighted_f1"],
        "majority_class_accuracy": round(float(majority), 6),
        "baseline_tfidf": tfidf_baseline(train, test),
        "ece": round(expected_calibration_error(reliability), 6),
        "mean_confidence": round(float(confidence.mean()), 6) if len(texts) else 0.0,
        "latency": {"device": model.device, "bf16": model.bf16, **timing},
        "behavioral": {name: check["stability"] for name, check in checks.items()},
        "behavioral_passed": all(check["passed"] for check in checks.values()),
    }
    return Evaluation(metrics, result["per_class"], checks, slice_report(test, predicted, labels, cfg, test_file),
                      reliability, predicted, confidence)


def run(params: StageParams) -> dict[str, Any]:
    """Write metrics.json (DVC metric), per-class report, confusion and reliability rows (DVC plots),
    the slice and behavioral reports, and per-row predictions for the gate."""
    paths = params.paths
    splits = Path(paths.splits)
    train, val, test = (pd.read_parquet(splits / f"{name}.parquet") for name in ("train", "val", "test"))
    result = evaluate_model(Path(paths.model), train, test, params, str(splits / "test.parquet"))
    if params.evaluate.probe:
        result.metrics["baseline_probe"] = probe_baseline(
            params.model.base, params.model.revision, train, val, test, params.train.max_length,
            params.evaluate.batch_size, pick_device(params.train.device), params.train.seed)
    write_json(result.metrics, Path(paths.metrics))
    write_json(result.per_class, Path(paths.per_class))
    write_json(result.behavioral, Path(paths.behavioral))
    write_json(result.slices, Path(paths.slices))
    actual = list(test["label"])
    for path, frame in ((paths.confusion, pd.DataFrame({"actual": actual, "predicted": result.predicted})),
                        (paths.calibration, result.reliability.dropna())):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    write_parquet(pd.DataFrame({"actual": actual, "predicted": result.predicted, "confidence": result.confidence}),
                  Path(paths.predictions))
    return {k: result.metrics[k] for k in ("accuracy", "macro_f1", "test_rows", "ece", "baseline_probe")
            if k in result.metrics}
