"""Training survives SIGKILL and resumes exactly; it also runs data-parallel under torchrun (gloo, CPU)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from gradus.config.params import load_params
from gradus.modeling import load_classifier
from gradus.stratify import split_by_label
from tests.conftest import BANKING77, ROOT, set_params, tiny_params, tool_env

pytestmark = pytest.mark.slow
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "pin_blocked", "age_limit"]


def workspace(tmp_path: Path, name: str, model_dir: Path, **extra: object) -> Path:
    """A folder with params.yaml and train/val/test splits of Banking77, as the train stage expects."""
    work = tmp_path / name
    (work / "data" / "splits").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    set_params(work / "params.yaml", {**tiny_params(model_dir), "train.epochs": 4, "train.eval_steps": 10,
                                      "train.early_stopping_patience": 0, **extra})
    rows = pd.read_csv(BANKING77 / "train.csv").rename(columns={"category": "label"})
    rows = rows[rows["label"].isin(INTENTS)].reset_index(drop=True)
    split = split_by_label(rows, load_params(work / "params.yaml").split)
    for part in ("train", "val", "test"):
        rows[split == part].to_parquet(work / "data" / "splits" / f"{part}.parquet", index=False)
    return work


def train_command(*launcher: str) -> list[str]:
    return [*launcher, "-m", "tasks", "train"] if launcher else [sys.executable, "-m", "tasks", "train"]


def run_env() -> dict[str, str]:
    env = tool_env()
    env["PYTHONPATH"] = str(ROOT)
    env["OMP_NUM_THREADS"] = "1"  # the same arithmetic in both runs, whatever else the machine does
    return env


@pytest.mark.timing
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    straight = workspace(tmp_path, "straight", tiny_model_dir)
    done = subprocess.run(train_command(), cwd=straight, env=run_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = workspace(tmp_path, "killed", tiny_model_dir)
    process = subprocess.Popen(train_command(), cwd=killed, env=run_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    target = killed / "models" / "checkpoints" / "checkpoint-30" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not target.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the next stretch of steps
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training finished before it could be interrupted"
    assert not (killed / "models" / "candidate").exists()

    resumed = subprocess.run(train_command(), cwd=killed, env=run_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((killed / "models" / "candidate" / "training_summary.json").read_text())
    assert summary["resumed_from"] is not None and int(summary["resumed_from"].split("-")[1]) >= 30

    expected = load_file(straight / "models" / "candidate" / "model.safetensors")
    actual = load_file(killed / "models" / "candidate" / "model.safetensors")
    assert expected.keys() == actual.keys()
    worst = max(float((expected[k] - actual[k]).abs().max()) for k in expected)
    assert worst <= 1e-6, worst
    straight_log = json.loads((straight / "reports" / "training" / "metrics.json").read_text())
    assert straight_log["step"] > 0 and "eval" in straight_log

    # Resumed in a later epoch (where the kill lands depends on the machine's load): the straight run's own
    # next-to-last checkpoint, the last one removed. The epoch's data order must be the one it had (a stock
    # length-grouped sampler drew it from the global generator, which a checkpoint cannot restore: 0.0015 off).
    late = tmp_path / "late"
    shutil.copytree(straight, late)
    shutil.rmtree(late / "models" / "candidate")
    *_, before_last, last = sorted((late / "models" / "checkpoints").glob("checkpoint-*"),
                                   key=lambda p: int(p.name.split("-")[1]))
    shutil.rmtree(last)
    resumed = subprocess.run(train_command(), cwd=late, env=run_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((late / "models" / "candidate" / "training_summary.json").read_text())
    assert summary["resumed_from"] == before_last.name, summary
    assert int(before_last.name.split("-")[1]) > 2 * summary["steps_per_epoch"]  # past the second epoch
    actual = load_file(late / "models" / "candidate" / "model.safetensors")
    assert max(float((expected[k] - actual[k]).abs().max()) for k in expected) <= 1e-6


def test_torchrun_two_processes_gloo_trains_a_valid_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    work = workspace(tmp_path, "ddp", tiny_model_dir, **{"train.epochs": 6})
    torchrun = str(Path(sys.executable).parent / "torchrun")
    done = subprocess.run(train_command(torchrun, "--standalone", "--nproc_per_node=2"), cwd=work, env=run_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((work / "models" / "candidate" / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["device"] == "cpu"
    # The plan counts both ranks: each takes half the rows per epoch (a rank that believed itself alone planned
    # twice the steps, and every rank touched the checkpoint folder as the main one).
    cfg = load_params(work / "params.yaml").train
    assert summary["steps_per_epoch"] == math.ceil(math.ceil(summary["train_rows"] / 2) / cfg.batch_size)
    model = load_classifier(work / "models" / "candidate")
    test = pd.read_parquet(work / "data" / "splits" / "test.parquet")
    accuracy = (pd.Series(model.predict(list(test["text"])).labels()) == test["label"].reset_index(drop=True)).mean()
    assert accuracy > 2.0 / len(model.labels), accuracy
    assert os.environ.get("WORLD_SIZE") is None  # the launcher's environment did not leak into the tests
