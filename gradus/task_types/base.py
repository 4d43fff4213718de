"""The task seam's interface: what differs between task types (one label per text today; a label set, spans
per text next), behind one protocol that the stages, the gate, release, compression and ensembles call.

docs/architecture.md ("Task types on one seam") is the contract: the full table of methods per calling stage.
This module holds the part the code calls so far; each task type is a module of this package, and
`gradus.task_types.seam.task_type(name)` is the one place that maps a name to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from gradus.config.pipeline import GateConfig, SplitConfig

DEFAULT_TASK = "classification"  # model.task's default, and the task of every version registered before it existed


@dataclass(frozen=True)
class Check:
    """One gate check: its name, whether it passed, and the sentence that says why."""

    name: str
    passed: bool
    detail: str


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

    def split(self, frame: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
        """The split name (train / val / test) of each validated row: stratified by the target, rows sharing a
        normalised text in one split, stable as data grows (gradus/stratify.py)."""
        ...

    def metrics(self, targets: np.ndarray, output: np.ndarray, decision: dict[str, Any]) -> dict[str, float]:
        """Validation scores from a model's raw output and the encoded targets (the Trainer's compute_metrics):
        the primary metric and what is reported beside it."""
        ...

    def compare(self, actual: list[Any], challenger: list[Any], champion: Champion, challenger_labels: list[str],
                cfg: GateConfig) -> tuple[dict[str, Any], list[Check]]:
        """Champion vs challenger on the same test texts: the gate's comparison checks and their numbers."""
        ...

    def agreement(self, left: Sequence[Any], right: Sequence[Any]) -> np.ndarray:
        """Per text, how far two answers agree, in [0, 1] (1 = the same answer)."""
        ...

    def frequencies(self, answers: Iterable[Any]) -> Counter[str]:
        """How often each label (entity type) is answered: what release and drift compare between answer sets."""
        ...

    def average(self, outputs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
        """Soft voting: the weighted mean of several models' outputs for the same texts, columns aligned."""
        ...
