"""The training flow against a real (temporary) Prefect server: one task run per stage, overrides, artifact."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from flows.training import TrainingOverrides, format_result, training_pipeline
from gradus.config import ConfigError

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
    # The REST call the UI makes (prefect 3.8.8's client sends nulls this server version rejects here).
    body = {"artifacts": {"key": {"any_": ["training-metrics"]}, "flow_run_id": {"any_": [str(flow_run_id)]}}}
    artifacts = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json=body, timeout=30).json()
    return flow_run, task_runs, artifacts


def test_flow_runs_each_stage_as_a_task_and_applies_overrides(prefect_server, project_repo: Path) -> None:
    state = training_pipeline(TrainingOverrides(epochs=9, extra=["split.seed=7"]), str(project_repo),
                              push=True, return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert [s["stage"] for s in result["stages"]] == ["ingest", "validate", "split", "train", "evaluate"]
    assert all(s["ran"] for s in result["stages"])
    assert result["param_changes"] == {"train.epochs": {"old": 12, "new": 9.0}, "split.seed": {"old": 42, "new": 7}}

    # The overrides reached the stages: DVC recorded them as the params the stages ran with.
    lock = yaml.safe_load((project_repo / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] == 9.0
    assert lock["stages"]["split"]["params"]["params.yaml"]["split"]["seed"] == 7
    metrics = json.loads((project_repo / "reports" / "metrics.json").read_text())
    assert result["metrics"] == metrics
    data = result["data"]
    assert data["rows_in"] == 900 and data["rows_in"] == data["rows_kept"] + data["rows_quarantined"]
    summary = format_result(result)
    assert f"test accuracy  {metrics['accuracy']:.4f}" in summary
    assert f"{data['rows_quarantined']} quarantined" in summary
    assert str(project_repo / "models" / "candidate") in summary

    flow_run, task_runs, artifacts = asyncio.run(_runs_and_artifact(state.state_details.flow_run_id))
    assert flow_run.name and flow_run.state.is_completed()
    names = [run.name for run in task_runs]
    assert names[:5] == ["ingest", "validate", "split", "train", "evaluate"], names
    assert all(run.state.is_completed() for run in task_runs)
    assert len(artifacts) == 1 and artifacts[0]["type"] == "markdown", artifacts
    assert f"{metrics['accuracy']:.4f}" in artifacts[0]["data"] and "| train | yes |" in artifacts[0]["data"]
    docs = project_repo / "reports" / "data_docs" / "index.html"
    assert f"]({docs.as_uri()})" in artifacts[0]["data"] and docs.is_file()

    # A second run with nothing changed skips every stage (DVC's own up-to-date check).
    again = training_pipeline(TrainingOverrides(epochs=9), str(project_repo), push=False)
    assert [s["ran"] for s in again["stages"]] == [False] * 5
    assert again["param_changes"] == {}


def test_invalid_override_fails_before_anything_runs(prefect_server, project_repo: Path) -> None:
    before = (project_repo / "params.yaml").read_text()
    with pytest.raises(ConfigError, match=r"train\.epoch"):
        training_pipeline(TrainingOverrides(extra=["train.epoch=2"]), str(project_repo), push=False)
    assert (project_repo / "params.yaml").read_text() == before
    assert not (project_repo / "dvc.lock").exists()
