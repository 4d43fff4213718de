"""A label set per text (a sigmoid score per label, a label kept above its decision threshold).

Every stage reaches it through `seam.task_type` (docs/architecture.md, "Task types on one seam"; docs/tasks.md).
Answers are label lists, sorted, without duplicates.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gradus.config.pipeline import EvaluateConfig, GateConfig, SplitConfig, StageParams
from gradus.errors import DataError
from gradus.pooled import MULTI_HOT
from gradus.scoring import (
    BootstrapResult,
    expected_calibration_error,
    paired_bootstrap_of,
    precision_recall_rows,
    reliability_table,
)
from gradus.stratify import split_by_strata
from gradus.task_types.base import (
    Agreement,
    Champion,
    Check,
    OnlineScore,
    PerText,
    RowRule,
    Scored,
    Targets,
    imbalance_failure,
    label_changes,
    short_labels,
    weighted_mean,
)

if TYPE_CHECKING:
    from gradus.probe import LinearHead

DEFAULT_THRESHOLD = 0.5  # before a decision is chosen on the validation split (during training)
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
MIN_POSITIVES_FOR_OWN_THRESHOLD = 5  # a label with fewer validation positives keeps the global threshold
ONLINE_BOOTSTRAP_SAMPLES = 1000  # resamples of a release's online micro-F1 interval (a few hundred texts each)


# Data: the raw snapshot keeps every source's label cell as text (a JSON array's text, with label_type "array",
# from JSONL and Parquet; the cell itself from CSV); the type reads it into its internal form, a sorted label list.

def read_label_set(cell: str | None, cell_type: str | None, separator: str) -> tuple[list[str] | None, str | None]:
    """(labels as written, None) or (None, the reason the cell is not a label set). A JSON array of strings or a
    string split on `separator` (CSV); a missing cell is the empty set (the cardinality check judges it)."""
    if cell is None:
        return [], None
    if cell_type == "array":
        values = json.loads(cell)
        if not all(isinstance(value, str) for value in values):
            return None, f"the label array holds a non-string value: {cell[:80]} (labels are strings)"
        return list(values), None
    if cell_type is not None:
        return None, (f"the label is a JSON {cell_type} ({cell[:80]}), not a list of labels or a "
                      f"{separator!r}-separated string")
    return ([] if not cell.strip() else cell.split(separator)), None


def normalise_label_set(labels: Iterable[str], case: str) -> tuple[list[str], int]:
    """(trimmed, case-folded per `case`, blank ones dropped, sorted, without duplicates; duplicates removed)."""
    cleaned = [label.strip().lower() if case == "lower" else label.strip() for label in labels]
    cleaned = [label for label in cleaned if label]
    unique = sorted(set(cleaned))
    return unique, len(cleaned) - len(unique)


def label_set_reason(labels: list[str], allowed: set[str] | None, min_labels: int, max_labels: int | None,
                     allow_empty: bool, inferred_from: int | None = None) -> str | None:
    """Why a normalised label set may not be trained on (None: it may): unknown labels, too few or too many.
    `inferred_from`: the vocabulary is the labels with at least this many rows (validate.allowed_labels unset)."""
    if allowed is not None and (unknown := [label for label in labels if label not in allowed]):
        where = (f"fewer than validate.min_examples_per_class={inferred_from} rows hold them (add examples, or fix "
                 f"the row)" if inferred_from is not None else
                 "not in validate.allowed_labels (add them there, or fix the row)")
        return f"unknown label(s) {unknown[:5]}: {where}"
    if not labels:
        return None if allow_empty else ("no label: the row holds an empty label set (set multi_label.allow_empty to "
                                         "keep such rows)")
    if len(labels) < min_labels:
        return f"{len(labels)} label(s), fewer than multi_label.min_labels={min_labels}"
    if max_labels is not None and len(labels) > max_labels:
        return f"{len(labels)} labels, more than multi_label.max_labels={max_labels}"
    return None


def shape_reason(labels: list[str], cell: str, cell_type: str | None, separator: str) -> str | None:
    """Why labels read from one cell are probably not the labels meant (None: they are): a label holding the
    separator, or a text cell that holds a list written another way than `separator` splits."""
    if cell_type == "array":
        if inside := [label for label in labels if separator in label]:
            return (f"label {inside[0]!r} holds the label separator {separator!r}: rename the label, or set "
                    f"multi_label.label_separator to a string no label holds")
        return None
    if cell.lstrip().startswith("["):
        return (f"the cell holds a JSON list as text ({cell[:60]}): write its labels separated by {separator!r}, "
                f"or store the labels as a list (JSONL, Parquet)")
    for other in (",", ";"):
        if other != separator and separator not in cell and any(other in label for label in labels):
            return (f"the cell {cell[:60]!r} holds {other!r} but labels are separated by {separator!r}: set "
                    f"label_separator: {other!r} on this source in data.sources (or multi_label.label_separator)")
    return None


def target_key(labels: Iterable[str]) -> str:
    """The canonical target of a row: the same normalised text under two keys is a label conflict."""
    return "|".join(sorted(labels))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def multi_hot(answers: Sequence[Iterable[str]], labels: Sequence[str]) -> np.ndarray:
    """Texts x labels indicator matrix; a label outside `labels` has no column (it is not counted)."""
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(answers), len(labels)), dtype=np.float64)
    for row, answer in enumerate(answers):
        for label in answer:
            if label in index:
                out[row, index[label]] = 1.0
    return out


def thresholds_of(decision: dict[str, Any], labels: Sequence[str]) -> np.ndarray:
    """The threshold per label column a decision sets (the global one where a label has none of its own)."""
    default = float(decision.get("global", DEFAULT_THRESHOLD))
    own = decision.get("per_label") or {}
    return np.array([float(own.get(label, default)) for label in labels], dtype=np.float64)


def choose_decision(truth: np.ndarray, scores: np.ndarray, labels: Sequence[str], per_label: bool = True) -> dict:
    """The decision thresholds, chosen on the validation split to raise its micro-F1 (the primary metric). The rule
    (stored with the model): the global threshold is the grid value (0.05 .. 0.95) with the best micro-F1; with
    `per_label`, each label with at least MIN_POSITIVES_FOR_OWN_THRESHOLD validation positives, in label order, then
    takes the grid value that gives the best micro-F1 over all labels with the others held (one pass of coordinate
    ascent from the global threshold, so micro-F1 never falls below the global threshold's); ties go to the current
    value, then to the value nearest 0.5.

    Why not each label's own best F1: that maximises macro-F1, and on a model unsure of its rare labels it drops their
    thresholds to 0.05, adding false positives that cost more micro-F1 than they win (measured on a tiny model on
    GoEmotions: micro-F1 0.60 at 0.5 fell to 0.38)."""
    truth = np.asarray(truth, dtype=np.float64)
    global_t = _best(THRESHOLD_GRID, [_f1_counts(truth, scores >= g) for g in THRESHOLD_GRID], DEFAULT_THRESHOLD)
    own: dict[str, float] = {}
    if per_label:
        predicted = scores >= global_t
        for column, label in enumerate(labels):
            if truth[:, column].sum() < MIN_POSITIVES_FOR_OWN_THRESHOLD:
                continue
            others = np.delete(truth, column, axis=1), np.delete(predicted, column, axis=1)
            tp_o = float(np.sum(others[0] * others[1]))
            total_o = float(others[0].sum() + others[1].sum())
            t, s = truth[:, column], scores[:, column]
            f1 = []
            for g in THRESHOLD_GRID:
                p = s >= g
                tp, total = tp_o + float(np.sum(t * p)), total_o + float(t.sum() + p.sum())
                f1.append(1.0 if total == 0 else 2 * tp / total)
            chosen = _best(THRESHOLD_GRID, f1, global_t)
            predicted[:, column] = s >= chosen
            if chosen != global_t:
                own[label] = chosen
    return {"rule": (f"global: the grid value with the best validation micro-F1; per label (labels with >= "
                     f"{MIN_POSITIVES_FOR_OWN_THRESHOLD} validation positives, in label order): the value giving the "
                     f"best micro-F1 over all labels with the others held; grid {THRESHOLD_GRID[0]:g}.."
                     f"{THRESHOLD_GRID[-1]:g} step 0.05; ties to the current value, then the value nearest 0.5"),
            "global": global_t, "per_label": own, "labels": list(labels)}


def own_best_thresholds(truth: np.ndarray, scores: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """Each label's threshold at its own best F1 (labels with enough validation positives): the rule
    `choose_decision` did not take (it serves macro-F1), kept so benchmarks can report it beside the chosen one."""
    truth = np.asarray(truth, dtype=np.float64)
    return {label: _best(THRESHOLD_GRID, [_f1_counts(truth[:, c], scores[:, c] >= g) for g in THRESHOLD_GRID],
                         DEFAULT_THRESHOLD)
            for c, label in enumerate(labels) if truth[:, c].sum() >= MIN_POSITIVES_FOR_OWN_THRESHOLD}


def _best(grid: np.ndarray, f1: list[float], current: float) -> float:
    """The grid value with the best F1; a tie keeps `current`, else goes to the value nearest 0.5."""
    top = max(f1)
    tied = [float(g) for g, f in zip(grid, f1, strict=True) if f >= top - 1e-12]
    return current if any(abs(g - current) < 1e-9 for g in tied) else min(tied, key=lambda g: abs(g - 0.5))


def _f1_counts(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Micro-F1 of indicator arrays: 2TP / (2TP + FP + FN); 1.0 when neither holds a positive."""
    tp = float(np.sum(truth * predicted))
    denominator = float(np.sum(truth) + np.sum(predicted))
    return 1.0 if denominator == 0 else 2 * tp / denominator


def weighted_micro_f1(weights: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Micro-F1 for each row of `weights` (a bootstrap resample as counts per text): one product per count."""
    tp = weights @ (truth * predicted).sum(axis=1)
    total = weights @ (truth.sum(axis=1) + predicted.sum(axis=1))
    return np.where(total > 0, 2 * tp / np.maximum(total, 1e-12), 1.0)


def paired_micro_f1(truth: np.ndarray, new: np.ndarray, old: np.ndarray, samples: int, confidence: float,
                    seed: int) -> BootstrapResult:
    """New minus old micro-F1 on the same texts (multi-hot rows), its percentile interval by paired bootstrap over
    texts: the gate's comparison and the release's online figure."""
    return paired_bootstrap_of(lambda w: weighted_micro_f1(w, truth, new) - weighted_micro_f1(w, truth, old),
                               len(truth), samples, confidence, seed)


def set_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """The multi-label figures (scikit-learn's definitions): micro, macro and samples F1, subset accuracy, Hamming
    loss, and the mean label cardinality of truth and prediction."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    t, p = truth.astype(int), predicted.astype(int)
    return {"micro_f1": float(f1_score(t, p, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(t, p, average="macro", zero_division=0)),
            "samples_f1": float(f1_score(t, p, average="samples", zero_division=0)),
            "subset_accuracy": float(accuracy_score(t, p)),
            "hamming_loss": float(hamming_loss(t, p)),
            "cardinality_true": float(t.sum(axis=1).mean()) if len(t) else 0.0,
            "cardinality_predicted": float(p.sum(axis=1).mean()) if len(p) else 0.0}


def jaccard(left: Sequence[Iterable[str]], right: Sequence[Iterable[str]]) -> np.ndarray:
    """Per text, |A ∩ B| / |A ∪ B| of two label sets; two empty sets agree (1)."""
    out = np.empty(len(left), dtype=np.float64)
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        a, b = set(a), set(b)
        out[i] = len(a & b) / len(a | b) if a | b else 1.0
    return out


# Evaluation and drift: per-label figures, curves and signals (the evaluate stage and the drift monitor).

def per_label_table(truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per label: support, times predicted, precision, recall, F1 (0 where undefined)."""
    tp = (truth * predicted).sum(axis=0)
    support, guessed = truth.sum(axis=0), predicted.sum(axis=0)
    rows = []
    for c, label in enumerate(labels):
        precision = tp[c] / guessed[c] if guessed[c] else 0.0
        recall = tp[c] / support[c] if support[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"label": label, "support": int(support[c]), "predicted": int(guessed[c]),
                     "precision": round(float(precision), 4), "recall": round(float(recall), 4),
                     "f1": round(float(f1), 4)})
    return rows


def calibration_by_label(truth: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                         bins: int) -> dict[str, float]:
    """Per label, the expected calibration error of its sigmoid score as a probability that the label holds."""
    return {label: round(expected_calibration_error(reliability_table(scores[:, c], truth[:, c] > 0, bins)), 4)
            for c, label in enumerate(labels)}


def prediction_signals(scores: np.ndarray, labels: Sequence[str], decision: dict[str, Any]) -> pd.DataFrame:
    """What the drift monitor compares per text between reference and current traffic, beyond the answered labels'
    frequencies and the top score (every type's): how many labels were answered, and each label's score."""
    answered = scores >= thresholds_of(decision, labels)
    frame = pd.DataFrame({"label_cardinality": answered.sum(axis=1)})
    for c, label in enumerate(labels):
        frame[f"label_scores:{label}"] = scores[:, c]
    return frame


class MultiLabel(PerText):
    name = "multi_label"
    target_column = "labels"
    primary_metric = "micro_f1"
    primary_metric_name = "micro-F1"
    target_form = "label_set"
    problem_type = MULTI_HOT
    headline_metric = "micro_f1"
    report_metrics = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy")
    online_metric_name = "micro-F1"
    architecture_suffix = None  # the model class's name ends so (how a saved model's task is told)
    auto_model = "AutoModelForSequenceClassification"  # the transformers class that builds and loads its model
    probe_heads = True  # a frozen-encoder probe (one embedding per text) can answer it: lp_ft, auto, probe
    label_cells_are_labels = True  # ingest trims (and case-folds) label cells as labels

    def targets(self, frame: pd.DataFrame) -> list[list[str]]:
        return [list(labels) for labels in frame[self.target_column]]

    def floors(self, cfg: GateConfig) -> list[tuple[str, str, float]]:
        """gate.min_micro_f1 and gate.min_macro_f1."""
        return [("min_micro_f1", "micro_f1", cfg.min_micro_f1), ("min_macro_f1", "macro_f1", cfg.min_macro_f1)]

    def vocabulary(self, frame: pd.DataFrame) -> list[str]:
        return sorted(self.frequencies(frame[self.target_column]))

    def encode_targets(self, frame: pd.DataFrame, vocabulary: list[str]) -> list[list[float]]:
        """Multi-hot rows (floats: the BCE loss's targets); val/test labels must be among the training labels."""
        unknown = sorted(set(self.frequencies(frame[self.target_column])) - set(vocabulary))
        if unknown:
            raise DataError(f"labels {unknown[:5]} appear in val/test but not in train; add training examples")
        return multi_hot(list(frame[self.target_column]), vocabulary).tolist()

    def fit_probe_head(self, train_x: np.ndarray, train: pd.DataFrame, val_x: np.ndarray, val: pd.DataFrame,
                       seed: int) -> LinearHead:
        """One logistic regression per label (one-vs-rest) on the frozen embeddings, the C shared by every label
        chosen by validation micro-F1 at the default threshold; scored as `metrics` scores."""
        from sklearn.linear_model import LogisticRegression

        from gradus.probe import C_GRID, LinearHead

        labels = self.vocabulary(train)
        y, val_y = (multi_hot(list(frame[self.target_column]), labels) for frame in (train, val))
        best: tuple[float, float, np.ndarray, np.ndarray] | None = None
        for c in C_GRID:
            coef, intercept = np.zeros((len(labels), train_x.shape[1])), np.zeros(len(labels))
            for column in range(len(labels)):
                if y[:, column].all():  # every training text holds the label: a constant logit
                    intercept[column] = 10.0
                    continue
                model = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(train_x, y[:, column])
                coef[column], intercept[column] = model.coef_[0], model.intercept_[0]
            scores = sigmoid(val_x @ coef.T + intercept)
            f1 = _f1_counts(val_y, scores >= DEFAULT_THRESHOLD) if len(val_y) else 0.0
            if best is None or f1 > best[0]:
                best = (f1, c, coef, intercept)
        assert best is not None
        _, c, coef, intercept = best
        scores = self.metrics(val_y, val_x @ coef.T + intercept, {"labels": labels}) if len(val_y) else {}
        return LinearHead(coef.astype(np.float32), intercept.astype(np.float32), c, scores)

    def loss_function(self, targets: list[Any], params: StageParams) -> Callable[..., Any] | None:
        """With multi_label.positive_weight, binary cross-entropy whose positives of each label weigh its
        negatives / positives in the training targets (capped at 100), so a rare label's few positives count
        as much as its many negatives; else the model's own (unweighted) binary cross-entropy."""
        if not params.multi_label.positive_weight:
            return None
        import torch

        y = np.asarray(targets, dtype=np.float64)
        positives = y.sum(axis=0)
        weight = torch.as_tensor(np.clip((len(y) - positives) / np.maximum(positives, 1.0), 1.0, 100.0),
                                 dtype=torch.float32)

        def loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
            logits = outputs["logits"]
            summed = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, labels.to(logits.dtype), pos_weight=weight.to(logits.device, logits.dtype), reduction="sum")
            # Summed over the accumulated batch's label cells, as the Trainer counts them (gradient accumulation).
            count = num_items_in_batch if num_items_in_batch is not None else labels.numel()
            return summed / count

        return loss

    def decision(self, targets: np.ndarray, scores: Callable[[], np.ndarray], vocabulary: list[str],
                 params: StageParams) -> dict[str, Any]:
        """The thresholds chosen on the validation split's sigmoid scores (`choose_decision`'s rule; per label
        unless multi_label.thresholds is global)."""
        return choose_decision(np.asarray(targets, dtype=np.float64), scores(), vocabulary,
                               per_label=params.multi_label.thresholds == "per_label")

    def settings(self, params: StageParams) -> dict[str, Any]:
        """The multi_label section (thresholds, positive weighting, cardinality bounds)."""
        return {"task_settings": params.multi_label.model_dump()}

    def demo(self, rows: int, seed: int) -> tuple[pd.DataFrame, str]:
        """Support tickets raising one to three intents each (a list per row)."""
        from gradus.demo import generate_sets

        return generate_sets(rows, seed), "support-tickets"

    def read_targets(self, frame: pd.DataFrame, params: StageParams) -> Targets:
        """Each cell read as a label set (a list from JSONL / Parquet, or a text split on the separator),
        normalised; `label_problem` says why a row's set cannot be used ('' when it can), `labels` holds the set
        (None where unreadable) and `label_duplicates` the repeats removed from it."""
        cfg, own = params.validation, params.multi_label
        sets: list[list[str] | None] = []
        problems: list[str] = []
        repeats: list[int] = []
        for cell, cell_type in zip(frame["label"], frame["label_type"], strict=True):
            labels, reason = read_label_set(cell, cell_type, own.label_separator)
            if labels is not None and cell is not None:
                reason = shape_reason(labels, cell, cell_type, own.label_separator)
            if reason is not None or labels is None:
                sets.append(None)  # a cell of another JSON type is the label_type rule's to name
                problems.append("" if cell_type not in (None, "array") else reason or "")
                repeats.append(0)
                continue
            normalised, removed = normalise_label_set(labels, params.data.label_case)
            sets.append(normalised)
            problems.append("")
            repeats.append(removed)
        inferred = cfg.allowed_labels is None
        counts = self.frequencies(labels for labels in sets if labels)
        vocabulary = (sorted(label for label, n in counts.items() if n >= cfg.min_examples_per_class) if inferred
                      else list(cfg.allowed_labels or ()))
        known = set(vocabulary)
        for row, labels in enumerate(sets):
            if labels is not None:
                problems[row] = label_set_reason(labels, known, own.min_labels, own.max_labels, own.allow_empty,
                                                 cfg.min_examples_per_class if inferred else None) or ""
        index = frame.index
        keys = pd.Series([None if labels is None else target_key(labels) for labels in sets], index=index,
                         dtype=object)
        return Targets(columns={self.target_column: pd.Series(sets, index=index, dtype=object),
                                "label_problem": pd.Series(problems, index=index, dtype=object),
                                "label_duplicates": pd.Series(repeats, index=index, dtype="int64")},
                       key=keys, vocabulary=vocabulary, inferred=inferred,
                       counts={"label_duplicates_removed": int(sum(repeats))})

    def row_rules(self, params: StageParams, targets: Targets) -> list[RowRule]:
        """The cell is a text or a list, and its label set can be used (the row's label_problem says why not)."""
        return [RowRule("label_type", "label_type", "in_set", "label is neither a text nor a list of labels in the "
                        "source (its JSON type is in label_type)", ("array",)),
                RowRule("label_set", "label_problem", "in_set", "the label set cannot be used", ("",),
                        detail_column="label_problem")]

    def batch_failures(self, kept: pd.DataFrame, params: StageParams) -> list[str]:
        """An allowed label on fewer kept rows than validate.min_examples_per_class; label imbalance (rows per
        label) above the ratio."""
        cfg = params.validation
        counts = pd.Series(self.frequencies(kept[self.target_column]), dtype="int64").sort_index()
        failures = (short_labels(counts, cfg.allowed_labels, cfg.min_examples_per_class, "labels")
                    if cfg.allowed_labels is not None else [])
        return failures + imbalance_failure(counts, cfg.max_imbalance_ratio, "label")

    def split(self, frame: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
        """Iterative stratification over the label sets (a group holds every label its rows hold)."""
        return split_by_strata(frame["text"], list(frame[self.target_column]), cfg)

    def metrics(self, targets: np.ndarray, output: np.ndarray, decision: dict[str, Any]) -> dict[str, float]:
        """The set figures of the labels over threshold (multi-hot targets against logits; the decision's `labels`
        name the columns, before one is chosen every column has the default threshold)."""
        labels = decision.get("labels") or [str(i) for i in range(output.shape[1])]
        predicted = sigmoid(output) >= thresholds_of(decision, labels)
        return set_scores(np.asarray(targets), predicted)

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """A sigmoid per label."""
        return sigmoid(logits)

    def decode(self, scores: np.ndarray, labels: Sequence[str], decision: dict[str, Any]) -> list[list[str]]:
        """The labels whose sigmoid score reaches their threshold, per text (sorted as `labels`)."""
        keep = scores >= thresholds_of(decision, labels)
        return [[labels[c] for c in np.flatnonzero(row)] for row in keep]

    def answer_figures(self, actual: list[list[str]], predicted: list[list[str]],
                       labels: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
        """Micro, macro and samples F1, subset accuracy, Hamming loss, true and predicted cardinality; per label:
        support, predicted, precision, recall, F1."""
        truth, answered = multi_hot(actual, labels), multi_hot(predicted, labels)
        return ({k: round(v, 6) for k, v in set_scores(truth, answered).items()},
                {row["label"]: {k: v for k, v in row.items() if k != "label"}
                 for row in per_label_table(truth, answered, labels)})

    def score_answers(self, actual: list[list[str]], predicted: list[list[str]], scores: np.ndarray,
                      labels: list[str], cfg: EvaluateConfig) -> Scored:
        """`answer_figures`, calibration of every label's score (ECE over all text x label cells, and per label,
        added to each label's row); plots: label-level confusion pairs (a label found is (label, label), one
        missed (label, "(missed)"), one answered wrongly ("(not given)", label)), the reliability diagram over
        the cells, each label's precision-recall curve."""
        figures, rows = self.answer_figures(actual, predicted, labels)
        truth = multi_hot(actual, labels)
        reliability = reliability_table(scores.ravel(), truth.ravel() > 0, cfg.calibration_bins)
        confidence = scores.max(axis=1, initial=0.0) if len(scores) else np.zeros(0)
        metrics = {**figures, "ece": round(expected_calibration_error(reliability), 6),
                   "mean_confidence": round(float(confidence.mean()), 6) if len(confidence) else 0.0}
        calibration = calibration_by_label(truth, scores, labels, cfg.calibration_bins)
        per_label = {label: row | {"ece": calibration[label]} for label, row in rows.items()}
        pairs = []
        for given, answer in zip(actual, predicted, strict=True):
            pairs += [(label, label if label in answer else "(missed)") for label in given]
            pairs += [("(not given)", label) for label in answer if label not in given]
        plots = {"confusion": pd.DataFrame(pairs, columns=["actual", "predicted"]),
                 "calibration": reliability.dropna(),
                 "pr_curves": pd.DataFrame(precision_recall_rows(truth, scores, labels),
                                           columns=["label", "threshold", "precision", "recall"])}
        return Scored(metrics, per_label, plots, confidence)

    def slice_scores(self, actual: list[list[str]], predicted: list[list[str]], labels: list[str]) -> dict[str, float]:
        """Micro- and macro-F1 (over the labels the slice holds) and subset accuracy."""
        present = sorted({label for answer in actual for label in answer} & set(labels)) or labels
        figures = set_scores(multi_hot(actual, present), multi_hot(predicted, present))
        return {key: round(figures[key], 6) for key in ("micro_f1", "macro_f1", "subset_accuracy")}

    def baseline(self, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
        """Word 1-2-gram TF-IDF and one logistic regression per label (C 10), one global threshold chosen on val
        by micro-F1."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        labels = self.vocabulary(train)
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        train_x = vectorizer.fit_transform(train["text"])
        y = multi_hot(list(train[self.target_column]), labels)
        scores = {name: np.zeros((len(frame), len(labels))) for name, frame in (("val", val), ("test", test))}
        for column in range(len(labels)):
            if y[:, column].all():
                scores["val"][:, column] = scores["test"][:, column] = 1.0
                continue
            model = LogisticRegression(max_iter=2000, C=10.0).fit(train_x, y[:, column])
            for name, frame in (("val", val), ("test", test)):
                if len(frame):
                    scores[name][:, column] = model.predict_proba(vectorizer.transform(frame["text"]))[:, 1]
        decision = choose_decision(multi_hot(list(val[self.target_column]), labels), scores["val"], labels,
                                   per_label=False)
        answered = self.decode(scores["test"], labels, decision)
        figures = set_scores(multi_hot(self.targets(test), labels), multi_hot(answered, labels))
        return {"threshold": decision["global"], **{key: round(value, 6) for key, value in figures.items()}}

    def answer_json(self, scores: np.ndarray, ranked: np.ndarray, labels: Sequence[str], decision: dict[str, Any],
                    top_k: int, all_scores: bool) -> list[dict[str, Any]]:
        """{labels: [{label, score}] over their thresholds, by falling score} (and every label's score when
        asked)."""
        keep = scores >= thresholds_of(decision, labels)
        answers = [{"labels": [{"label": labels[j], "score": float(scores[i, j])} for j in ranked[i] if keep[i, j]]}
                   for i in range(len(scores))]
        if all_scores:
            for i, answer in enumerate(answers):
                answer["scores"] = dict(zip(labels, scores[i].tolist(), strict=True))
        return answers

    def logged(self, scores: np.ndarray, ranked: np.ndarray, labels: Sequence[str],
               decision: dict[str, Any]) -> tuple[list[list[str]], list[float]]:
        return self.decode(scores, labels, decision), scores.max(axis=1, initial=0.0).astype(float).tolist()

    def v2_outputs(self, answers: list[dict[str, Any]], scores: np.ndarray, labels: Sequence[str]) -> list[dict]:
        """`labels` (BYTES [n]: each text's answered labels as a JSON array) and `scores` (FP32 [n, L]: every
        label's sigmoid score, columns in the order of the response's parameters.labels)."""
        return [{"name": "labels", "datatype": "BYTES", "shape": [len(answers)],
                 "data": [json.dumps([item["label"] for item in a["labels"]]) for a in answers]},
                {"name": "scores", "datatype": "FP32", "shape": [len(answers), len(labels)],
                 "data": scores.astype(float).ravel().tolist()}]

    def v2_parameters(self, labels: Sequence[str]) -> dict[str, Any]:
        """The label order of the `scores` columns."""
        return {"labels": list(labels)}

    def v2_output_metadata(self) -> list[dict[str, Any]]:
        return [{"name": "labels", "datatype": "BYTES", "shape": [-1]},
                {"name": "scores", "datatype": "FP32", "shape": [-1, -1]}]

    def feedback_target(self, label: str | None, labels: list[str] | None,
                        entities: list[dict[str, Any]] | None = None) -> tuple[Any, str | None]:
        if labels is None:
            return None, ("give the right labels as `labels` (a list, [] for none): this model answers a label set "
                          "per text")
        return normalise_label_set(labels, "keep")[0], None

    def feedback_schema(self, labels: list[str]) -> dict[str, Any]:
        """`labels`: a list of distinct labels (empty: none applies)."""
        return {"required": ["labels"], "properties": {
            "labels": {"type": "array", "items": {"type": "string", "enum": labels}, "uniqueItems": True,
                       "description": "the right labels"},
            "label": {"type": "null"}, "entities": {"type": "null"}}}

    def counted(self, answer: list[str]) -> list[str]:
        return list(answer)

    def compare(self, actual: list[list[str]], challenger: list[list[str]], champion: Champion,
                challenger_labels: list[str], cfg: GateConfig) -> tuple[dict[str, Any], list[Check]]:
        """Champion vs challenger on the same test texts, over the labels both know (a label only one knows is
        left out of both scores): micro-F1 non-inferiority by paired bootstrap over texts, per-label recall drop
        for labels with enough support, label set changes."""
        info, checks = label_changes(champion.labels, challenger_labels, cfg)
        shared = sorted(set(champion.labels) & set(challenger_labels))
        info["rows_compared"] = len(actual)
        if not shared:
            return {"labels": info}, [*checks, Check("shared_labels", False, "the two models share no label")]
        y, new, old = (multi_hot(answers, shared) for answers in (actual, challenger, champion.predicted))
        boot = paired_micro_f1(y, new, old, cfg.bootstrap_samples, cfg.confidence, cfg.seed)
        scores = {"challenger": set_scores(y, new), "champion": set_scores(y, old)}
        checks.append(Check(
            "micro_f1_non_inferiority", boot.low >= -cfg.margin,
            f"micro-F1 challenger {scores['challenger']['micro_f1']:.4f} vs champion "
            f"{scores['champion']['micro_f1']:.4f}: difference {boot.delta:+.4f}, {boot.confidence:.0%} CI "
            f"[{boot.low:+.4f}, {boot.high:+.4f}] (paired bootstrap over texts, {boot.samples} resamples); lower "
            f"bound must be >= -gate.margin {-cfg.margin:+.4f}"))
        support = y.sum(axis=0)
        recall_new = np.divide((y * new).sum(axis=0), support, out=np.zeros(len(shared)), where=support > 0)
        recall_old = np.divide((y * old).sum(axis=0), support, out=np.zeros(len(shared)), where=support > 0)
        per_label = sorted(({"label": shared[c], "support": int(support[c]),
                             "recall_champion": round(float(recall_old[c]), 4),
                             "recall_challenger": round(float(recall_new[c]), 4),
                             "drop": round(float(recall_old[c] - recall_new[c]), 4)}
                            for c in range(len(shared)) if support[c] >= cfg.min_support),
                           key=lambda row: -row["drop"])
        dropped = [row for row in per_label if row["drop"] > cfg.max_class_recall_drop]
        rule = f"gate.min_support={cfg.min_support} test texts"
        detail = (", ".join(f"{r['label']} {r['recall_champion']:.2f}→{r['recall_challenger']:.2f}"
                            for r in dropped[:10]) if dropped
                  else f"largest drop {per_label[0]['drop']:+.3f}" if per_label else "no label has enough texts")
        checks.append(Check(
            "per_label_recall", not dropped,
            f"{len(dropped)} of {len(per_label)} labels on >= {rule} lose more than "
            f"gate.max_class_recall_drop={cfg.max_class_recall_drop:g} recall: {detail}" if dropped else
            f"no label on >= {rule} loses more than {cfg.max_class_recall_drop:g} recall ({detail})"))
        return {"labels": info, "scores": scores, "bootstrap": asdict(boot), "per_label": per_label}, checks

    def agreement(self, left: Sequence[Iterable[str]], right: Sequence[Iterable[str]]) -> np.ndarray:
        """Per text, the Jaccard index of the two label sets (1 = the same set: exact-set agreement is == 1)."""
        return jaccard(left, right)

    def prediction_signals(self, scores: np.ndarray, labels: Sequence[str], decision: dict[str, Any]) -> pd.DataFrame:
        """label_cardinality (labels answered per text) and label_scores (each label's sigmoid score)."""
        return prediction_signals(scores, labels, decision)

    def agreements(self, champion: Sequence[Iterable[str]], candidate: Sequence[Iterable[str]]) -> list[Agreement]:
        """The mean Jaccard index of the two sets per text (release.min_agreement), and the share of texts given
        exactly the same set (release.min_exact_agreement)."""
        overlap = self.agreement(champion, candidate)
        return [Agreement("agreement (mean Jaccard)", overlap, False, "min_agreement"),
                Agreement("exact-set agreement", (overlap >= 1.0).astype(np.float64), True, "min_exact_agreement")]

    def online_score(self, truth: Sequence[Iterable[str]], candidate: Sequence[Iterable[str]],
                     champion: Sequence[Iterable[str]], confidence: float, seed: int) -> OnlineScore:
        """Micro-F1 over the labels either model or the truth names, paired bootstrap over texts (micro-F1 is a
        ratio of sums, not a mean over texts: no per-text difference to average)."""
        labels = sorted(self.frequencies([*truth, *candidate, *champion]))
        y, new, old = (multi_hot([list(a) for a in answers], labels) for answers in (truth, candidate, champion))
        boot = paired_micro_f1(y, new, old, ONLINE_BOOTSTRAP_SAMPLES, confidence, seed)
        ones = np.ones((1, len(y)))
        return OnlineScore(self.online_metric_name, float(weighted_micro_f1(ones, y, new)[0]),
                           float(weighted_micro_f1(ones, y, old)[0]), boot.delta, boot.low, boot.high,
                           f"paired bootstrap over texts, {ONLINE_BOOTSTRAP_SAMPLES} resamples")

    def frequencies(self, answers: Iterable[Iterable[str]]) -> Counter[str]:
        """How many answers hold each label."""
        return Counter(label for answer in answers for label in set(answer))

    def average(self, outputs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
        """The weighted mean of the members' sigmoid scores (each stays in [0, 1]; thresholds apply after)."""
        return weighted_mean(outputs, weights)


TASK = MultiLabel()
