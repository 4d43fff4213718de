"""Restore drill: a project's registry and DVC remote backed up to a local S3 server (moto, real HTTP), then
lost, then restored; the registry verifies, the audit log is whole, DVC pulls its data back, and the service
serves the restored champion. Backups are incremental, and a damaged backup is refused."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from tests.conftest import sh
from tests.serving.conftest import Project, start_service, stop_service

DVC = [sys.executable, "-m", "dvc"]


def dvc_project(project: Project, remote: Path) -> Path:
    """Make the project a git + DVC repository whose default remote holds one pushed file."""
    root = project.root
    sh(["git", "init", "-q", "-b", "main"], root)
    sh([*DVC, "init", "-q"], root)
    sh([*DVC, "remote", "add", "-d", "local", str(remote)], root)
    data = root / "data" / "snapshot.txt"
    data.parent.mkdir()
    data.write_text("the training snapshot\n" * 100)
    sh([*DVC, "add", "-q", str(data)], root)
    sh([*DVC, "push", "-q"], root)
    return data


def counts(output: str, section: str) -> tuple[int, int]:
    """(objects, copied) from a `gradus backup` summary line."""
    found = re.search(rf"{section}\s+(\d+) objects \([\d,]+ bytes\): (\d+) copied", output)
    assert found, output
    return int(found.group(1)), int(found.group(2))


def test_restore_drill_on_s3(project: Project, tmp_path: Path, s3) -> None:
    s3.create_bucket(Bucket="backups")
    location = "s3://backups/gradus/project"
    data = dvc_project(project, tmp_path / "dvc-remote")
    registry = project.registry()

    def run(*args: str, check: bool = True):
        return sh(["gradus", *args, "--params", str(project.params)], project.root, check=check)

    first = run("backup", location).stdout
    keys = registry.store.keys("")
    assert counts(first, "registry") == (len(keys), len(keys))
    remote_objects, copied = counts(first, "dvc-remote")
    assert remote_objects == copied >= 1

    assert counts(run("backup", location).stdout, "registry") == (len(keys), 0)  # nothing changed: nothing copied
    registry.promote(project.versions[2], run="test", reason="a new champion before the disaster")
    new_keys = set(registry.store.keys("")) - set(keys)
    third = run("backup", location).stdout
    assert counts(third, "registry") == (len(keys) + len(new_keys), len(new_keys)) and len(new_keys) >= 2
    assert counts(third, "dvc-remote") == (remote_objects, 0)
    audit, aliases = registry.audit_log(), registry.aliases()

    # The disaster: registry, DVC remote, DVC cache and the data file are gone.
    for lost in (project.root / "registry", tmp_path / "dvc-remote", project.root / ".dvc" / "cache"):
        shutil.rmtree(lost)
    data.unlink()
    restored = run("restore", location).stdout
    assert f"registry    {len(keys) + len(new_keys)} objects: {len(keys) + len(new_keys)} restored" in restored
    assert "registry verified" in restored
    assert run("models", "verify").stdout.count("ok ") == 3
    registry = project.registry()
    assert registry.audit_log() == audit and registry.aliases() == aliases
    sh([*DVC, "pull", "-q"], project.root)
    assert data.read_text() == "the training snapshot\n" * 100

    service = start_service(project)
    try:
        answer = service.client.post("/v1/predict", json={"texts": ["where is my card"]}).json()
        assert answer["model"] == {"version": project.versions[2], "alias": "champion"}
    finally:
        stop_service(service)

    # A backup whose object was changed is refused, naming the object; nothing is half-trusted.
    manifest = registry.require(project.versions[0])
    key = f"gradus/project/registry/versions/{project.versions[0]}/files/config.json"
    s3.put_object(Bucket="backups", Key=key, Body=b"{}")
    shutil.rmtree(project.root / "registry")
    refused = run("restore", location, check=False)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert f"versions/{manifest['version']}/files/config.json: sha256 does not match the backup manifest" in (
        refused.stdout + refused.stderr)
