"""Deployments on a real Prefect server: schedules, an API-triggered training run executed by a real process
worker with UI-style parameter overrides, and drift monitor runs that start exactly the retrains they should."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import DeploymentSort
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness
from prefect.utilities.templating import apply_values

from flows.drift import drift_monitor
from gradus.config.params import load_params
from gradus.demo import generate
from gradus.errors import ConfigError
from gradus.monitoring.records import MonitorRecords
from gradus.registry.versions import project_registry
from gradus.workspace import newest_outputs
from infra.deploy import (
    DRIFT,
    DRIFT_CRON,
    IMAGE_PROJECT_DIR,
    POOLS,
    RELEASE,
    TRAINING,
    TRAINING_CRON,
    TUNE,
    WORK_POOL,
    deploy_all,
)
from tests.conftest import ROOT, set_params, sh, tool_env
from tests.helpers.prefect import runs_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


async def _deployments() -> dict:
    async with get_client() as client:
        # Paging and sort given explicitly: prefect 3.8.8's client sends nulls its server rejects (422).
        found = await client.read_deployments(limit=50, sort=DeploymentSort.NAME_ASC)
        pool = await client.read_work_pool(WORK_POOL)
    return {d.name: d for d in found} | {"_pool": pool}


def _wait_final(flow_run_id, seconds: float) -> object:
    async def state():
        async with get_client() as client:
            return await client.read_flow_run(flow_run_id)

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = asyncio.run(state())
        if run.state and run.state.is_final():
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} not finished after {seconds} s")


def _execute(flow_run_id, project: Path | None = None) -> Path:
    """Run one scheduled flow run with a real process worker, as in production; returns the run's workspace."""
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process", "--run-once"],
        cwd=ROOT, env=tool_env() | {"PREFECT_API_URL": PREFECT_API_URL.value()}, capture_output=True, text=True,
        timeout=900)
    finished = _wait_final(flow_run_id, 60)
    assert finished.state.is_completed(), worker.stdout[-3000:] + worker.stderr[-3000:]
    project = project or Path(finished.parameters["project_dir"])
    return newest_outputs(project, load_params(project / "params.yaml"))


def shifted_batch(path: Path, rows: int = 600) -> None:
    """Text from another domain (library documentation sentences), labeled with the demo's labels."""
    docs = []
    for module in (inspect, subprocess, asyncio, time, pd, yaml):
        for _, member in inspect.getmembers(module):
            doc = inspect.getdoc(member) if callable(member) else None
            if doc and 30 <= len(first := doc.split("\n\n")[0].replace("\n", " ")) <= 300:
                docs.append(first)
    labels = sorted({label for label in generate(300, 1)["label"] if isinstance(label, str) and label.strip()})
    unique = sorted(set(docs))
    # Distinct texts (a repeat gets a numbered note), so the batch passes validation when a retrain trains on it.
    texts = [unique[i % len(unique)] + (f" (note {i // len(unique)})" if i >= len(unique) else "")
             for i in range(rows)]
    pd.DataFrame({"text": texts, "label": [labels[i % len(labels)] for i in range(rows)]}).to_json(
        path, orient="records", lines=True)


