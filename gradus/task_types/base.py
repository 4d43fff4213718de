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

from gradus.config.pipeline import GateConfig

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


class TaskType(Protocol):
    """What a task type supplies. `answers` are decoded answers, one per text, in the task's internal form
    (a label; a label set; a span list); `outputs` are a model's raw scores for a batch (rows x vocabulary)."""

    name: str
    target_column: str   # the validated data's and the splits' target column
    primary_metric: str  # the metrics' key that model selection, early stopping and the gate judge
    primary_metric_name: str  # how people read it ("macro-F1")

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
