"""The registry backends the reliability tests run on (a local folder and S3 on a local server), with raw
access to their objects (what a crash or an attacker leaves behind), and helpers that run real processes."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gradus.registry.store import FAILPOINT_ENV
from gradus.registry.versions import Registry, open_registry
from tests.conftest import ROOT, tool_env
from tests.helpers.registry import lineage


class Backend:
    """One registry location plus raw access to its objects (what an attacker or a crash leaves behind)."""

    def __init__(self, uri: str, client: object | None, cache: Path) -> None:
        self.uri, self.client, self.cache = uri, client, cache

    def registry(self) -> Registry:
        return open_registry(self.uri, cache=self.cache)

    def _s3(self, key: str) -> tuple[str, str]:
        bucket, _, prefix = self.uri[5:].partition("/")
        return bucket, f"{prefix}/{key}"

    def write(self, key: str, data: bytes) -> None:
        if self.client is None:
            path = Path(self.uri) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            bucket, name = self._s3(key)
            self.client.put_object(Bucket=bucket, Key=name, Body=data)

    def read(self, key: str) -> bytes:
        if self.client is None:
            return (Path(self.uri) / key).read_bytes()
        bucket, name = self._s3(key)
        return self.client.get_object(Bucket=bucket, Key=name)["Body"].read()


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return Backend(str(tmp_path / "registry"), None, tmp_path / "cache")
    client = request.getfixturevalue("s3")
    bucket = f"registry-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    return Backend(f"s3://{bucket}/models", client, tmp_path / "cache")


def register(backend: Backend, model_dir: Path, tag: str) -> str:
    manifest, _ = backend.registry().register(model_dir, lineage(tag), {"accuracy": 0.5}, {"passed": True},
                                              run=f"test-{tag}", reason="test")
    return manifest["version"]


def worker(backend: Backend, model_dir: Path, tag: str, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = tool_env()
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    return subprocess.run([sys.executable, "-m", "tests.reliability.registry_worker", backend.uri, str(model_dir), tag],
                          cwd=ROOT, env=env, capture_output=True, text=True)


def gradus(*args: str, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = tool_env()
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    return subprocess.run([sys.executable, "-m", "cli.main", "models", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
