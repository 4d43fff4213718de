"""Lineage of a trained model: the dvc.lock entries that made it, the code commit, params and base model."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from gradus.catalogue import read_catalogue
from gradus.config.pipeline import StageParams
from gradus.errors import RegistryError
from gradus.io import read_json
from gradus.modeling import TRAINING_SUMMARY, load_decision
from gradus.task_types.seam import task_type

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


def dataset_hashes(entries: dict[str, Any], params: StageParams) -> dict[str, str]:
    """The md5 of each dataset the model was trained on: raw snapshot, validated rows, splits."""
    paths = {"raw": params.paths.raw, "validated": params.paths.validated, "splits": params.paths.splits}
    outs = {path: md5 for stage in entries.values() for path, md5 in stage["outs"].items()}
    return {name: outs.get(path, "") for name, path in paths.items()}


def git_state(root: Path) -> dict[str, Any]:
    """The commit of the code that ran, and which tracked files differed from it (uncommitted edits).

    A model whose code cannot be named has no lineage: a failing git call is an error, never a silent None.
    """
    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        except FileNotFoundError:
            raise RegistryError("lineage: git is not installed; gradus records the code commit of every model "
                                "it registers") from None
        if done.returncode != 0:
            detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RegistryError(f"lineage: `git {' '.join(args)}` failed in {root} ({detail}); register models "
                                "from a git checkout with at least one commit")
        return done.stdout.rstrip()  # not strip(): porcelain lines start with a space

    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "modified": sorted(line[3:] for line in changed.splitlines() if line.strip())}


def collect(root: Path, params: StageParams, code_root: Path | None = None) -> dict[str, Any]:
    """Everything a registered version records about where it came from: root holds the run's dvc.lock and
    outputs (a flow run's workspace), code_root the git checkout whose commit ran (the project)."""
    entries = dvc_lock_entries(root)
    summary = read_json(root / params.paths.model / TRAINING_SUMMARY)
    decision = load_decision(root / params.paths.model)  # thresholds, where the task type decodes with them
    primary = f"val_{task_type(params.model.task).primary_metric}"
    return {
        "catalogue": [{**entry.summary(), "file": f"{params.paths.catalogue}/{Path(entry.file).name}"}
                      for entry in read_catalogue(root / params.paths.catalogue)],
        "base_model": {"name": summary.get("base_model"), "revision": summary.get("base_model_revision")},
        "datasets": dataset_hashes(entries, params),
        "dvc_lock": {name: entries[name] for name in entries if name in DATA_STAGES},
        "params": params.as_dict(),
        "code": git_state(code_root or root),
        "training": {k: summary.get(k) for k in ("device", "train_rows", "epochs", "steps", "best_step",
                                                 "samples_per_s", "wall_time_s", primary)},
        **({"decision": decision} if decision else {}),
    }


def collect_ensemble(root: Path, params: StageParams, spec: dict[str, Any], base_model: dict[str, Any],
                     code_root: Path | None = None) -> dict[str, Any]:
    """An ensemble's lineage: its members (whose own versions hold their training lineage), the data it was
    gated on, the params and code that judged it; base_model is the first member's."""
    entries = dvc_lock_entries(root)
    return {"ensemble": spec, "base_model": base_model, "datasets": dataset_hashes(entries, params),
            "dvc_lock": {name: entries[name] for name in entries if name in DATA_STAGES},
            "params": params.as_dict(), "code": git_state(code_root or root), "training": None}


def read_dvc_object(root: Path, md5: str) -> bytes:
    """The bytes DVC stored for an md5 (a file, or a `.dir` listing), from the project's cache, else from its
    default remote, both as DVC's own configuration names them (config, config.local, `endpointurl`,
    credentials). DVC's API addresses data by (path, git revision); a model's lineage addresses it by content
    hash (the dvc.lock of a flow run need not be committed), so this asks DVC's object stores directly."""
    from dvc.config import NoRemoteError
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stores = [("cache", repo.cache.local)]
        with contextlib.suppress(NoRemoteError):  # no default remote: the cache is the only place
            remote = repo.config["core"].get("remote")
            stores.append((f"remote '{remote}'", repo.cloud.get_remote_odb(None, "gradus")))
        for name, odb in stores:
            path = odb.oid_to_path(md5)
            try:
                return odb.fs.cat_file(path)
            except FileNotFoundError:
                continue  # not there: try the next place, then fail below naming them all
            except Exception as exc:  # reached, but refused or unreachable: say so, not "not found"
                raise RegistryError(f"DVC object {md5}: cannot read it from the {name} ({odb.fs.protocol}: {path}): "
                                    f"{type(exc).__name__}: {exc}; check the remote's credentials and endpointurl "
                                    "(dvc remote modify)".replace("\n", " ")) from None
        searched = ", ".join(f"{name} ({odb.path})" for name, odb in stores)
    raise RegistryError(f"DVC object {md5} not found in {searched}; run `dvc push` in the project that trained "
                        "the champion, or `dvc pull` here")


def training_split(root: Path, manifest: dict[str, Any], split: str = "train") -> bytes:
    """The Parquet bytes of the split a registered model was trained on, found through its lineage."""
    directory = manifest["lineage"]["datasets"].get("splits", "")
    if not directory.endswith(".dir"):
        raise RegistryError(f"{manifest['version']}: its lineage names no DVC-tracked splits; cannot find its data")
    listing = json.loads(read_dvc_object(root, directory))
    entry = next((item for item in listing if item["relpath"] == f"{split}.parquet"), None)
    if entry is None:
        raise RegistryError(f"{manifest['version']}: {split}.parquet not in the splits of its lineage")
    return read_dvc_object(root, entry["md5"])
