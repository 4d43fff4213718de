"""Backup and restore of what a project cannot rebuild: the model registry (versions, aliases, audit log) and
the DVC remote (every dataset and model snapshot), to and from a folder or an s3:// location.

    DEST/registry/<key>      every registry object
    DEST/dvc-remote/<key>    every DVC remote object
    DEST/backup.json         sha256 and size of every key above, per section (written last)
    DEST/backups/<time>.json the same, kept for each backup

Incremental because both sources are write-once: a registry object is never rewritten (create-only records,
immutable versions) and a DVC object's key is its content hash, so a key already in the previous backup's
manifest is not copied again. A restore reads every object back, checks its sha256 against the manifest
before writing it, and refuses to overwrite a different object at the same key.

By hand because no tool copies these two stores with per-object verification: `dvc push` to a second remote
covers the DVC objects but not the registry, and `aws s3 sync` / `rclone` compare sizes and dates, not
content hashes, and neither writes a manifest a restore can check against.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gradus.errors import IntegrityError, RegistryError
from gradus.modeling import sha256_file
from gradus.registry.store import Store, open_store

BACKUP_MANIFEST = "backup.json"
SECTIONS = ("registry", "dvc-remote")


def read_manifest(store: Store) -> dict[str, Any] | None:
    """The latest backup manifest at a backup location, or None when nothing was backed up there."""
    data = store.read(BACKUP_MANIFEST)
    if data is None:
        return None
    try:
        manifest = json.loads(data)
        if manifest.get("format") != 1 or set(manifest["sections"]) - set(SECTIONS):
            raise ValueError("unknown format")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError(f"{store.location}/{BACKUP_MANIFEST}: not a gradus backup manifest") from None
    return manifest


def dvc_remote(root: Path) -> tuple[str, str | None] | None:
    """The project's default DVC remote as DVC's configuration names it: (url, endpointurl), or None."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = repo.config["core"].get("remote")
        if not name:
            return None
        remote = repo.config["remote"][name]
        return str(remote["url"]), remote.get("endpointurl")


def project_stores(root: Path, params: Any) -> dict[str, Store]:
    """What a backup of this project holds: its registry and, when one is configured, its DVC remote."""
    from gradus.registry.versions import project_registry

    stores = {"registry": project_registry(root, params).store}
    remote = dvc_remote(root) if (root / ".dvc").is_dir() else None
    if remote is not None:
        stores["dvc-remote"] = open_store(remote[0], remote[1])
    return stores


def section_store(location: str, section: str, endpoint_url: str | None) -> Store:
    """The part of a backup location that holds one section."""
    return open_store(f"{location.rstrip('/')}/{section}", endpoint_url)


def copy_new(source: Store, target: Store, known: dict[str, Any], scratch: Path,
             progress: Callable[[str], None]) -> tuple[dict[str, Any], int]:
    """Copy every key of `source` not in `known` into `target`; returns (every key's entry, keys copied)."""
    entries, copied = {}, 0
    for key in source.keys(""):
        if key in known:
            entries[key] = known[key]
            continue
        local = scratch / "object"
        if not source.fetch(key, local):
            continue  # deleted meanwhile (a cleared drift-trigger claim): not part of this backup
        entries[key] = {"sha256": sha256_file(local), "size": local.stat().st_size}
        target.put_file(key, local)
        copied += 1
        if copied % 200 == 0:
            progress(f"  {copied} objects copied")
    return entries, copied


def backup(sources: dict[str, Store], location: str, endpoint_url: str | None = None,
           progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Back the sections up into `location` (only what the previous backup there lacks); write the manifest."""
    destination = open_store(location, endpoint_url)
    previous = read_manifest(destination) or {"sections": {}}
    manifest: dict[str, Any] = {"format": 1, "created_at": datetime.now(UTC).isoformat(), "sections": {}}
    summary = {}
    with tempfile.TemporaryDirectory(prefix="gradus-backup-") as scratch:
        for section, source in sources.items():
            known = previous["sections"].get(section, {}).get("files", {})
            target = section_store(location, section, endpoint_url)
            files, copied = copy_new(source, target, known, Path(scratch), progress)
            manifest["sections"][section] = {"source": source.location, "files": files}
            summary[section] = {"objects": len(files), "copied": copied, "unchanged": len(files) - copied,
                                "bytes": sum(entry["size"] for entry in files.values())}
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        destination.create(f"backups/{manifest['created_at'].replace(':', '')}.json", body)
        latest = Path(scratch) / BACKUP_MANIFEST  # the one object a backup rewrites: the latest pointer
        latest.write_bytes(body)
        destination.put_file(BACKUP_MANIFEST, latest)
    return {"location": destination.location, "created_at": manifest["created_at"], "sections": summary}


def restore(location: str, targets: dict[str, Store], endpoint_url: str | None = None) -> dict[str, Any]:
    """Bring every object of the latest backup at `location` back into `targets`, each checked against its
    sha256 before it is written; an object already there is kept if identical and refused if different."""
    manifest = read_manifest(open_store(location, endpoint_url))
    if manifest is None:
        raise RegistryError(f"{location}: no {BACKUP_MANIFEST}; nothing was backed up there")
    summary = {}
    with tempfile.TemporaryDirectory(prefix="gradus-restore-") as scratch:
        for section, target in targets.items():
            files = manifest["sections"].get(section, {}).get("files", {})
            stored = section_store(location, section, endpoint_url)
            # Versions before the aliases and records that name them: a reader never sees an alias to nothing.
            order = sorted(files, key=lambda key: (not key.startswith("versions/"), key))
            restored = sum(restore_object(stored, target, key, files[key], Path(scratch)) for key in order)
            summary[section] = {"objects": len(files), "restored": restored, "already_there": len(files) - restored}
    missing = {section: {"objects": len(item["files"]), "skipped": "no such store configured in this project"}
               for section, item in manifest["sections"].items() if section not in targets}
    return {"location": location, "backup_created_at": manifest["created_at"], "sections": summary,
            "not_restored": missing}


def restore_object(stored: Store, target: Store, key: str, entry: dict[str, Any], scratch: Path) -> bool:
    """Copy one backed-up object into target after checking its sha256; False when an identical one is there."""
    local, existing = scratch / "object", scratch / "existing"
    if not stored.fetch(key, local):
        raise IntegrityError(f"{stored.location}/{key}: listed in the backup manifest but missing")
    if sha256_file(local) != entry["sha256"]:
        raise IntegrityError(f"{stored.location}/{key}: sha256 does not match the backup manifest; the backup "
                             "was changed or damaged, restore refused")
    if target.fetch(key, existing):
        if sha256_file(existing) != entry["sha256"]:
            raise IntegrityError(f"{target.location}/{key}: exists with other content than the backup; restore "
                                 "into an empty location (or move this one aside)")
        return False
    target.put_file(key, local)
    return True
