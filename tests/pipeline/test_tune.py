"""gradus tune: a real Optuna search whose trials are real DVC experiments of the tiny model's pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import set_params, sh

pytestmark = pytest.mark.slow
DVC = [sys.executable, "-m", "dvc"]
GRADUS = str(Path(sys.executable).parent / "gradus")


def experiments(project: Path) -> dict[str, dict]:
    """`dvc exp show --json`: experiment name -> its params.yaml and train summary as DVC recorded them."""
    found = {}
    for commit in json.loads(sh([*DVC, "exp", "show", "--json"], project).stdout):
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                found[rev["name"]] = {"params": data["params"]["params.yaml"]["data"],
                                      "metrics": data["metrics"]["reports/train_summary.json"]["data"]}
    return found


def test_three_trial_search_records_each_trial_as_a_dvc_experiment(project_repo: Path) -> None:
    set_params(project_repo / "params.yaml", {
        "tune.space": {"learning_rate": {"low": 0.0005, "high": 0.005, "log": True},
                       "epochs": {"low": 2, "high": 4}, "batch_size": {"choices": [16, 32]}},
        "tune.startup_trials": 1})
    # As a user searches: from a reproduced, committed pipeline (trials reuse its cached upstream stages).
    sh([*DVC, "repro"], project_repo)
    sh(["git", "add", "-A"], project_repo)
    sh(["git", "commit", "-q", "-m", "baseline run"], project_repo)
    params_before = (project_repo / "params.yaml").read_bytes()
    model_before = (project_repo / "models" / "candidate" / "model.safetensors").read_bytes()

    out = sh([GRADUS, "tune", "--trials", "3", "--study", "tiny"], project_repo)
    assert "dvc exp apply tiny-" in out.stdout, out.stdout

    proposal = json.loads((project_repo / "reports" / "tune" / "tiny.json").read_text())
    trials = proposal["trials"]
    assert [t["experiment"] for t in trials] == ["tiny-000", "tiny-001", "tiny-002"]
    assert {t["state"] for t in trials} <= {"complete", "pruned"} and not proposal["failures"]
    complete = [t for t in trials if t["state"] == "complete"]
    best = proposal["best"]
    assert best["val_macro_f1"] == max(t["val_macro_f1"] for t in complete)
    assert best["params"] == {f"train.{k}": v for k, v in trials[best["number"]]["params"].items()}

    shown = experiments(project_repo)
    for trial in trials:  # DVC holds each trial with the values Optuna chose, and its own result
        recorded = shown[trial["experiment"]]
        train = recorded["params"]["train"]
        assert train["learning_rate"] == pytest.approx(trial["params"]["learning_rate"], rel=1e-5)
        assert train["epochs"] == trial["params"]["epochs"] and train["batch_size"] == trial["params"]["batch_size"]
        # The objective (best evaluation reported to Optuna) is the kept model's val macro-F1 in DVC's metrics.
        assert recorded["metrics"]["val_macro_f1"] == pytest.approx(trial["val_macro_f1"], abs=1e-4)
        if trial["state"] == "complete":
            assert recorded["metrics"]["epochs_planned"] == trial["params"]["epochs"]

    # A proposal only: params.yaml and the workspace's outputs are untouched (trials ran in temp copies).
    assert (project_repo / "params.yaml").read_bytes() == params_before
    assert (project_repo / "models" / "candidate" / "model.safetensors").read_bytes() == model_before
    # `dvc exp apply` takes the best trial (params and trained model) into the workspace; `dvc repro` then
    # evaluates it.
    sh([*DVC, "exp", "apply", best["experiment"]], project_repo)
    applied = yaml.safe_load((project_repo / "params.yaml").read_text())["train"]
    assert applied["batch_size"] == best["params"]["train.batch_size"]
    assert applied["learning_rate"] == pytest.approx(best["params"]["train.learning_rate"], rel=1e-5)
    assert (project_repo / "models" / "candidate" / "model.safetensors").read_bytes() != model_before
    ran = sh([*DVC, "repro"], project_repo).stdout
    assert "Running stage 'train'" not in ran and "Running stage 'evaluate'" in ran
