"""Runs never change each other: concurrent flow runs on one project either work side by side in workspaces of
their own or wait for one, saying for which run; a search runs beside a training run; params.yaml never moves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from tests.conftest import set_params, sh, tool_env

pytestmark = pytest.mark.slow
GRADUS = str(Path(sys.executable).parent / "gradus")


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _start(args: list[str], project: Path, log: Path) -> subprocess.Popen:
    env = tool_env() | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.Popen([GRADUS, *args], cwd=project, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _holder(project: Path, slot: int) -> int | None:
    state = project / ".gradus" / "runs" / f"ws-{slot}.json"
    return json.loads(state.read_text()).get("pid") if state.is_file() else None


def _finish(process: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    assert process.wait(timeout) == 0, log.read_text()[-4000:]
    return log.read_text()


def test_runs_work_side_by_side_queue_for_a_workspace_and_a_search_runs_beside(prefect_server, project_repo: Path,
                                                                               tmp_path: Path) -> None:
    set_params(project_repo / "params.yaml", {"data.sources.0.rows": 400, "train.epochs": 2,
                                              "tune.space": {"epochs": {"choices": [2]}}})
    sh(["git", "commit", "-qam", "short runs"], project_repo)
    committed = (project_repo / "params.yaml").read_bytes()
    log = {name: tmp_path / f"{name}.log" for name in ("a", "b", "c", "tune")}

    # Two training runs side by side, each in a workspace of its own (runs.workspaces: 2) ...
    a = _start(["run", "--no-push", "--set", "train.seed=3"], project_repo, log["a"])
    _wait_holder(project_repo, 0, a, log["a"])
    # b trains longer than a (more epochs, the committed seed), so a frees its workspace first and the third run,
    # with a's params, finds it free: a waiting run takes the first workspace that frees up.
    b = _start(["run", "--no-push", "--set", "train.epochs=5"], project_repo, log["b"])
    _wait_holder(project_repo, 1, b, log["b"])
    # ... a search beside them (its trials are DVC experiments in temporary copies of the project) ...
    search = _start(["tune", "--trials", "1", "--study", "beside"], project_repo, log["tune"])
    # ... and a third run, which waits for a free workspace and says for which runs.
    c = _start(["run", "--no-push", "--set", "train.seed=3"], project_repo, log["c"])

    out = {name: _finish(process, log[name]) for name, process in (("a", a), ("b", b), ("c", c), ("tune", search))}
    assert "waits for a free run workspace: all 2 are busy (ws-0: training_pipeline/" in out["c"], out["c"]
    assert f"(pid {a.pid})" in out["c"] and f"(pid {b.pid})" in out["c"]
    assert not any("waits for a free run workspace" in out[name] for name in ("a", "b"))
    assert "Unable to acquire lock" not in "".join(out.values())
    proposal = json.loads((project_repo / "reports" / "tune" / "beside.json").read_text())
    assert [t["state"] for t in proposal["trials"]] == ["complete"], proposal

    # Each run trained with its own values in its own workspace; the third took the workspace whose last run had
    # its params, found every stage up to date there and trained nothing.
    runs = project_repo / ".gradus" / "runs"
    seeds = [yaml.safe_load((runs / f"ws-{slot}" / "dvc.lock").read_text())["stages"]["train"]["params"]
             ["params.yaml"]["train"]["seed"] for slot in (0, 1)]
    assert seeds == [3, 42]
    assert "(reused (its last run had the same params)); params.yaml untouched" in out["c"]
    assert "stages run     gate;" in out["c"] and "(new); params.yaml untouched" in out["a"]
    assert os.path.samefile(runs / "ws-0" / "registry", project_repo / "registry")
    # The project's files never moved.
    assert (project_repo / "params.yaml").read_bytes() == committed
    assert sh(["git", "status", "--porcelain", "--untracked-files=no"], project_repo).stdout == ""


def _wait_holder(project: Path, slot: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while _holder(project, slot) != process.pid:
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
