"""Run workspaces on their own (no training): what a run's copy holds, what it shares with the project through
links, that nothing of the project is ever replaced or deleted through a link, and how the pool waits."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gradus.config.params import load_params
from gradus.workspace import WorkspaceBusy, run_workspace
from tests.conftest import ROOT, set_params, sh


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    for name in ("params.yaml", "dvc.yaml", ".gitignore", ".dvcignore", "data/inputs/.gitkeep"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes((ROOT / name).read_bytes())
    sh(["git", "init", "-q", "-b", "main"], repo)
    sh(["python", "-m", "dvc", "init", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.email=t@gradus.invalid", "-c", "user.name=t", "commit", "-qm", "p"], repo)
    return repo


def test_a_run_gets_its_own_params_and_shares_only_what_runs_share(project: Path) -> None:
    feedback = project / "data" / "feedback"
    feedback.mkdir(parents=True)
    (feedback / "feedback-a.jsonl").write_text('{"text": "x", "label": "y"}\n')
    (project / "data" / "extra.csv").write_text("text,label\nx,y\n")  # a source beside the outputs' folders ...
    (project / ".git" / "info" / "exclude").write_text("/data/extra.csv\n")  # ... that git ignores: not copied
    (project / "data" / "inputs" / "mine.csv").write_text("text,label\nz,w\n")
    committed = (project / "params.yaml").read_bytes()
    overrides = ["train.epochs=2", "gate.margin=0.03"]
    with run_workspace(project, "run-1", overrides, ["data/*.csv", "data/feedback/feedback-a.jsonl"],
                       log=lambda _: None) as workspace:
        work = workspace.path
        assert work == project / ".gradus" / "runs" / "ws-0" and not workspace.reused
        assert workspace.params.train.epochs == 2 and workspace.params.gate.margin == 0.03
        assert [s.path for s in workspace.params.data.sources[1:]] == ["data/*.csv", "data/feedback/feedback-a.jsonl"]
        assert set(workspace.changes) == {"train.epochs", "gate.margin", "data.sources"}
        # Links to what runs share; outputs' folders stay the workspace's own.
        assert (work / "registry").is_symlink() and os.readlink(work / "registry") == str(project / "registry")
        assert (work / "data" / "feedback").is_symlink() and not (work / "data").is_symlink()
        assert (work / "data" / "extra.csv").is_symlink()  # the file, not its folder (data/raw lives there)
        assert (work / "data" / "inputs" / "mine.csv").stat().st_ino == (project / "data" / "inputs" /
                                                                          "mine.csv").stat().st_ino
        local = (work / ".dvc" / "config.local").read_text()
        assert "no_scm = True" in local and str(project / ".dvc" / "cache") in local
    assert (project / "params.yaml").read_bytes() == committed
    assert (feedback / "feedback-a.jsonl").read_text() == '{"text": "x", "label": "y"}\n'  # never removed

    # The next run (no overrides) gets the project's params as they are, in the pool's second workspace (the
    # first keeps its outputs for a run with its params); the one after it takes the same again.
    with run_workspace(project, "run-2", log=lambda _: None) as again:
        assert again.path == work.parent / "ws-1" and again.changes == {}
        assert again.params.train.epochs == load_params(project / "params.yaml").train.epochs
        assert len(again.params.data.sources) == 1
    assert (feedback / "feedback-a.jsonl").is_file() and (project / "data" / "extra.csv").is_file()
    with run_workspace(project, "run-3", log=lambda _: None) as third:
        assert third.path == again.path  # its last run had these params (same_params needs its outputs too)


def test_with_every_workspace_busy_a_run_waits_naming_the_holder(project: Path) -> None:
    set_params(project / "params.yaml", {"runs.workspaces": 1, "runs.wait_timeout_s": 1.5})
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with run_workspace(project, "the-first-run", log=lambda _: None):
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        said: list[str] = []
        with pytest.raises(WorkspaceBusy, match=r"run the-second: every run workspace stayed busy for 1.5 s "
                                                r"\(ws-0: the-first-run since .* \(pid \d+\)\)"), \
                run_workspace(project, "the-second", log=said.append):
            pass
        assert said and said[0].startswith("run the-second waits for a free run workspace: all 1 are busy (ws-0: "
                                           "the-first-run since")
    finally:
        release.set()
        holder.join(30)
    with run_workspace(project, "the-third", log=lambda _: None) as free:  # released: taken at once
        assert free.slot == 0 and free.reused is False
