"""The task seam's interface: what differs between task types (one label per text today; a label set, spans
per text next), behind one protocol that the stages, the gate, release, compression and ensembles call.

docs/architecture.md ("Task types on one seam") is the contract: the full table of methods per calling stage.
This module holds the part the code calls so far; each task type is a module of this package, and
`gradus.task_types.seam.task_type(name)` is the one place that maps a name to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from gradus.config.pipeline import EvaluateConfig, GateConfig, SplitConfig, StageParams

if TYPE_CHECKING:  # the probe imports the model code, which reads task types: no import at load time
    from gradus.probe import LinearHead

DEFAULT_TASK = "classification"  # model.task's default, and the task of every version registered before it existed
# How reports spell the metrics' keys.
METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "micro_f1": "micro-F1", "samples_f1": "samples-F1",
                "weighted_f1": "weighted-F1", "subset_accuracy": "subset accuracy", "hamming_loss": "Hamming loss"}


@dataclass(frozen=True)
class Check:
    """One gate check: its name, whether it passed, and the sentence that says why."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class RowRule:
    """One row-level data check a task type asks the validate stage for, declared without Great Expectations
    (data_checks/suite.py makes each an expectation): `column`'s values must be null (`null`), present
    (`not_null`), not blank (`not_blank`), or in `values` (`in_set`; a null passes). A failing row's reason is
    `reason`, followed by the row's `detail_column` where one is named (the row's own words of what is wrong)."""

    name: str
    column: str
    expect: str
    reason: str
    values: tuple[Any, ...] = ()
    detail_column: str | None = None


@dataclass(frozen=True)
class Targets:
    """What the validate stage learns of the targets, row-aligned with its frame: the columns the type's row
    rules check (its target column included), each row's canonical target (`key`: the same normalised text under
    two keys is a conflict, under the same key a duplicate; None where the target is unreadable) and the label
    vocabulary rows must stay within (params' allowed labels, else the labels frequent enough)."""

    columns: dict[str, pd.Series]
    key: pd.Series
    vocabulary: list[str]
    inferred: bool
    counts: dict[str, int] = field(default_factory=dict)  # numbers for the validation report (repairs made)


@dataclass(frozen=True)
class Scored:
    """A model's answers on the test split, scored by its task type: the headline figures (metrics.json), the
    per-label table (per_class.json), the DVC plots' rows (confusion, calibration, pr_curves) and a confidence per
    text (the predictions file)."""

    metrics: dict[str, Any]
    per_label: dict[str, Any]
    plots: dict[str, pd.DataFrame]
    confidence: np.ndarray


@dataclass(frozen=True)
class Agreement:
    """One way a release judges two models' answers to the same texts: a value per text in [0, 1] (`binary`: each
    0 or 1, judged by a Wilson interval; else by a normal interval on the mean), whose lower bound must reach the
    release setting named by `limit`."""

    name: str
    values: np.ndarray
    binary: bool
    limit: str


@dataclass(frozen=True)
class OnlineScore:
    """Candidate vs champion on the texts users labelled (feedback) during a release: the primary metric of each
    and their difference with its interval."""

    name: str
    candidate: float
    champion: float
    difference: float
    low: float
    high: float
    method: str


@dataclass(frozen=True)
class Champion:
    """The current champion's answers on the challenger's test split, the vocabulary it knows (labels) and its
    task type's name."""

    version: str
    labels: list[str]
    predicted: list[Any]
    task: str = DEFAULT_TASK


def label_changes(champion: list[str], challenger: list[str], cfg: GateConfig) -> tuple[dict[str, Any], list[Check]]:
    """What changed in the label set, and whether params allow it."""
    added, removed = sorted(set(challenger) - set(champion)), sorted(set(champion) - set(challenger))
    info = {"shared": len(set(champion) & set(challenger)), "added": added, "removed": removed}
    checks = []
    if added:
        checks.append(Check("new_labels", cfg.allow_new_labels,
                            f"challenger adds {len(added)} label(s) the champion does not know: {added[:10]}"
                            + ("" if cfg.allow_new_labels else "; set gate.allow_new_labels=true to accept them")))
    if removed:
        checks.append(Check("removed_labels", cfg.allow_removed_labels,
                            f"challenger drops {len(removed)} label(s) the champion knows: {removed[:10]}"
                            + ("" if cfg.allow_removed_labels else "; set gate.allow_removed_labels=true to accept")))
    return info, checks


def imbalance_failure(counts: pd.Series, ratio: float, kind: str) -> list[str]:
    """The largest over the smallest count of `counts` above validate.max_imbalance_ratio, as a failure."""
    if not len(counts) or counts.max() / counts.min() <= ratio:
        return []
    return [f"{kind} imbalance {counts.idxmax()}={counts.max()} vs {counts.idxmin()}={counts.min()} "
            f"(ratio {counts.max() / counts.min():.1f} > validate.max_imbalance_ratio {ratio:g})"]


