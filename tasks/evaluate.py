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

from gradus.config.pipeline import EvaluateConfig, StageParams
from gradus.errors import DataError
from gradus.io import write_json, write_parquet
from gradus.modeling import Classifier, load_classifier, pick_device
from gradus.probe import probe_baseline
from gradus.scoring import change_case, small_typo, toggle_trailing_punctuation
from gradus.task_types.seam import DEFAULT_TASK, task_type

LATENCY_BATCH = 32


def tfidf_baseline(train: pd.DataFrame, test: pd.DataFrame, task: str = DEFAULT_TASK,
                   val: pd.DataFrame | None = None) -> dict[str, float]:
    """A cheap bag-of-words baseline the fine-tuned model has to beat (the task type's: gradus/task_types)."""
    return task_type(task).baseline(train, val if val is not None else train.iloc[:0], test)


def score(actual: list[Any], predicted: list[Any], labels: list[str], task: str = DEFAULT_TASK) -> dict[str, Any]:
    """The task type's figures of answers without scores (one label per text: accuracy, macro and weighted F1),
    and the per-label report as `per_class`."""
    figures, per_label = task_type(task).answer_figures(actual, predicted, labels)
    return {**figures, "per_class": per_label}


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


def slice_report(test: pd.DataFrame, predicted: list[Any], labels: list[str],
                 cfg: EvaluateConfig, test_file: str, task: str = DEFAULT_TASK) -> dict[str, Any]:
    """Rows and the task type's slice figures (accuracy and macro-F1 for one label per text) per text-length
    bucket and per value of each configured column."""
    missing = [c for c in cfg.slice_columns if c not in test.columns]
    if missing:
        raise DataError(f"{test_file}: evaluate.slice_columns names {missing}, not columns of the test split "
                        f"(it has {list(test.columns)}); carry them with a source's metadata_columns or fix params")
    kind = task_type(task)
    frame = test.assign(predicted=predicted, length=length_bucket(test["text"].str.len(), cfg.length_buckets))
    report: dict[str, Any] = {}
    for column in ("length", *cfg.slice_columns):
        groups = {}
        for value, part in frame.groupby(column, sort=True, dropna=False):
            groups[str(value)] = {"rows": len(part), **kind.slice_scores(kind.targets(part),
                                                                         list(part["predicted"]), labels)}
        report["text_length_chars" if column == "length" else column] = groups
    return report


def behavioral(model: Classifier, texts: list[str], original: list[Any], cfg: EvaluateConfig,
               task: str = DEFAULT_TASK, train: pd.DataFrame | None = None) -> dict[str, Any]:
    """Share of test rows whose answer survives each perturbation as expected (the task type's agreement is 1):
    unchanged under a case change, trailing punctuation and a typo; and the task type's own (entities: each
    entity found swapped for another of its type from the training data, which must be found where it now is),
    against params' thresholds."""
    kind = task_type(task)
    rng = np.random.default_rng(cfg.behavioral.seed)
    rows = np.arange(len(texts))
    if len(rows) > cfg.behavioral.max_rows:
        rows = np.sort(rng.choice(rows, cfg.behavioral.max_rows, replace=False))
    perturbations = {
        "case": [change_case(texts[i]) for i in rows],
        "punctuation": [toggle_trailing_punctuation(texts[i]) for i in rows],
        "typo": [small_typo(texts[i], rng) for i in rows],
    }
    cases: dict[str, list[tuple[int, str, Any]]] = {}
    for name, changed in perturbations.items():
        cases[name] = [(i, text, kind.unchanged(original[i], texts[i], text)) for i, text in zip(rows, changed,
                                                                                                 strict=True)
                       if text is not None and text != texts[i]]
        cases[name] = [case for case in cases[name] if case[2] is not None]
    if train is not None:
        cases |= kind.own_perturbations(texts, original, rows, rng, train)
    report = {}
    for name, kept in cases.items():
        after = model.predict([text for _, text, _ in kept], cfg.batch_size).answers() if kept else []
        same = (kind.agreement([expected for _, _, expected in kept], after) >= 1.0 if kept
                else np.zeros(0, dtype=bool))
        rate = float(same.sum()) / len(kept) if kept else 1.0
        threshold = cfg.behavioral.min_stability.get(name, 0.0)
        examples = [{"text": texts[i], "perturbed": text, "before": original[i],
                     "expected": kind.answer_rows([expected])[0], "after": answer}
                    for (i, text, expected), answer, equal in zip(kept, after, same, strict=True) if not equal][:5]
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
    plots: dict[str, pd.DataFrame]
    actual: list[Any]
    predicted: list[Any]
    confidence: np.ndarray

    @property
    def reliability(self) -> pd.DataFrame:
        return self.plots["calibration"]


