"""What isolating a flow run costs: gradus's pooled run workspace next to the alternatives, in one run.

    python -m benchmarks.run_workspaces [--repeats 5]

On a clone of this repository (every tracked file: code, vendored benchmark data) with a model-sized DVC output
(90 MB, like the packaged encoder's weights) committed to its DVC cache:

baseline:    the old way, overrides written into the project's params.yaml in place (no isolation at all);
new:         gradus.workspace.run_workspace on a new workspace (every project file copied, inputs linked, DVC
             pointed at the project's cache and remotes, shared folders linked);
reused:      the same on the workspace the previous run used (only changed files copied);
worktree:    a git worktree of HEAD plus `dvc checkout` of the outputs into it (the other candidate: it needs
             the outputs checked out to skip stages, and carries no uncommitted edit).

Writes benchmarks/results/run_workspaces.json (medians of --repeats, and ratios to the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradus.config.editing import write_overrides
from gradus.config.params import load_params
from gradus.workspace import run_workspace

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "run_workspaces.json"
OVERRIDES = ["train.epochs=2", "gate.margin=0.03"]


def sh(args: list[str], cwd: Path) -> None:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True)


def project(folder: Path) -> Path:
    """A clone of this repository with a committed 90 MB DVC output in its cache."""
    repo = folder / "project"
    sh(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(repo)], folder)
    sh(["git", "config", "user.email", "bench@gradus.invalid"], repo)
    sh(["git", "config", "user.name", "bench"], repo)
    weights = repo / "bench" / "model"
    weights.mkdir(parents=True)
    (weights / "model.safetensors").write_bytes(os.urandom(90 * 2**20))
    sh([sys.executable, "-m", "dvc", "add", "-q", "bench/model"], repo)
    sh(["git", "add", "bench/model.dvc", "bench/.gitignore"], repo)
    sh(["git", "commit", "-qm", "bench output"], repo)
    return repo


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def baseline(repo: Path) -> float:
    original = (repo / "params.yaml").read_bytes()
    seconds = timed(lambda: write_overrides(repo / "params.yaml", OVERRIDES))
    (repo / "params.yaml").write_bytes(original)
    return seconds


def workspace(repo: Path, fresh: bool) -> float:
    runs = repo / load_params(repo / "params.yaml").runs.folder
    if fresh and runs.exists():
        shutil.rmtree(runs)

    def enter() -> None:
        with run_workspace(repo, "bench", OVERRIDES, log=lambda _: None):
            pass

    return timed(enter)


def worktree(repo: Path, folder: Path) -> float:
    target = folder / "worktree"

    def make() -> None:
        sh(["git", "worktree", "add", "-q", "--detach", str(target), "HEAD"], repo)
        sh([sys.executable, "-m", "dvc", "config", "--local", "cache.dir", str(repo / ".dvc" / "cache")], target)
        sh([sys.executable, "-m", "dvc", "checkout", "-q", "bench/model.dvc"], target)
        write_overrides(target / "params.yaml", OVERRIDES)

    seconds = timed(make)
    sh(["git", "worktree", "remove", "--force", str(target)], repo)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        repo = project(folder)
        files = len(subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True).stdout.split())
        runs: dict[str, list[float]] = {"baseline": [], "new": [], "reused": [], "worktree": []}
        for _ in range(args.repeats):  # interleaved, so a slow moment of the machine hits every candidate
            runs["baseline"].append(baseline(repo))
            runs["new"].append(workspace(repo, fresh=True))
            runs["reused"].append(workspace(repo, fresh=False))
            runs["worktree"].append(worktree(repo, folder))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    result = {
        "benchmark": "run_workspaces", "project_files": files, "repeats": args.repeats,
        "seconds_median": {k: round(v, 4) for k, v in medians.items()},
        "ratio_to_baseline": {k: round(v / medians["baseline"], 1) for k, v in medians.items()},
        "reused_vs_new": round(medians["reused"] / medians["new"], 3),
        "worktree_vs_new": round(medians["worktree"] / medians["new"], 2),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