def short_labels(counts: pd.Series, allowed: Iterable[str], min_examples: int, kind: str) -> list[str]:
    """Allowed labels with fewer kept rows than validate.min_examples_per_class, as a failure."""
    short = {label: int(counts.get(label, 0)) for label in allowed if counts.get(label, 0) < min_examples}
    return [f"{kind} below validate.min_examples_per_class={min_examples}: {short}"] if short else []


def encode_texts(task: TaskType, frame: pd.DataFrame, tokenizer: Any, vocabulary: list[str],
                 max_length: int) -> tuple[dict[str, list[list[int]]], list[Any]]:
    """One row per text, truncated to max_length, its target as the type encodes it: the sequence types'
    `encode` (no padding: the collator pads each batch)."""
    targets = task.encode_targets(frame, vocabulary)
    return dict(tokenizer(list(frame["text"]), truncation=True, max_length=max_length)), targets


def padding_collator(tokenizer: Any) -> Any:
    """Pads each batch to its longest row: the sequence types' collator."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


class PerText:
    """What the types answering per text (a row of scores per text: a label, a label set) share: one row per text
    for training, padded batches, the answer unchanged by a harmless perturbation, no own perturbations, answers
    stored as they are, a label ranking per text."""

    windowed = False  # a model's output is a row of scores per text
    baseline_name = "TF-IDF baseline"  # how reports name `baseline`'s figures

    def encode(self, frame: pd.DataFrame, tokenizer: Any, vocabulary: list[str], max_length: int,
               params: StageParams) -> tuple[dict[str, list[list[int]]], list[Any]]:
        return encode_texts(self, frame, tokenizer, vocabulary, max_length)

    def collator(self, tokenizer: Any) -> Any:
        return padding_collator(tokenizer)

    def unchanged(self, answer: Any, before: str, after: str) -> Any:
        return answer

    def own_perturbations(self, texts: list[str], answers: list[Any], rows: np.ndarray, rng: np.random.Generator,
                          train: pd.DataFrame) -> dict[str, list[tuple[int, str, Any]]]:
        return {}

    def answer_rows(self, answers: list[Any]) -> list[Any]:
        return list(answers)

    def target_problem(self, text: str, target: Any) -> str | None:
        return None

    def answer_labels(self, vocabulary: Sequence[str]) -> list[str]:
        return list(vocabulary)

    def rank(self, scores: Any) -> np.ndarray:
        return np.argsort(-scores, axis=1, kind="stable")

    def columns(self, scores: Any, columns: list[int]) -> Any:
        return scores[:, columns].astype(np.float64)


def weighted_mean(outputs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Soft voting's arithmetic, the same for every type: the weighted mean of aligned outputs."""
    total = np.zeros(outputs[0].shape, dtype=np.float64)
    for output, weight in zip(outputs, weights, strict=True):
        total += weight * output
    return total / float(sum(weights))


