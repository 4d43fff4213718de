"""The one place that maps a task type's name to its module, and what every caller needs around it: the
default task, the task of a registered version, and the refusal of a champion of another task type."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from gradus.errors import ConfigError
from gradus.task_types.base import DEFAULT_TASK, Check, TaskType

_MODULES = {"classification": "gradus.task_types.classification", "multi_label": "gradus.task_types.multi_label",
            "token_classification": "gradus.task_types.token_classification"}
TASK_TYPES = tuple(_MODULES)

__all__ = ["DEFAULT_TASK", "TASK_TYPES", "cross_task_check", "task_of", "task_of_model", "task_type"]


def task_type(name: str) -> TaskType:
    """The task type called `name`; an unknown name is refused with the names there are."""
    if name not in _MODULES:
        raise ConfigError(f"model.task={name!r}: no such task type; one of {', '.join(TASK_TYPES)}")
    return import_module(_MODULES[name]).TASK


def task_of(manifest: dict[str, Any]) -> str:
    """The task type of a registered version: its manifest's `task`, else the params it was trained with, else
    the default (versions registered before task types existed were all of it)."""
    if manifest.get("task"):
        return str(manifest["task"])
    params = (manifest.get("lineage") or {}).get("params") or {}
    return str((params.get("model") or {}).get("task") or DEFAULT_TASK)


def task_of_model(config: Any) -> str:
    """The task type a model folder was trained for, from its config: the type whose head class it has (a
    token-classification head), else the type whose head has its problem_type (the head's loss), else the default
    (heads of one label per text leave problem_type unset or set it to theirs)."""
    architectures = getattr(config, "architectures", None) or []
    for name in TASK_TYPES:
        suffix = task_type(name).architecture_suffix
        if suffix and any(str(architecture).endswith(suffix) for architecture in architectures):
            return name
    problem_type = getattr(config, "problem_type", None)
    for name in TASK_TYPES:
        kind = task_type(name)
        if name != DEFAULT_TASK and kind.problem_type is not None and kind.problem_type == problem_type:
            return name
    return DEFAULT_TASK


def cross_task_check(champion: str, challenger: str, champion_version: str) -> Check | None:
    """A champion is replaced only by a model of its own task type: None when they match, else the failed check
    that names both (their answers cannot be compared, nor served to the same clients)."""
    if champion == challenger:
        return None
    return Check("task_type", False,
                 f"the challenger is a {challenger} model but the champion {champion_version} is a {champion} model: "
                 f"a champion is only replaced by a model of its own task type (train with model.task={champion}, "
                 f"or give the new task a registry of its own: registry.uri)")
