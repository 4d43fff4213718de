"""A real service: `gradus serve` in its own process on a loopback port, over a real registry holding tiny
classifiers (the real MiniLM tokenizer), reached over real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from cli.processes import free_port, start_until_ready
from gradus.modeling import DECISION_FILE, save_label_map
from gradus.registry.versions import Registry, open_registry
from gradus.task_types.multi_label import TASK as LABEL_SETS
from tests.conftest import ROOT, tool_env
from tests.helpers.registry import lineage

ADMIN_TOKEN = "test-admin-token"
SET_LABELS = ["billing", "card", "refund", "urgent"]
SET_THRESHOLDS = {"global": 0.5, "per_label": {"urgent": 0.3}, "labels": SET_LABELS, "rule": "set by the test"}


def classifier_variant(base: Path, out: Path, seed: int) -> Path:
    """The tiny classifier with other random weights: another model of the same labels."""
    shutil.copytree(base, out)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base)
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.5)
    model.save_pretrained(out)
    return out


class Project:
    """A project folder with a params.yaml and a registry, and the versions registered in it."""

    def __init__(self, root: Path, versions: list[str]) -> None:
        self.root, self.versions = root, versions
        self.params = root / "params.yaml"

    def registry(self) -> Registry:
        return open_registry(str(self.root / "registry"), cache=self.root / "cache")

    def set(self, **values: object) -> None:
        raw = yaml.safe_load(self.params.read_text())
        for dotted, value in values.items():
            node = raw
            *parents, last = dotted.split("__")
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = value
        self.params.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture()
def project(tmp_path: Path, tiny_classifier_dir: Path) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    registry = open_registry(str(root / "registry"), cache=root / "cache")
    versions = []
    for number, seed in enumerate((1, 2, 3)):
        folder = tiny_classifier_dir if number == 0 else classifier_variant(
            tiny_classifier_dir, tmp_path / f"variant-{number}", seed)
        manifest, _ = registry.register(folder, lineage(f"serve-{number}"), {"accuracy": 0.5},
                                        {"passed": True, "reasons": []}, run="test")
        versions.append(manifest["version"])
    registry.promote(versions[1], run="test", reason="first champion")  # a variant: confident answers
    proj = Project(root, versions)
    proj.set(serving__poll_interval_s=0.2, serving__max_wait_ms=5, serving__shutdown_delay_s=0,
             serving__prediction_log={"uri": "predictions", "format": "parquet", "flush_rows": 50,
                                      "flush_seconds": 0.5, "buffer_rows": 100000, "mask_pii": False},
             serving__feedback="feedback", serving__device="cpu", serving__threads=1)
    return proj


def register_label_set_model(project: Project | Path, folder: Path, tag: str, decision: dict) -> str:
    """A label-set model folder (its decision.json written from `decision`) registered under its own lineage."""
    (folder / DECISION_FILE).write_text(json.dumps(decision))
    root = project.root if isinstance(project, Project) else project
    made = lineage(tag) | {"params": {"train": {"max_length": 32}, "model": {"task": LABEL_SETS.name}},
                           "decision": decision}
    manifest, _ = open_registry(str(root / "registry"), cache=root / "cache").register(
        folder, made, {"micro_f1": 0.5}, {"passed": True, "reasons": []}, run="test")
    assert manifest["task"] == LABEL_SETS.name
    return manifest["version"]


@pytest.fixture()
def label_set_project(tmp_path: Path, tiny_model_dir: Path) -> Project:
    """A project whose champion answers label sets (model.task multi_label): the tiny encoder with a sigmoid head
    of random weights over SET_LABELS and SET_THRESHOLDS, its folder at tmp_path / "label-set-model"."""
    folder = tmp_path / "label-set-model"
    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=len(SET_LABELS),
                                                               problem_type=LABEL_SETS.problem_type)
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.5)  # scores spread over (0, 1): some labels over their thresholds, some not
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    save_label_map(folder, SET_LABELS)
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    version = register_label_set_model(root, folder, "label-sets", SET_THRESHOLDS)
    open_registry(str(root / "registry"), cache=root / "cache").promote(version, run="test", reason="first champion")
    return served_project(root, [version], LABEL_SETS.name)


def served_project(root: Path, versions: list[str], task: str) -> Project:
    """A project of `task` models, its service set to log every answer at once, on one CPU thread, in fp32 (the tests
    compare served answers with the model's own; auto may pick bf16 under load)."""
    project = Project(root, versions)
    project.set(serving__poll_interval_s=0.2, serving__max_wait_ms=5, serving__shutdown_delay_s=0,
                serving__prediction_log={"uri": "predictions", "format": "jsonl", "flush_rows": 1,
                                         "flush_seconds": 0.2, "buffer_rows": 1000, "mask_pii": False},
                serving__feedback="feedback", serving__device="cpu", serving__threads=1, model__task=task,
                serving__precision="fp32")
    return project


class Service:
    """`gradus serve` in a subprocess; `client` talks to it over loopback HTTP."""

    def __init__(self, project: Project, port: int, process: subprocess.Popen, log: Path) -> None:
        self.project, self.port, self.process, self.log = project, port, process, log
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels`."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.client.get("/metrics").text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total


def start_service(project: Project, env: dict[str, str] | None = None, wait_ready: bool = True,
                  port: int | None = None) -> Service:
    port = port or free_port()
    log = project.root / f"service-{port}.log"
    environment = tool_env() | {ADMIN_ENV: ADMIN_TOKEN} | (env or {})
    process = start_until_ready([str(Path(sys.executable).parent / "gradus"), "serve", "--port", str(port),
                                 "--params", str(project.params)], f"http://127.0.0.1:{port}/v2/health/ready",
                                log, env=environment, cwd=project.root, accept=(200,) if wait_ready else (200, 503))
    return Service(project, port, process, log)


def stop_service(service: Service) -> int:
    if service.process.poll() is None:
        os.killpg(service.process.pid, signal.SIGTERM)
        try:
            service.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait()
    service.client.close()
    return service.process.returncode


ADMIN_ENV = "GRADUS_ADMIN_TOKEN"


@pytest.fixture()
def service(project: Project) -> Iterator[Service]:
    running = start_service(project)
    yield running
    stop_service(running)


ENTITY_TAGS = ["O", "B-amount", "I-amount", "B-merchant", "I-merchant"]


@pytest.fixture()
def entity_project(tmp_path: Path, tiny_model_dir: Path) -> Project:
    """A project whose champion answers entities (model.task token_classification): the tiny encoder with a token
    head of random weights over ENTITY_TAGS, reading 16 tokens a window (4 shared), its folder at
    tmp_path / "entity-model"."""
    from transformers import AutoModelForTokenClassification

    from gradus.task_types.token_classification import TASK as ENTITIES

    folder = tmp_path / "entity-model"
    torch.manual_seed(5)
    model = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=len(ENTITY_TAGS))
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.5)  # tags spread over the words: some entities found, some not
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    save_label_map(folder, ENTITY_TAGS)
    (folder / "training_summary.json").write_text(json.dumps({"max_length": 16, "stride": 4}))
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    version = register_entity_model(root, folder, "entities")
    open_registry(str(root / "registry"), cache=root / "cache").promote(version, run="test", reason="first champion")
    return served_project(root, [version], ENTITIES.name)


def register_entity_model(root: Path, folder: Path, tag: str) -> str:
    """An entity model folder registered under its own lineage (16-token windows)."""
    from gradus.task_types.token_classification import TASK as ENTITIES

    made = lineage(tag) | {"params": {"train": {"max_length": 16}, "model": {"task": ENTITIES.name}}}
    manifest, _ = open_registry(str(root / "registry"), cache=root / "cache").register(
        folder, made, {"entity_micro_f1": 0.5}, {"passed": True, "reasons": []}, run="test")
    assert manifest["task"] == ENTITIES.name
    return manifest["version"]