def test_deployments_schedules_api_trigger_and_drift_retrains(prefect_server, project_repo: Path) -> None:
    ids = deploy_all(project_repo)
    found = asyncio.run(_deployments())
    training, drift = found[TRAINING], found[DRIFT]
    assert found["_pool"].type == "process" and training.work_pool_name == drift.work_pool_name == WORK_POOL
    assert [s.schedule.cron for s in training.schedules] == [TRAINING_CRON]
    assert [s.schedule.cron for s in drift.schedules] == [DRIFT_CRON]
    assert drift.parameters["current"] == "data/predictions/*.parquet"  # the service's prediction log
    assert training.concurrency_limit == 1 or training.global_concurrency_limit.limit == 1
    schema = training.parameter_openapi_schema
    assert "overrides" in schema["properties"] and "epochs" in yaml.safe_dump(schema)  # a typed form in the UI
    assert str(training.id) == ids[TRAINING]
    tune = found[TUNE]  # the search, on demand with a typed form: trials, time budget, study, overrides
    assert not tune.schedules and tune.parameters == {"project_dir": str(project_repo.resolve())}
    assert {"trials", "timeout_minutes", "study", "overrides"} <= set(tune.parameter_openapi_schema["properties"])

    # What the UI's "Run" button does: a flow run of the deployment with parameter overrides ...
    set_params(project_repo / "params.yaml", {"train.epochs": 5})  # the project's value: short scheduled runs
    committed = (project_repo / "params.yaml").read_bytes()
    run = run_deployment(f"training_pipeline/{TRAINING}", timeout=0,
                         parameters={"overrides": {"epochs": 14, "extra": ["evaluate.batch_size=64"]}})
    # ... executed by a real process worker, as in production.
    ui = _execute(run.id)
    lock = yaml.safe_load((ui / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] == 14
    assert lock["stages"]["evaluate"]["params"]["params.yaml"]["evaluate"]["batch_size"] == 64
    gate = yaml.safe_load((ui / "reports" / "gate.json").read_text())
    assert gate["passed"], gate["reasons"]  # it trained, passed the gate and became champion
    assert (project_repo / "params.yaml").read_bytes() == committed  # the overrides stayed in the run's workspace
    registry = project_registry(project_repo, load_params(project_repo / "params.yaml"))
    assert registry.require(registry.aliases().champion)["lineage"]["params"]["train"]["epochs"] == 14

    # The next scheduled run (the deployment's own parameters) trains with the committed values.
    scheduled = _execute(run_deployment(f"training_pipeline/{TRAINING}", timeout=0).id)
    lock = yaml.safe_load((scheduled / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] == 5
    assert lock["stages"]["evaluate"]["params"]["params.yaml"]["evaluate"]["batch_size"] == 128
    assert scheduled != ui  # another workspace: the UI run's outputs stay for a run with its params
    assert registry.versions()[-1]["lineage"]["params"]["train"]["epochs"] == 5
    assert (project_repo / "params.yaml").read_bytes() == committed

    incoming = project_repo / "data" / "incoming"
    incoming.mkdir(parents=True)
    generate(800, 99).to_json(incoming / "same.jsonl", orient="records", lines=True)
    shifted_batch(incoming / "shifted.jsonl")
    shifted_batch(incoming / "shifted_again.jsonl", rows=700)
    set_params(project_repo / "params.yaml", {"drift.cooldown_hours": 0})
    before = len(asyncio.run(runs_of(training.id)))

    # Same distribution: no retrain.
    same = drift_monitor(str(incoming / "same.jsonl"), str(project_repo))
    assert not same["decision"]["retrain"], same["signals"]
    assert len(asyncio.run(runs_of(training.id))) == before

    # Another domain: exactly one retrain, with the reason and the new data as parameters.
    shifted = drift_monitor(str(incoming / "shifted.jsonl"), str(project_repo))
    assert shifted["decision"]["retrain"], shifted["signals"]
    assert len(shifted["decision"]["drifted_signals"]) >= 2
    runs = asyncio.run(runs_of(training.id))
    assert len(runs) == before + 1
    started = next(r for r in runs if str(r.id) == shifted["decision"]["triggered_flow_run"])
    assert started.parameters["overrides"]["add_sources"] == [str(incoming / "shifted.jsonl")]
    assert "drift on batch" in started.parameters["overrides"]["reason"]
    assert started.parameters["project_dir"] == str(project_repo)  # deployment defaults kept
    assert all(Path(p).is_file() for p in shifted["reports"]) and len(shifted["reports"]) == 2
    registry = project_registry(project_repo, load_params(project_repo / "params.yaml"))
    latest = MonitorRecords(registry.store).latest_drift()
    assert latest["batch"] == shifted["batch"] and latest["retrain"]  # what the service exports for alerts
    assert latest["drifted_signals"] == shifted["decision"]["drifted_signals"]

    # The same batch again: suppressed. A new drifted batch inside the cooldown: no retrain either.
    again = drift_monitor(str(incoming / "shifted.jsonl"), str(project_repo))
    assert not again["decision"]["checks"]["new_batch"]["passed"] and not again["decision"]["retrain"]
    set_params(project_repo / "params.yaml", {"drift.cooldown_hours": 24})
    cooling = drift_monitor(str(incoming / "shifted_again.jsonl"), str(project_repo))
    assert cooling["decision"]["drifted_signals"] and not cooling["decision"]["checks"]["cooled_down"]["passed"]
    assert not cooling["decision"]["retrain"]
    assert len(asyncio.run(runs_of(training.id))) == before + 1

    # The retrain the drift started keeps its batch by design: a file in the data catalogue (params.yaml is
    # untouched), named in the retrained version's lineage and read by every later run.
    assert started.parameters["overrides"]["keep_sources"] is True  # drift.keep_labeled_batches' default
    edited = (project_repo / "params.yaml").read_bytes()
    retrained = _execute(started.id)
    [entry] = (project_repo / "data" / "sources.d").glob("*.yaml")
    kept = yaml.safe_load(entry.read_text())
    assert kept["source"]["path"] == str(incoming / "shifted.jsonl") and "drift on batch" in kept["reason"]
    assert (project_repo / "params.yaml").read_bytes() == edited
    manifest = registry.versions()[-1]
    assert [e["location"] for e in manifest["lineage"]["catalogue"]] == [str(incoming / "shifted.jsonl")]
    assert len(manifest["lineage"]["params"]["data"]["sources"]) == 1  # in the catalogue, not in params
    raw = yaml.safe_load((retrained / "data" / "raw" / "manifest.json").read_text())
    assert raw["rows"] == 900 + 600 and raw["sources"][-1]["declared_in"] == f"data/sources.d/{entry.name}"
    status = sh(["gradus", "status", "--url", ""], project_repo).stdout
    assert "data      1 kept source(s) in the data catalogue" in status and str(incoming / "shifted.jsonl") in status
    shown = sh(["gradus", "models", "show", manifest["version"]], project_repo).stdout
    assert f"catalogue   {incoming / 'shifted.jsonl'} (data/sources.d/{entry.name}; added" in shown


def test_the_same_deployments_register_on_a_kubernetes_pool(prefect_server, project_repo: Path) -> None:
    with pytest.raises(ConfigError, match="needs --image"):
        deploy_all(project_repo, pool_type="kubernetes")
    deploy_all(project_repo)  # first on the process pool, as a project moving to Kubernetes has them
    image = "registry.example/gradus-worker:0.1.0"
    ids = deploy_all(project_repo, pool_type="kubernetes", image=image)

    async def read() -> tuple:
        async with get_client() as client:
            pool = await client.read_work_pool(POOLS["kubernetes"])
            return pool, {name: await client.read_deployment(ids[name]) for name in (TRAINING, DRIFT, RELEASE, TUNE)}

    pool, deployments = asyncio.run(read())
    assert pool.type == "kubernetes"
    assert all(d.work_pool_name == pool.name for d in deployments.values())
    assert all(d.path == IMAGE_PROJECT_DIR and not d.pull_steps for d in deployments.values())  # code in the image
    assert all(d.parameters["project_dir"] == IMAGE_PROJECT_DIR for d in deployments.values())
    assert deployments[TRAINING].job_variables == {"image": image, "gpu_limit": 1}
    assert deployments[DRIFT].job_variables == {"image": image}
    assert deployments[TUNE].job_variables == {"image": image, "gpu_limit": 1}
    # The job a training run gets: the pool's template with the deployment's variables over the defaults.
    variables = {name: spec.get("default") for name, spec in pool.base_job_template["variables"]["properties"].items()}
    job = apply_values(pool.base_job_template["job_configuration"], variables | deployments[TRAINING].job_variables)
    container = job["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == image and container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["envFrom"] == [{"secretRef": {"name": "gradus-secrets", "optional": True}}]
    assert "gradus-secrets" not in yaml.safe_dump(deployments[TRAINING].job_variables)  # no secret values anywhere
    with pytest.raises(ConfigError, match="exists with type 'kubernetes', not 'process'"):
        deploy_all(project_repo, work_pool=POOLS["kubernetes"])
