"""Lineage of a trained model: the dvc.lock entries that made it, the code commit, params and base model."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from gradus.config import Params
from gradus.errors import RegistryError
from gradus.io import read_json
from gradus.modeling import TRAINING_SUMMARY

DATA_STAGES = ("ingest", "validate", "split", "train")


def dvc_lock_entries(root: Path) -> dict[str, Any]:
    """Each stage's cmd and the md5 of every dep and out in dvc.lock (what `dvc repro` last ran)."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        raise RegistryError(f"{lock}: not found; run the pipeline (dvc repro or gradus run) before registering")
    stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})

    def hashes(items: list[dict[str, Any]] | None) -> dict[str, str]:
        return {item["path"]: item.get("md5") or item.get("etag") or item.get("checksum", "") for item in items or []}

    return {name: {"cmd": stage.get("cmd"), "deps": hashes(stage.get("deps")), "outs": hashes(stage.get("outs"))}
            for name, stage in stages.items()}


def dataset_hashes(entries: dict[str, Any], params: Params) -> dict[str, str]:
    """The md5 of each dataset the model was trained on: raw snapshot, validated rows, splits."""
    paths = {"raw": params.paths.raw, "validated": params.paths.validated, "splits": params.paths.splits}
    outs = {path: md5 for stage in entries.values() for path, md5 in stage["outs"].items()}
    return {name: outs.get(path, "") for name, path in paths.items()}


def git_state(root: Path) -> dict[str, Any]:
    """The commit of the code that ran, and which tracked files differed from it (the flow edits params)."""
    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.rstrip() if done.returncode == 0 else None  # porcelain lines start with a space

    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no") or ""
    return {"commit": commit, "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "modified": sorted(line[3:] for line in changed.splitlines() if line.strip())}


def collect(root: Path, params: Params) -> dict[str, Any]:
    """Everything a registered version records about where it came from."""
    entries = dvc_lock_entries(root)
    summary = read_json(root / params.paths.model / TRAINING_SUMMARY)
    return {
        "base_model": {"name": summary.get("base_model"), "revision": summary.get("base_model_revision")},
        "datasets": dataset_hashes(entries, params),
        "dvc_lock": {name: entries[name] for name in entries if name in DATA_STAGES},
        "params": params.as_dict(),
        "code": git_state(root),
        "training": {k: summary.get(k) for k in ("device", "train_rows", "epochs", "steps", "best_step",
                                                 "samples_per_s", "wall_time_s", "val_macro_f1")},
    }
