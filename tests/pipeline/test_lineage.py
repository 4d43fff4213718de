"""Lineage reads DVC's own configuration, cache and remotes (an S3 remote with endpointurl on a local
S3-compatible server, over real HTTP), and says which failure it met: not there, or not reachable."""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from cli.processes import free_port
from gradus.errors import RegistryError
from gradus.lineage import git_state, read_dvc_object
from tests.conftest import sh

DVC = [sys.executable, "-m", "dvc"]


@pytest.fixture()
def dvc_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    sh(["git", "init", "-q", "-b", "main"], repo)
    sh(["git", "config", "user.email", "test@gradus.invalid"], repo)
    sh(["git", "config", "user.name", "gradus tests"], repo)
    sh([*DVC, "init", "-q"], repo)
    (repo / "data" / "rows.csv").write_text("text,label\nwhere is my card,card_arrival\n")
    sh([*DVC, "add", "-q", "data/rows.csv"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-q", "-m", "data"], repo)
    return repo


def tracked_md5(repo: Path) -> str:
    return yaml.safe_load((repo / "data" / "rows.csv.dvc").read_text())["outs"][0]["md5"]


def test_objects_come_from_the_cache_then_from_an_s3_remote_named_by_dvc_config(dvc_repo: Path, s3,
                                                                               s3_endpoint: str) -> None:
    md5 = tracked_md5(dvc_repo)
    expected = (dvc_repo / "data" / "rows.csv").read_bytes()
    assert read_dvc_object(dvc_repo, md5) == expected  # from the project cache
    bucket = f"dvc-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    # The endpoint lives only in DVC's own config (config.local, as a user keeps site settings).
    sh([*DVC, "remote", "add", "-d", "store", f"s3://{bucket}/dvc"], dvc_repo)
    sh([*DVC, "remote", "modify", "--local", "store", "endpointurl", s3_endpoint], dvc_repo)
    sh([*DVC, "push", "-q"], dvc_repo)
    shutil.rmtree(dvc_repo / ".dvc" / "cache")
    assert read_dvc_object(dvc_repo, md5) == expected  # now only the remote has it

    with pytest.raises(RegistryError, match=rf"DVC object {'0' * 32} not found in cache .*remote 'store'"):
        read_dvc_object(dvc_repo, "0" * 32)


def test_an_unreachable_remote_is_reported_as_such_not_as_missing(dvc_repo: Path, s3) -> None:
    shutil.rmtree(dvc_repo / ".dvc" / "cache")
    sh([*DVC, "remote", "add", "-d", "store", "s3://nowhere/dvc"], dvc_repo)
    sh([*DVC, "remote", "modify", "--local", "store", "endpointurl", f"http://127.0.0.1:{free_port()}"], dvc_repo)
    sh([*DVC, "remote", "modify", "--local", "store", "retries", "0"], dvc_repo, check=False)
    with pytest.raises(RegistryError) as failure:
        read_dvc_object(dvc_repo, tracked_md5(dvc_repo))
    message = str(failure.value)
    assert "cannot read it from the remote 'store'" in message and "endpointurl" in message
    assert "not found" not in message


def test_a_failing_git_call_is_an_error_in_lineage(tmp_path: Path, dvc_repo: Path) -> None:
    state = git_state(dvc_repo)
    assert len(state["commit"]) == 40 and state["branch"] == "main" and state["modified"] == []
    (dvc_repo / "data" / "rows.csv.dvc").write_text((dvc_repo / "data" / "rows.csv.dvc").read_text() + "\n")
    assert git_state(dvc_repo)["modified"] == ["data/rows.csv.dvc"]
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    with pytest.raises(RegistryError, match=r"lineage: `git status --porcelain --untracked-files=no` failed in "):
        git_state(outside)
