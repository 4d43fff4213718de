"""Soft voting: several models of one task type answer as one by averaging their outputs (the task type says
how: gradus.task_types), with weights."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradus.errors import ModelError
from gradus.modeling import Predictions
from gradus.task_types.seam import DEFAULT_TASK, task_of, task_type

ENSEMBLE_FILE = "ensemble.json"  # a registered ensemble version's one file: its members and weights


@dataclass(frozen=True)
class EnsembleModel:
    """Members (LoadedModel, OnnxModel) answering together; LoadedModel's face: predict, labels, version."""

    members: tuple[Any, ...]
    weights: tuple[float, ...]
    labels: tuple[str, ...]
    version: str | None = None
    alias: str | None = None
    manifest: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    task: str = DEFAULT_TASK  # the members' task type (they share it: build_ensemble checks)
    # The first member's decoding decision (thresholds) decodes the averaged scores: the members were chosen on
    # the same kind of validation data; a decision chosen for the ensemble itself is not made here.
    decision: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def backend(self) -> str:
        return "ensemble(" + "+".join(member.backend for member in self.members) + ")"

    @property
    def device(self) -> str:
        return str(self.members[0].device)

    @property
    def bf16(self) -> bool:
        return any(member.bf16 for member in self.members)

    @property
    def max_length(self) -> int:
        return max(member.max_length for member in self.members)

    def predict(self, texts: list[str], batch_size: int = 64, embeddings: bool = False) -> Predictions:
        """The weighted mean of the members' probabilities, in this ensemble's label order; embeddings (for
        the drift monitor) are the first member's."""
        outputs, pooled = [], None
        kind = task_type(self.task)
        for number, member in enumerate(self.members):
            columns = [member.labels.index(label) for label in self.labels]
            answer = member.predict(texts, batch_size, embeddings=embeddings and number == 0)
            pooled = answer.embeddings if number == 0 else pooled
            outputs.append(kind.columns(answer.probabilities, columns))
        averaged = kind.average(outputs, self.weights)
        return Predictions(averaged if kind.windowed else averaged.astype(np.float32), self.labels, pooled, self.task,
                           self.decision)


def build_ensemble(members: list[Any], weights: list[float], *, version: str | None = None,
                   alias: str | None = None, manifest: dict[str, Any] | None = None) -> EnsembleModel:
    """An ensemble of loaded models that share one label set; a mismatch is refused, naming the labels."""
    if len(members) < 2 or len(weights) != len(members) or min(weights) <= 0:
        raise ModelError(f"an ensemble needs two or more members with positive weights (got {len(members)} "
                         f"members, weights {weights})")
    first = members[0]
    tasks = [(member.version, member_task(member)) for member in members]  # pairs: versions may repeat or be None
    if len({task for _, task in tasks}) > 1:
        named = ", ".join(f"{version}: {task}" for version, task in tasks)
        raise ModelError(f"ensemble members are of different task types ({named}); soft voting averages the "
                         "answers of one task type")
    for member in members[1:]:
        missing, extra = set(first.labels) - set(member.labels), set(member.labels) - set(first.labels)
        if missing or extra:
            raise ModelError(
                f"ensemble members disagree on labels: {member.version} lacks {sorted(missing) or 'none'} and has "
                f"{sorted(extra) or 'none'} that {first.version} lacks; soft voting needs one shared label set")
    if version is None:
        version = ensemble_id([m.version or "-" for m in members], weights)
    return EnsembleModel(tuple(members), tuple(float(w) for w in weights), tuple(first.labels), version, alias,
                         manifest, tasks[0][1], dict(getattr(first, "decision", {}) or {}))


def member_task(model: Any) -> str:
    """A loaded model's task type: its registered manifest's, else what the model says it answers."""
    return task_of(model.manifest) if getattr(model, "manifest", None) else getattr(model, "task", DEFAULT_TASK)


def ensemble_id(versions: list[str], weights: list[float]) -> str:
    """A stable name for an unregistered ensemble (serving.ensemble), from its members and weights."""
    spec = json.dumps([[v, float(w)] for v, w in zip(versions, weights, strict=True)])
    return "ens-" + hashlib.blake2b(spec.encode(), digest_size=6).hexdigest()


def ensemble_spec(members: list[tuple[str, float]], labels: list[str]) -> dict[str, Any]:
    """The content of a registered ensemble's ENSEMBLE_FILE."""
    return {"members": [{"version": version, "weight": float(weight)} for version, weight in members],
            "labels": list(labels)}
