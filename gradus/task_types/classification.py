"""One label per text (softmax over the labels): the task type every version registered so far has."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gradus.config.pipeline import EvaluateConfig, GateConfig, SplitConfig, StageParams
from gradus.errors import DataError
from gradus.scoring import (
    encode,
    expected_calibration_error,
    mcnemar_exact,
    paired_bootstrap,
    paired_difference,
    precision_recall_rows,
    recall_by_class,
    reliability_table,
    weighted_macro_f1,
    z_value,
)
from gradus.stratify import split_by_label
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


def inferred_labels(labels: pd.Series, min_examples: int) -> list[str]:
    """Labels with at least min_examples rows: the label set when params name none."""
    counts = labels.dropna()
    counts = counts[counts.str.strip() != ""].value_counts()
    return sorted(counts[counts >= min_examples].index)


class Classification(PerText):
    name = "classification"
    target_column = "label"
    primary_metric = "macro_f1"
    primary_metric_name = "macro-F1"
    target_form = "label"
    problem_type = "single_label_classification"
    headline_metric = "accuracy"
    report_metrics = ("accuracy", "macro_f1")
    online_metric_name = "accuracy"
    architecture_suffix = None  # the model class's name ends so (how a saved model's task is told)
    auto_model = "AutoModelForSequenceClassification"  # the transformers class that builds and loads its model
    probe_heads = True  # a frozen-encoder probe (one embedding per text) can answer it: lp_ft, auto, probe
    label_cells_are_labels = True  # ingest trims (and case-folds) label cells as labels

    def targets(self, frame: pd.DataFrame) -> list[str]:
        return list(frame[self.target_column])

    def floors(self, cfg: GateConfig) -> list[tuple[str, str, float]]:
        """gate.min_accuracy and gate.min_macro_f1."""
        return [("min_accuracy", "accuracy", cfg.min_accuracy), ("min_macro_f1", "macro_f1", cfg.min_macro_f1)]

    def vocabulary(self, frame: pd.DataFrame) -> list[str]:
        return sorted(frame[self.target_column].unique())

    def encode_targets(self, frame: pd.DataFrame, vocabulary: list[str]) -> list[int]:
        """Label ids; val/test labels must be among the training labels."""
        ids = {label: i for i, label in enumerate(vocabulary)}
        unknown = sorted(set(frame[self.target_column]) - set(ids))
        if unknown:
            raise DataError(f"labels {unknown[:5]} appear in val/test but not in train; add training examples")
        return [ids[label] for label in frame[self.target_column]]

    def fit_probe_head(self, train_x: np.ndarray, train: pd.DataFrame, val_x: np.ndarray, val: pd.DataFrame,
                       seed: int) -> LinearHead:
        """A multinomial logistic regression (gradus/probe.py), scored by accuracy and macro-F1."""
        from gradus.probe import label_head

        return label_head(train_x, train, val_x, val, seed)

    def loss_function(self, targets: list[Any], params: StageParams) -> None:
        """The model's own cross-entropy."""
        return None

    def decision(self, targets: np.ndarray, scores: Callable[[], np.ndarray], vocabulary: list[str],
                 params: StageParams) -> dict[str, Any]:
        """None to choose: the answer is the most probable label."""
        return {}

    def settings(self, params: StageParams) -> dict[str, Any]:
        return {}

    def demo(self, rows: int, seed: int) -> tuple[pd.DataFrame, str]:
        """Support messages, one intent each."""
        from gradus.demo import generate

        return generate(rows, seed), "support-intents"

    def read_targets(self, frame: pd.DataFrame, params: StageParams) -> Targets:
        """The label cell as ingest normalised it; the vocabulary is validate.allowed_labels, else every label
        with validate.min_examples_per_class rows."""
        cfg = params.validation
        inferred = cfg.allowed_labels is None
        vocabulary = (inferred_labels(frame["label"], cfg.min_examples_per_class) if inferred
                      else list(cfg.allowed_labels or ()))
        return Targets(columns={}, key=frame["label"], vocabulary=vocabulary, inferred=inferred)

    def row_rules(self, params: StageParams, targets: Targets) -> list[RowRule]:
        """A string label, present, not blank, in the vocabulary."""
        known = (f"label is not among the labels with at least {params.validation.min_examples_per_class} examples"
                 if targets.inferred else "label is not in validate.allowed_labels")
        return [
            # Ingest keeps a non-string value visible as JSON text and names its type in label_type.
            RowRule("label_type", "label_type", "null", "label is not a string in the source (its JSON type is in "
                    "label_type)"),
            RowRule("label_not_null", "label", "not_null", "label is missing"),
            RowRule("label_not_blank", "label", "not_blank", "label is empty or only whitespace"),
            RowRule("label_known", "label", "in_set", known, tuple(targets.vocabulary)),
        ]

    def batch_failures(self, kept: pd.DataFrame, params: StageParams) -> list[str]:
        """An allowed class below validate.min_examples_per_class; class imbalance above the ratio."""
        cfg = params.validation
        counts = kept["label"].value_counts()
        failures = (short_labels(counts, cfg.allowed_labels, cfg.min_examples_per_class, "classes")
                    if cfg.allowed_labels is not None else [])
        return failures + imbalance_failure(counts, cfg.max_imbalance_ratio, "class")

    def split(self, frame: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
        """Stratified by the label (each group by its most common one)."""
        return split_by_label(frame, cfg, self.target_column)

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """The softmax over the labels."""
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def decode(self, scores: np.ndarray, labels: Sequence[str], decision: dict[str, Any]) -> list[str]:
        """The most probable label of each text."""
        return [labels[i] for i in np.asarray(scores).argmax(axis=1)]

    def metrics(self, targets: np.ndarray, output: np.ndarray, decision: dict[str, Any]) -> dict[str, float]:
        """Accuracy and macro-F1 of the argmax label (label ids against logits)."""
        from sklearn.metrics import f1_score

        predicted = np.argmax(output, axis=-1)
        return {"accuracy": float((predicted == targets).mean()),
                "macro_f1": float(f1_score(targets, predicted, average="macro"))}

    def answer_figures(self, actual: list[str], predicted: list[str],
                       labels: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
        """Accuracy, macro and weighted F1, and the per-class report (precision, recall, F1, support)."""
        from sklearn.metrics import accuracy_score, classification_report, f1_score

        report = classification_report(actual, predicted, labels=labels, output_dict=True, zero_division=0)
        per_class = {label: {k: round(float(v), 6) for k, v in report[label].items()} for label in labels}
        return {
            "accuracy": round(float(accuracy_score(actual, predicted)), 6),
            "macro_f1": round(float(f1_score(actual, predicted, labels=labels, average="macro", zero_division=0)), 6),
            "weighted_f1": round(float(f1_score(actual, predicted, labels=labels, average="weighted",
                                                zero_division=0)), 6)}, per_class

    def score_answers(self, actual: list[str], predicted: list[str], scores: np.ndarray, labels: list[str],
                      cfg: EvaluateConfig) -> Scored:
        """`answer_figures`, the majority class's accuracy, calibration of the top probability (ECE, mean
        confidence); plots: the confusion pairs, the reliability diagram, each class's precision-recall curve
        (one-vs-rest on its probability)."""
        figures, per_class = self.answer_figures(actual, predicted, labels)
        confidence = scores.max(axis=1) if len(scores) else np.zeros(0)
        reliability = reliability_table(confidence, np.array(actual) == np.array(predicted), cfg.calibration_bins)
        majority = pd.Series(actual).value_counts(normalize=True).iloc[0] if actual else 0.0
        metrics = {
            **figures,
            "majority_class_accuracy": round(float(majority), 6),
            "ece": round(expected_calibration_error(reliability), 6),
            "mean_confidence": round(float(confidence.mean()), 6) if len(confidence) else 0.0,
        }
        truth = (encode(actual, labels)[:, None] == np.arange(len(labels))[None, :]).astype(float)
        plots = {"confusion": pd.DataFrame({"actual": actual, "predicted": predicted}),
                 "calibration": reliability.dropna(),
                 "pr_curves": pd.DataFrame(precision_recall_rows(truth, scores, labels),
                                           columns=["label", "threshold", "precision", "recall"])}
        return Scored(metrics, per_class, plots, confidence)

    def slice_scores(self, actual: list[str], predicted: list[str], labels: list[str]) -> dict[str, float]:
        """Accuracy and macro-F1 over the labels the slice holds."""
        from sklearn.metrics import accuracy_score, f1_score

        present = sorted(set(actual) & set(labels)) or labels
        return {"accuracy": round(float(accuracy_score(actual, predicted)), 6),
                "macro_f1": round(float(f1_score(actual, predicted, labels=present, average="macro",
                                                 zero_division=0)), 6)}

    def baseline(self, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
        """Word 1-2-gram TF-IDF and a multinomial logistic regression (C 10)."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import accuracy_score, f1_score

        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        model = LogisticRegression(max_iter=2000, C=10.0)
        model.fit(vectorizer.fit_transform(train["text"]), train["label"])
        predicted = model.predict(vectorizer.transform(test["text"]))
        return {"accuracy": round(float(accuracy_score(test["label"], predicted)), 6),
                "macro_f1": round(float(f1_score(test["label"], predicted, average="macro")), 6)}

    def answer_json(self, scores: np.ndarray, ranked: np.ndarray, labels: Sequence[str], decision: dict[str, Any],
                    top_k: int, all_scores: bool) -> list[dict[str, Any]]:
        """{label, confidence, top_k: [{label, score}]} (and every label's score when asked)."""
        top = ranked[:, :top_k]
        answers = [{"label": labels[top[i, 0]], "confidence": float(scores[i, top[i, 0]]),
                    "top_k": [{"label": labels[j], "score": float(scores[i, j])} for j in top[i]]}
                   for i in range(len(scores))]
        if all_scores:
            for i, answer in enumerate(answers):
                answer["scores"] = dict(zip(labels, scores[i].tolist(), strict=True))
        return answers

    def logged(self, scores: np.ndarray, ranked: np.ndarray, labels: Sequence[str],
               decision: dict[str, Any]) -> tuple[list[str], list[float]]:
        best = ranked[:, 0]
        return np.asarray(labels)[best].tolist(), scores[np.arange(len(scores)), best].astype(float).tolist()

    def v2_outputs(self, answers: list[dict[str, Any]], scores: np.ndarray, labels: Sequence[str]) -> list[dict]:
        """`label` (BYTES [n]) and `confidence` (FP32 [n])."""
        return [{"name": "label", "datatype": "BYTES", "shape": [len(answers)], "data": [a["label"] for a in answers]},
                {"name": "confidence", "datatype": "FP32", "shape": [len(answers)],
                 "data": [a["confidence"] for a in answers]}]

    def v2_parameters(self, labels: Sequence[str]) -> dict[str, Any]:
        return {}

    def v2_output_metadata(self) -> list[dict[str, Any]]:
        return [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "confidence", "datatype": "FP32", "shape": [-1]}]

    def feedback_target(self, label: str | None, labels: list[str] | None,
                        entities: list[dict[str, Any]] | None = None) -> tuple[Any, str | None]:
        if label is None or labels is not None:
            return None, "give the right label as `label` (a string): this model answers one label per text"
        return label, None

    def feedback_schema(self, labels: list[str]) -> dict[str, Any]:
        """`label`: one of the labels."""
        return {"required": ["label"], "properties": {
            "label": {"type": "string", "enum": labels, "description": "the right label"},
            "labels": {"type": "null"}, "entities": {"type": "null"}}}

    def counted(self, answer: str) -> list[str]:
        return [answer]

    def compare(self, actual: list[str], challenger: list[str], champion: Champion, challenger_labels: list[str],
                cfg: GateConfig) -> tuple[dict[str, Any], list[Check]]:
        """Champion vs challenger on the test rows whose true label both models know: macro-F1 non-inferiority
        by paired bootstrap, per-class recall drop, label set changes; McNemar reported beside."""
        info, checks = label_changes(champion.labels, challenger_labels, cfg)
        shared = sorted(set(champion.labels) & set(challenger_labels))
        rows = np.array([label in set(shared) for label in actual], dtype=bool)
        info["rows_compared"], info["rows_excluded"] = int(rows.sum()), int((~rows).sum())
        if not rows.any():
            return {"labels": info}, [*checks, Check("shared_labels", False,
                                                     "no test row has a label both models know")]
        y = encode([a for a, keep in zip(actual, rows, strict=True) if keep], shared)
        new = encode([p for p, keep in zip(challenger, rows, strict=True) if keep], shared)
        old = encode([p for p, keep in zip(champion.predicted, rows, strict=True) if keep], shared)
        boot = paired_bootstrap(y, old, new, len(shared), cfg.bootstrap_samples, cfg.confidence, cfg.seed)
        ones = np.ones((1, len(y)))
        scores = {"challenger": float(weighted_macro_f1(ones, y, new, len(shared))[0]),
                  "champion": float(weighted_macro_f1(ones, y, old, len(shared))[0])}
        checks.append(Check(
            "macro_f1_non_inferiority", boot.low >= -cfg.margin,
            f"macro-F1 challenger {scores['challenger']:.4f} vs champion {scores['champion']:.4f}: difference "
            f"{boot.delta:+.4f}, {boot.confidence:.0%} CI [{boot.low:+.4f}, {boot.high:+.4f}] "
            f"(paired bootstrap, {boot.samples} resamples); lower bound must be >= -gate.margin {-cfg.margin:+.4f}"))
        support, recall_new = recall_by_class(y, new, len(shared))
        _, recall_old = recall_by_class(y, old, len(shared))
        per_class = sorted(({"label": shared[c], "support": int(support[c]),
                             "recall_champion": round(recall_old[c], 4), "recall_challenger": round(recall_new[c], 4),
                             "drop": round(float(recall_old[c] - recall_new[c]), 4)}
                            for c in range(len(shared)) if support[c] >= cfg.min_support),
                           key=lambda row: -row["drop"])
        dropped = [row for row in per_class if row["drop"] > cfg.max_class_recall_drop]
        detail = (", ".join(f"{r['label']} {r['recall_champion']:.2f}→{r['recall_challenger']:.2f}"
                            for r in dropped[:10])
                  if dropped else f"largest drop {per_class[0]['drop']:+.3f}" if per_class
                  else "no class has enough rows")
        rule = f"gate.min_support={cfg.min_support} test rows"
        checks.append(Check(
            "per_class_recall", not dropped,
            f"{len(dropped)} of {len(per_class)} classes with >= {rule} lose more than "
            f"gate.max_class_recall_drop={cfg.max_class_recall_drop:g} recall: {detail}" if dropped else
            f"no class with >= {rule} loses more than {cfg.max_class_recall_drop:g} recall ({detail})"))
        mcnemar = mcnemar_exact(old == y, new == y)
        return {"labels": info, "macro_f1": scores, "bootstrap": asdict(boot), "mcnemar": mcnemar,
                "per_class": per_class}, checks

    def agreement(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
        """1 where both answered the same label, else 0."""
        return (np.asarray(left, dtype=object) == np.asarray(right, dtype=object)).astype(np.float64)

    def frequencies(self, answers: Iterable[str]) -> Counter[str]:
        return Counter(answers)

    def prediction_signals(self, scores: np.ndarray, labels: Sequence[str], decision: dict[str, Any]) -> pd.DataFrame:
        """None beyond every type's (the predicted label's frequencies and its probability)."""
        return pd.DataFrame(index=range(len(scores)))

    def agreements(self, champion: Sequence[str], candidate: Sequence[str]) -> list[Agreement]:
        """The share of texts given the same label."""
        return [Agreement("agreement", self.agreement(champion, candidate), True, "min_agreement")]

    def online_score(self, truth: Sequence[str], candidate: Sequence[str], champion: Sequence[str],
                     confidence: float, seed: int) -> OnlineScore:
        """Accuracy: the mean paired difference of per-text correctness, with a normal interval."""
        mine, theirs = self.agreement(candidate, truth), self.agreement(champion, truth)
        diff, low, high = paired_difference(mine, theirs, z_value(confidence))
        return OnlineScore(self.online_metric_name, float(mine.mean()), float(theirs.mean()), diff, low, high,
                           "paired difference, normal interval")

    def average(self, outputs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
        """The weighted mean of the members' softmax probabilities (rows stay distributions)."""
        return weighted_mean(outputs, weights)


TASK = Classification()
