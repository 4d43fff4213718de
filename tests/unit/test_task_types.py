"""The task seam: only gradus/task_types (and the config's list of names) names a task type; the lookup, the task
of a registered version, and the generic refusals of a model of another task type (gate, ensembles)."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import get_args

import numpy as np
import pytest

from cli.models import describe_version
from gradus.config.params import load_params
from gradus.config.pipeline import GateConfig, ModelConfig, TaskName
from gradus.ensemble import build_ensemble
from gradus.errors import ConfigError, ModelError
from gradus.registry.versions import open_registry, project_registry
from gradus.release.controller import RolledBack, start
from gradus.task_types.base import DEFAULT_TASK, Champion
from gradus.task_types.seam import TASK_TYPES, task_of, task_type
from tasks.gate import verdict
from tests.conftest import ROOT
from tests.helpers.registry import lineage

# Every code folder of the project but the seam itself and the config that lists the names.
CODE = ("gradus", "data_checks", "tasks", "flows", "infra", "serving", "cli", "benchmarks")
EXEMPT = (ROOT / "gradus" / "task_types", ROOT / "gradus" / "config")
# Names planned on the seam (docs/architecture.md): naming one outside the seam is as wrong before it exists.
PLANNED = {"multi_label", "token_classification"}


def task_names_in(path: Path) -> list[tuple[int, str]]:
    """(line, name) of each string constant in a Python file that is a task type's name."""
    names = {*TASK_TYPES, *PLANNED}
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]


def test_only_the_seam_names_task_types() -> None:
    found = {}
    for folder in CODE:
        for path in (ROOT / folder).rglob("*.py"):
            if not any(path.is_relative_to(exempt) for exempt in EXEMPT) and (hits := task_names_in(path)):
                found[str(path.relative_to(ROOT))] = hits
    assert not found, f"only gradus/task_types names task types (call task_type(name) instead): {found}"


def test_the_check_catches_a_branch_on_a_task_name(tmp_path: Path) -> None:
    stage = tmp_path / "stage.py"
    stage.write_text('def run(params):\n    if params.model.task == "classification":\n        return 1\n')
    assert task_names_in(stage) == [(2, "classification")]
    planned = tmp_path / "planned.py"
    planned.write_text('KINDS = {"multi_label": 2}\n')
    assert task_names_in(planned) == [(1, "multi_label")]


def test_the_config_accepts_exactly_the_seams_task_types() -> None:
    assert set(get_args(TaskName)) == set(TASK_TYPES) and DEFAULT_TASK in TASK_TYPES
    assert ModelConfig().task == DEFAULT_TASK  # the config's default and the seam's are one
    assert all(task_type(name).name == name for name in TASK_TYPES)
    with pytest.raises(ConfigError, match=r"model\.task='summaries': no such task type; one of classification"):
        task_type("summaries")


def test_a_version_knows_its_task_type(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    registry = open_registry(str(tmp_path / "registry"))
    record = lineage("task") | {"params": {"train": {"max_length": 32}, "model": {"task": DEFAULT_TASK},
                                           "data": {"sources": []}}}
    manifest, _ = registry.register(tiny_classifier_dir, record, {"accuracy": 0.5}, None, run="test")
    assert manifest["task"] == DEFAULT_TASK == task_of(registry.require(manifest["version"]))
    assert f"task        {DEFAULT_TASK}\n" in describe_version(manifest, [])  # `gradus models show`
    # A version registered before task types existed has neither the key nor the param: the default, its type.
    assert task_of({"lineage": lineage("old")}) == DEFAULT_TASK
    assert task_of({"lineage": {"params": {"model": {"task": "multi_label"}}}}) == "multi_label"


METRICS = {"accuracy": 1.0, "macro_f1": 1.0, "latency": {"batch1_p95_ms": 1.0, "device": "cpu"}}


def test_the_gate_refuses_a_champion_of_another_task_type_naming_both() -> None:
    actual = ["a", "b"] * 30
    champion = Champion("v-champ", ["a", "b"], actual, task="multi_label")
    report = verdict(METRICS, {}, actual, actual,
                     ["a", "b"], champion, GateConfig(min_accuracy=0, min_macro_f1=0), DEFAULT_TASK)
    assert not report["passed"] and "bootstrap" not in report  # refused before any comparison
    [reason] = [c["detail"] for c in report["checks"] if c["name"] == "task_type" and not c["passed"]]
    assert f"challenger is a {DEFAULT_TASK} model but the champion v-champ is a multi_label model" in reason
    # The same champion of the challenger's own type is compared as before: identical answers pass.
    same = verdict(METRICS, {}, actual, actual,
                   ["a", "b"], Champion("v-champ", ["a", "b"], actual), GateConfig(min_accuracy=0, min_macro_f1=0))
    assert same["passed"] and same["bootstrap"]["delta"] == 0.0, same["reasons"]


def test_a_release_of_another_task_type_than_the_champion_is_refused(tmp_path: Path,
                                                                     tiny_classifier_dir: Path) -> None:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    registry = project_registry(tmp_path, load_params(tmp_path / "params.yaml"))
    versions = {}
    for task in (DEFAULT_TASK, "multi_label"):  # registration records whatever the lineage's params say
        record = lineage(task) | {"params": {"train": {"max_length": 32}, "model": {"task": task}}}
        versions[task] = registry.register(tiny_classifier_dir, record, {"accuracy": 0.5}, None, run="test")[0]
    registry.promote(versions[DEFAULT_TASK]["version"], run="test", reason="champion")
    with pytest.raises(RolledBack, match=f"release of {versions['multi_label']['version']}: the challenger is a "
                                         f"multi_label model but the champion .* is a {DEFAULT_TASK} model"):
        start(tmp_path, versions["multi_label"]["version"], {}, "test")
    assert registry.aliases().candidate is None and registry.aliases().canary is None  # nothing moved


def test_an_ensemble_of_two_task_types_is_refused() -> None:
    # Only the members' label sets, versions and manifests are read before the refusal (nothing is predicted).
    first = SimpleNamespace(labels=("a", "b"), version="v1", manifest={"task": DEFAULT_TASK})
    second = SimpleNamespace(labels=("a", "b"), version="v2", manifest={"task": "multi_label"})
    with pytest.raises(ModelError, match=f"different task types \\(v1: {DEFAULT_TASK}, v2: multi_label\\)"):
        build_ensemble([first, second], [1.0, 1.0])
    assert build_ensemble([first, SimpleNamespace(**{**vars(second), "manifest": None})], [1.0, 2.0]).task == \
        DEFAULT_TASK  # a model loaded from a folder (no manifest) is of the default type


def test_classification_agreement_and_soft_voting() -> None:
    kind = task_type(DEFAULT_TASK)
    assert kind.agreement(["a", "b", "c"], ["a", "c", "c"]).tolist() == [1.0, 0.0, 1.0]
    assert kind.frequencies(["a", "b", "a"]) == {"a": 2, "b": 1}
    left, right = np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[0.5, 0.5], [0.6, 0.4]])
    np.testing.assert_allclose(kind.average([left, right], [1.0, 3.0]), (left + 3 * right) / 4)