def evaluate_model(model_dir: Path, train: pd.DataFrame, test: pd.DataFrame, params: StageParams,
                   test_file: str = "test split", val: pd.DataFrame | None = None) -> Evaluation:
    """Score the model in model_dir on `test` (train, and val where the baseline chooses something, feed the
    TF-IDF baseline)."""
    model = load_classifier(model_dir, pick_device(params.train.device), max_length=params.train.max_length)
    return evaluate_loaded(model, train, test, params, test_file, val)


def evaluate_loaded(model: Classifier, train: pd.DataFrame, test: pd.DataFrame, params: StageParams,
                    test_file: str = "test split", val: pd.DataFrame | None = None) -> Evaluation:
    """Score a loaded model (a single model or an ensemble) on `test`, as its task type scores answers."""
    cfg, kind = params.evaluate, task_type(params.model.task)
    labels = list(model.labels)
    texts, actual = list(test["text"]), kind.targets(test)
    predictions = model.predict(texts, cfg.batch_size)
    predicted = predictions.answers()
    scored = kind.score_answers(actual, predicted, predictions.probabilities, labels, cfg)
    checks = behavioral(model, texts, predicted, cfg, kind.name, train)
    timing = latency(model, texts, cfg.latency_samples)
    metrics = {
        "test_rows": len(test),
        **scored.metrics,
        "baseline_tfidf": tfidf_baseline(train, test, kind.name, val),
        "latency": {"device": model.device, "bf16": model.bf16, **timing},
        "behavioral": {name: check["stability"] for name, check in checks.items()},
        "behavioral_passed": all(check["passed"] for check in checks.values()),
    }
    return Evaluation(metrics, scored.per_label, checks,
                      slice_report(test, predicted, labels, cfg, test_file, kind.name), scored.plots, actual,
                      predicted, scored.confidence)


def run(params: StageParams) -> dict[str, Any]:
    """Write metrics.json (DVC metric), the per-label report, confusion, reliability and precision-recall rows (DVC
    plots), the slice and behavioral reports, and per-row answers for the gate."""
    paths = params.paths
    splits = Path(paths.splits)
    train, val, test = (pd.read_parquet(splits / f"{name}.parquet") for name in ("train", "val", "test"))
    result = evaluate_model(Path(paths.model), train, test, params, str(splits / "test.parquet"), val)
    if params.evaluate.probe and task_type(params.model.task).probe_heads:
        result.metrics["baseline_probe"] = probe_baseline(
            params.model.base, params.model.revision, train, val, test, params.train.max_length,
            params.evaluate.batch_size, pick_device(params.train.device), params.train.seed,
            task=params.model.task)
    write_json(result.metrics, Path(paths.metrics))
    write_json(result.per_class, Path(paths.per_class))
    write_json(result.behavioral, Path(paths.behavioral))
    write_json(result.slices, Path(paths.slices))
    for path, frame in ((paths.confusion, result.plots["confusion"]), (paths.calibration, result.reliability),
                        (paths.pr_curves, result.plots["pr_curves"])):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    kind = task_type(params.model.task)
    write_parquet(pd.DataFrame({"actual": kind.answer_rows(result.actual),
                                "predicted": kind.answer_rows(result.predicted), "confidence": result.confidence}),
                  Path(paths.predictions))
    primary = task_type(params.model.task).primary_metric
    return {k: result.metrics[k] for k in ("accuracy", primary, "macro_f1", "test_rows", "ece", "baseline_probe")
            if k in result.metrics}