class TaskType(Protocol):
    """What a task type supplies. `answers` are decoded answers, one per text, in the task's internal form
    (a label; a label set; a span list); `outputs` are a model's raw scores for a batch (rows x vocabulary)."""

    name: str
    target_column: str   # the validated data's and the splits' target column
    primary_metric: str  # the metrics' key that model selection, early stopping and the gate judge
    primary_metric_name: str  # how people read it ("macro-F1")

    target_form: str       # the internal form's name ("label", "label_set"): data checks pick their model by it
    problem_type: str | None  # transformers' problem_type of a sequence head (the loss its model computes); None: none
    headline_metric: str   # the figure reports lead with and the probe's gain is measured in ("accuracy")
    report_metrics: tuple[str, ...]  # the test figures reports, `models show` and `diff` print, in order
    online_metric_name: str  # what a release judges on users' feedback ("accuracy"): `online_score`'s name
    label_cells_are_labels: bool  # ingest trims and case-folds label cells (not entity structures)
    architecture_suffix: str | None  # a saved model's class name ends so where its head tells the type
    auto_model: str  # the transformers Auto class that builds and loads the type's model
    probe_heads: bool  # the frozen-encoder probe answers it (train.method lp_ft / auto / probe, evaluate.probe)
    baseline_name: str  # how reports name the cheap baseline `baseline` fits ("TF-IDF baseline")
    windowed: bool  # outputs are per text windows of token probabilities (spans.TextWindows), not a score row

    def targets(self, frame: pd.DataFrame) -> list[Any]:
        """A split's targets as plain Python values of the internal form (Parquet hands lists back as arrays)."""
        ...

    def floors(self, cfg: GateConfig) -> list[tuple[str, str, float]]:
        """The first model's absolute floors: (check name, metric key, the gate setting's floor)."""
        ...

    def settings(self, params: StageParams) -> dict[str, Any]:
        """The type's own section of params.yaml as a dict (what makes two trainings of it differ); {} if none."""
        ...

    def demo(self, rows: int, seed: int) -> tuple[pd.DataFrame, str]:
        """The embedded demo data of this type (text, label columns as the type reads them) and its name."""
        ...

    def read_targets(self, frame: pd.DataFrame, params: StageParams) -> Targets:
        """The validate stage's view of the raw snapshot's label cells (`label`, `label_type`): parsed into the
        internal form, normalised, with the derived columns the row rules check."""
        ...

    def row_rules(self, params: StageParams, targets: Targets) -> list[RowRule]:
        """The row checks on the target (the text's checks are shared): each failing row is quarantined."""
        ...

    def batch_failures(self, kept: pd.DataFrame, params: StageParams) -> list[str]:
        """Checks on the kept rows as a whole (too few examples of a label, imbalance): one sentence each."""
        ...

    def split(self, frame: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
        """The split name (train / val / test) of each validated row: stratified by the target, rows sharing a
        normalised text in one split, stable as data grows (gradus/stratify.py)."""
        ...

    def vocabulary(self, frame: pd.DataFrame) -> list[str]:
        """The labels a model trained on `frame` knows, sorted: its output columns, in order."""
        ...

    def encode_targets(self, frame: pd.DataFrame, vocabulary: list[str]) -> list[Any]:
        """What the Trainer's `labels` hold per row (a label id; a multi-hot row); a label outside `vocabulary`
        is refused naming it."""
        ...

    def encode(self, frame: pd.DataFrame, tokenizer: Any, vocabulary: list[str], max_length: int,
               params: StageParams) -> tuple[dict[str, list[list[int]]], list[Any]]:
        """The Trainer's rows of a split (tokenized inputs, no padding) and their `labels`: a row per text (a label
        id; a multi-hot row), or a row per window of a text with a label per token (entities)."""
        ...

    def collator(self, tokenizer: Any) -> Any:
        """The data collator that pads a batch of the rows `encode` makes (their labels too, where per token)."""
        ...

    def fit_probe_head(self, train_x: np.ndarray, train: pd.DataFrame, val_x: np.ndarray, val: pd.DataFrame,
                       seed: int) -> LinearHead:
        """The frozen-encoder probe's linear head on embeddings (rows in the vocabulary's order), C chosen on val,
        scored with `metrics`' keys: the baseline fine-tuning must beat, and where LP-FT starts."""
        ...

    def loss_function(self, targets: list[Any], params: StageParams) -> Callable[..., Any] | None:
        """The Trainer's compute_loss_func for the training targets (positive weights for rare labels); None: the
        model's own loss (the head's problem_type)."""
        ...

    def decision(self, targets: np.ndarray, scores: Callable[[], np.ndarray], vocabulary: list[str],
                 params: StageParams) -> dict[str, Any]:
        """How answers are decoded from the kept model's validation scores (`scores()`, computed only when asked),
        stored with the model as decision.json; {} when the type decodes without one (argmax)."""
        ...

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """A model's scores from its raw logits (softmax probabilities; sigmoid scores): its `Output`."""
        ...

    def decode(self, scores: np.ndarray, labels: Sequence[str], decision: dict[str, Any]) -> list[Any]:
        """Each text's answer from the scores: the most probable label; the labels over their thresholds."""
        ...

    def metrics(self, targets: np.ndarray, output: np.ndarray, decision: dict[str, Any]) -> dict[str, float]:
        """Validation scores from a model's raw output and the encoded targets (the Trainer's compute_metrics):
        the primary metric and what is reported beside it."""
        ...

    def answer_figures(self, actual: list[Any], predicted: list[Any],
                       labels: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
        """The figures of answers alone (no scores: what compression parity and benchmarks compare) and the
        per-label table."""
        ...

    def score_answers(self, actual: list[Any], predicted: list[Any], scores: np.ndarray, labels: list[str],
                      cfg: EvaluateConfig) -> Scored:
        """The evaluate stage's figures of a model's answers and scores against the test split's targets."""
        ...

    def slice_scores(self, actual: list[Any], predicted: list[Any], labels: list[str]) -> dict[str, float]:
        """The figures reported per slice of the test split (text length, a metadata column's value)."""
        ...

    def baseline(self, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
        """A TF-IDF + logistic regression baseline fitted on train (val where it chooses something), scored on
        test with `slice_scores`' figures: what a fine-tuned model must beat cheaply."""
        ...

    def answer_json(self, scores: np.ndarray, ranked: np.ndarray, labels: Sequence[str], decision: dict[str, Any],
                    top_k: int, all_scores: bool) -> list[dict[str, Any]]:
        """The service's answer per text (/v1/predict): one label with its confidence and the top_k; the labels
        over their thresholds with their scores. `ranked`: each row's label indexes by falling score."""
        ...

    def logged(self, scores: np.ndarray, ranked: np.ndarray, labels: Sequence[str],
               decision: dict[str, Any]) -> tuple[list[Any], list[float]]:
        """Each text's answer as the prediction log stores it (a label; a label list) and its confidence (the
        answered label's probability; the highest score)."""
        ...

    def v2_outputs(self, answers: list[dict[str, Any]], scores: np.ndarray, labels: Sequence[str]) -> list[dict]:
        """The Open Inference Protocol v2 output tensors of a batch of answers (docs/serving.md lists them)."""
        ...

    def v2_parameters(self, labels: Sequence[str]) -> dict[str, Any]:
        """What an infer response's parameters add to read its outputs (the label order of a score matrix)."""
        ...

    def v2_output_metadata(self) -> list[dict[str, Any]]:
        """The output tensors' names, datatypes and shapes, as the v2 model metadata states them."""
        ...

    def feedback_target(self, label: str | None, labels: list[str] | None,
                        entities: list[dict[str, Any]] | None = None) -> tuple[Any, str | None]:
        """(The target a feedback request gives, in the internal form; or None and why it gives none): one
        `label`; a `labels` list; `entities` (start, end, type)."""
        ...

    def target_problem(self, text: str, target: Any) -> str | None:
        """Why a feedback target cannot be stored for its text (entities outside it, overlapping); None if it can."""
        ...

    def answer_labels(self, vocabulary: Sequence[str]) -> list[str]:
        """The labels answers are made of, from a model's output vocabulary (its labels; an entity model's types,
        not its B-/I- tags)."""
        ...

    def rank(self, scores: Any) -> np.ndarray:
        """Each text's label indexes by falling score (the service's top_k), computed once per batch."""
        ...

    def columns(self, scores: Any, columns: list[int]) -> Any:
        """A model's output with its label columns in another order (`columns`: the index of each wanted label),
        as float64: how an ensemble aligns its members before averaging."""
        ...

    def unchanged(self, answer: Any, before: str, after: str) -> Any | None:
        """The answer expected for `after`, a perturbation of `before` that should not change it (the same answer;
        None where it cannot be said: entities whose offsets the perturbation moved)."""
        ...

    def own_perturbations(self, texts: list[str], answers: list[Any], rows: np.ndarray, rng: np.random.Generator,
                          train: pd.DataFrame) -> dict[str, list[tuple[int, str, Any]]]:
        """The type's own behavioural checks: name -> (row, perturbed text, the answer expected); {} if none."""
        ...

    def answer_rows(self, answers: list[Any]) -> list[Any]:
        """Answers as a table (Parquet) stores them."""
        ...

    def compare(self, actual: list[Any], challenger: list[Any], champion: Champion, challenger_labels: list[str],
                cfg: GateConfig) -> tuple[dict[str, Any], list[Check]]:
        """Champion vs challenger on the same test texts: the gate's comparison checks and their numbers."""
        ...

    def agreement(self, left: Sequence[Any], right: Sequence[Any]) -> np.ndarray:
        """Per text, how far two answers agree, in [0, 1] (1 = the same answer)."""
        ...

    def prediction_signals(self, scores: np.ndarray, labels: Sequence[str], decision: dict[str, Any]) -> pd.DataFrame:
        """The drift monitor's numerical signals of this type per text, beyond every type's (the answered labels'
        frequencies, the top score, the embeddings): a column per signal, or `<signal>:<part>` columns for a signal
        judged over several distributions (each label's score); drift.signals names the signals."""
        ...

    def agreements(self, champion: Sequence[Any], candidate: Sequence[Any]) -> list[Agreement]:
        """How a release compares the champion's and the candidate's answers to the same texts: the first is the
        `agreement` check (release.min_agreement), others follow with their own limits."""
        ...

    def online_score(self, truth: Sequence[Any], candidate: Sequence[Any], champion: Sequence[Any],
                     confidence: float, seed: int) -> OnlineScore:
        """The primary metric of both models on the texts users gave the right answer for, paired, with an
        interval at `confidence`: what the release's online check judges."""
        ...

    def feedback_schema(self, labels: list[str]) -> dict[str, Any]:
        """The JSON Schema part of a feedback request that carries the right answer, over the labels served."""
        ...

    def counted(self, answer: Any) -> list[str]:
        """The labels one answer counts towards (the service's per-label prediction counter)."""
        ...

    def frequencies(self, answers: Iterable[Any]) -> Counter[str]:
        """How often each label (entity type) is answered: what release and drift compare between answer sets."""
        ...

    def average(self, outputs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
        """Soft voting: the weighted mean of several models' outputs for the same texts, columns aligned."""
        ...
