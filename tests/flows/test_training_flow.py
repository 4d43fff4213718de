"""The training flow against a real (temporary) Prefect server: one task run per stage, overrides, artifact."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort
from prefect.testing.utilities import prefect_test_harness

from flows.training import TrainingOverrides, training_pipeline
from gradus.errors import ConfigError
from gradus.registry.versions import open_registry
from gradus.reports import format_result
from gradus.servable import load_version
from tests.conftest import set_params, sh
from tests.helpers.prefect import artifacts, runs_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


async def _runs_and_artifact(flow_run_id):
    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=50)
    return flow_run, task_runs, artifacts(flow_run_id, "training-metrics")


def test_flow_runs_each_stage_as_a_task_and_applies_overrides(prefect_server, project_repo: Path) -> None:
    set_params(project_repo / "params.yaml", {"compress.enabled": True})  # the ONNX variants, checked below
    sh(["git", "commit", "-qam", "compress"], project_repo)
    committed = (project_repo / "params.yaml").read_bytes()
    state = training_pipeline(TrainingOverrides(epochs=9, extra=["split.seed=7"]), str(project_repo),
                              push=True, return_state=True)
    assert state.is_completed(), state
    result = state.result()
    # The run worked in a workspace of its own: the project's params.yaml and tree are as they were.
    assert (project_repo / "params.yaml").read_bytes() == committed
    assert sh(["git", "status", "--porcelain", "--untracked-files=no"], project_repo).stdout == ""
    assert not (project_repo / "dvc.lock").exists() and not (project_repo / "reports").exists()
    work = Path(result["workspace"]["path"])
    assert work.parent == project_repo / ".gradus" / "runs" and not result["workspace"]["reused"]
    assert [s["stage"] for s in result["stages"]] == ["ingest", "validate", "split", "train", "evaluate", "compress",
                                                      "gate"]
    assert all(s["ran"] for s in result["stages"])
    assert result["param_changes"] == {"train.epochs": {"old": 12, "new": 9.0}, "split.seed": {"old": 42, "new": 7}}

    # The overrides reached the stages: DVC recorded them as the params the stages ran with.
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] == 9.0
    assert lock["stages"]["split"]["params"]["params.yaml"]["split"]["seed"] == 7
    metrics = json.loads((work / "reports" / "metrics.json").read_text())
    assert result["metrics"] == metrics
    data = result["data"]
    assert data["rows_in"] == 900 and data["rows_in"] == data["rows_kept"] + data["rows_quarantined"]
    summary = format_result(result)
    assert f"test accuracy  {metrics['accuracy']:.4f}" in summary
    assert f"{data['rows_quarantined']} quarantined" in summary
    assert str(work / "models" / "candidate") in summary and f"{work} (new); params.yaml untouched" in summary

    flow_run, task_runs, published = asyncio.run(_runs_and_artifact(state.state_details.flow_run_id))
    assert flow_run.name and flow_run.state.is_completed()
    names = [run.name for run in task_runs]
    assert names[:7] == ["ingest", "validate", "split", "train", "evaluate", "compress", "gate"], names
    assert [n.rsplit("-", 1)[0] for n in names[7:]] == ["dvc-push", "register-model", "apply-gate"], names
    assert all(run.state.is_completed() for run in task_runs)
    assert len(published) == 1 and published[0]["type"] == "markdown", published
    assert f"{metrics['accuracy']:.4f}" in published[0]["data"] and "| train | yes |" in published[0]["data"]
    docs = work / "reports" / "data_docs" / "index.html"
    assert f"]({docs.as_uri()})" in published[0]["data"] and docs.is_file()

    # The first model passed the gate on absolute thresholds: registered, champion and candidate.
    assert result["gate"]["passed"] and result["gate"]["mode"] == "first_model", result["gate"]
    version = result["registry"]["version"]
    assert result["registry"]["created"] and result["registry"]["moved"]
    assert result["registry"]["aliases"]["champion"] == result["registry"]["aliases"]["candidate"] == version
    [gate_artifact] = artifacts(state.state_details.flow_run_id, "gate-report")
    assert "# Gate PASSED" in gate_artifact["data"] and version in gate_artifact["data"]

    # Lineage: the version's manifest holds the dvc.lock entries and the commit that made it.
    registry = open_registry(str(project_repo / "registry"))
    manifest = registry.require(version)
    for stage in ("ingest", "validate", "split", "train"):
        outs = {o["path"]: o["md5"] for o in lock["stages"][stage]["outs"]}
        assert manifest["lineage"]["dvc_lock"][stage]["outs"] == outs, stage
    head = sh(["git", "rev-parse", "HEAD"], project_repo).stdout.strip()
    assert manifest["lineage"]["code"] == {"commit": head, "branch": "main", "modified": []}
    assert manifest["lineage"]["params"]["train"]["epochs"] == 9.0
    compression = json.loads((work / "reports" / "compression.json").read_text())
    assert manifest["metrics"] == metrics | {"compression": compression}
    assert manifest["lineage"]["base_model"]["revision"].startswith("sha256:")

    # A second run with the same params and overrides takes the same workspace: every stage but the gate is up
    # to date there (the run-scoped overrides are the same), and nothing new is registered.
    again = training_pipeline(TrainingOverrides(epochs=9, extra=["split.seed=7"]), str(project_repo), push=False)
    assert again["workspace"] == {**result["workspace"], "reused": True, "same_params": True}
    assert [s["ran"] for s in again["stages"]] == [False] * 6 + [True]
    assert again["param_changes"] == result["param_changes"]
    assert again["registry"]["version"] == version and not again["registry"]["created"]
    assert again["gate"]["mode"] == "challenger" and again["gate"]["passed"]  # identical to the champion
    assert registry.aliases().generation == 1

    # A clearly worse model fails the gate: registered for the record, no alias moves, reasons given.
    worse_state = training_pipeline(TrainingOverrides(epochs=0.2), str(project_repo), push=False,
                                    return_state=True)
    worse = worse_state.result()
    assert not worse["gate"]["passed"] and worse["gate"]["champion"] == version
    assert any("macro-F1 challenger" in reason for reason in worse["gate"]["reasons"]), worse["gate"]
    assert worse["registry"]["aliases"]["champion"] == version and not worse["registry"]["moved"]
    assert registry.aliases().generation == 1
    assert "FAILED against champion" in format_result(worse)
    [failed_artifact] = artifacts(worse_state.state_details.flow_run_id, "gate-report")
    assert "# Gate FAILED" in failed_artifact["data"] and "## Why it failed" in failed_artifact["data"]
    assert registry.audit_log()[-1]["outcome"] == "failed"
    assert worse["workspace"]["path"] != str(work)  # the pool's second workspace: the first keeps its outputs
    assert (project_repo / "params.yaml").read_bytes() == committed

    # A run without overrides trains with the committed values: the earlier runs' overrides reached nothing.
    plain = training_pipeline(TrainingOverrides(), str(project_repo), push=False)
    plain_lock = yaml.safe_load((Path(plain["workspace"]["path"]) / "dvc.lock").read_text())
    assert plain_lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] == 12
    assert plain_lock["stages"]["split"]["params"]["params.yaml"]["split"]["seed"] == 42
    assert plain["param_changes"] == {} and plain["stages"][3] == {**plain["stages"][3], "ran": True}
    plain_params = registry.require(plain["registry"]["version"])["lineage"]["params"]
    assert plain_params["train"]["epochs"] == 12 and plain_params["split"]["seed"] == 42
    assert (project_repo / "params.yaml").read_bytes() == committed

    # The CLI over the real run's registry (params.yaml in the project names it).
    listing = sh(["gradus", "models", "list"], project_repo).stdout
    assert version in listing and worse["registry"]["version"] in listing and "FAIL" in listing
    diff = sh(["gradus", "models", "diff", "champion", worse["registry"]["version"]], project_repo).stdout
    assert "train.epochs" in diff and "9.0" in diff and "0.2" in diff
    shown = sh(["gradus", "models", "show", version], project_repo).stdout
    assert head in shown and lock["stages"]["train"]["outs"][0]["md5"] in shown
    assert sh(["gradus", "models", "verify"], project_repo).stdout.count("ok ") == 3

    # The compress stage's variants that passed parity are files of the version, checksummed like its weights.
    variants = manifest["metrics"]["compression"]["variants"]
    servable = [v["file"] for v in variants.values() if v["passed"]]
    assert "onnx/model.onnx" in servable and all(name in manifest["files"] for name in servable)
    assert all(v["file"] not in manifest["files"] for v in variants.values() if not v["passed"])
    assert "onnx       servable: agreement 1.0000" in shown

    # An ensemble of the two versions goes through the same gate and is registered as a version of its own.
    other = worse["registry"]["version"]
    made = json.loads(sh(["gradus", "models", "ensemble", version, f"{other}=0.5", "--json"], project_repo).stdout)
    ensemble = registry.require(made["version"])
    assert list(ensemble["files"]) == ["ensemble.json"] and ensemble["gate"]["champion"] == version
    assert ensemble["lineage"]["ensemble"]["members"] == [{"version": version, "weight": 1.0},
                                                          {"version": other, "weight": 0.5}]
    test = pd.read_parquet(Path(plain["workspace"]["path"]) / "data" / "splits" / "test.parquet")
    texts = list(test["text"])
    first, second = (load_version(registry, v, bf16=False).predict(texts).probabilities for v in (version, other))
    voted = load_version(registry, made["version"], bf16=False).predict(texts)
    np.testing.assert_allclose(voted.probabilities, (first + 0.5 * second) / 1.5, atol=1e-5)
    as_gated = load_version(registry, made["version"]).predict(texts, 128).labels()  # as the gate ran it
    assert made["accuracy"] == pytest.approx(float(np.mean(np.array(as_gated) == test["label"])), abs=1e-6)
    assert (registry.aliases().candidate == made["version"]) == made["passed"]


def test_invalid_override_fails_before_anything_runs(prefect_server, project_repo: Path) -> None:
    before = (project_repo / "params.yaml").read_text()
    with pytest.raises(ConfigError, match=r"train\.epoch"):
        training_pipeline(TrainingOverrides(extra=["train.epoch=2"]), str(project_repo), push=False)
    assert (project_repo / "params.yaml").read_text() == before
    assert not (project_repo / "dvc.lock").exists() and not (project_repo / ".gradus" / "runs").exists()


def test_a_gated_candidate_starts_exactly_one_release(prefect_server, project_repo: Path) -> None:
    """The training flow announces a candidate that passed the gate; the release deployment's event trigger
    (infra/deploy.py) turns that one event into one release run for that version."""
    import time

    from infra.deploy import RELEASE, deploy_all

    release_id = deploy_all(project_repo)[RELEASE]
    first = training_pipeline(TrainingOverrides(), str(project_repo), push=False)
    champion = first["registry"]["version"]
    assert first["registry"]["aliases"]["champion"] == champion  # the first model: champion, nothing to release
    # Another model of the same data (another seed of the toy model, which may learn less); the gate is made
    # lenient, floors included, because this test is about the event.
    lenient = ["gate.margin=1", "gate.max_class_recall_drop=1", "gate.min_accuracy=0", "gate.min_macro_f1=0"]
    second = training_pipeline(TrainingOverrides(seed=11, extra=lenient), str(project_repo), push=False)
    candidate = second["registry"]["version"]
    assert second["gate"]["passed"] and candidate != champion, second["gate"]
    assert second["registry"]["aliases"]["candidate"] == candidate
    deadline = time.monotonic() + 60
    while not (runs := asyncio.run(runs_of(release_id))) and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(5)  # a second run, had the event been seen twice or the first model announced, would be here by now
    runs = asyncio.run(runs_of(release_id))
    assert len(runs) == 1, [r.parameters for r in runs]
    assert runs[0].parameters["version"] == candidate
    assert runs[0].parameters["project_dir"] == str(project_repo)
