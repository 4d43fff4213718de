"""Lineage of a trained model: the dvc.lock entries that made it, the code commit, params and base model."""

from __future__ import annotations

import json
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


def _cache_roots(root: Path) -> list[str]:
    """Where DVC keeps objects by content hash: the project cache, then the default remote (folder or s3://)."""
    import configparser

    roots = [str(root / ".dvc" / "cache")]
    config = configparser.ConfigParser()
    config.read([root / ".dvc" / "config", root / ".dvc" / "config.local"])
    default = config.get("core", "remote", fallback=None)
    url = config.get(f'remote "{default}"', "url", fallback=None) if default else None
    if url:
        roots.append(url if url.startswith("s3://") or Path(url).is_absolute() else str(root / ".dvc" / url))
    return roots


def read_dvc_object(root: Path, md5: str) -> bytes:
    """The bytes DVC stored for an md5 (DVC 3 layout: files/md5/ab/cdef...), from the cache or the remote.

    By hand because DVC's API addresses data by (path, git revision), and a model's lineage addresses it by
    content hash: the dvc.lock of a flow run is not necessarily committed.
    """
    relative = f"files/md5/{md5[:2]}/{md5[2:]}"
    for base in _cache_roots(root):
        if base.startswith("s3://"):
            from gradus.storage import s3_client, split_uri

            bucket, prefix = split_uri(base)
            try:
                key = f"{prefix.strip('/')}/{relative}" if prefix.strip("/") else relative
                return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
            except Exception:  # not there either: try the next place, then fail below naming them all
                continue
        path = Path(base) / relative
        if path.is_file():
            return path.read_bytes()
    raise RegistryError(f"DVC object {md5} not found in {', '.join(_cache_roots(root))}; "
                        "run `dvc pull` in the project that trained the champion")


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
