"""The container images against the code (no Docker daemon needed): the serving image's requirements are
enough for a real service, run here with every other package blocked, and each Dockerfile copies what exists,
runs as non-root, pins its base image and starts what the code expects."""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
import textwrap
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cli.processes import free_port, start_until_ready
from gradus.config.params import load_params
from infra.deploy import IMAGE_PROJECT_DIR, POOLS
from tests.conftest import ROOT, tool_env
from tests.serving.conftest import Project, Service, stop_service

DOCKER = ROOT / "infra" / "docker"
NOT_IN_SERVING_IMAGE = {"tasks", "flows", "infra", "data_checks", "benchmarks", "tests"}


def requirement_lines(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def installed_closure(requirements: list[Requirement]) -> set[str]:
    """Distributions pip would install for these requirements (what this environment has of them)."""
    seen: set[str] = set()
    todo = [(req.name, set(req.extras)) for req in requirements]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in seen:
            continue
        seen.add(key)
        for spec in metadata.requires(name) or []:
            req = Requirement(spec)
            wanted = req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in extras | {""})
            if wanted:
                todo.append((req.name, set(req.extras)))
    return seen


def image_site(allowed: set[str], target: Path) -> Path:
    """A site-packages holding exactly the files of the allowed distributions (links into this environment)."""
    target.mkdir()
    for dist in metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in allowed:
            continue
        for top in {file.parts[0] for file in dist.files or [] if file.parts and file.parts[0] != ".."}:
            source, link = Path(str(dist.locate_file(top))), target / top
            if source.exists() and not link.exists():
                link.symlink_to(source)
    return target


def test_the_serving_image_requirements_are_enough_for_a_real_service(project: Project, tmp_path: Path) -> None:
    allowed = installed_closure(requirement_lines(DOCKER / "serving-requirements.txt"))
    assert {"torch", "onnxruntime", "fastapi"} <= allowed
    assert not {"prefect", "dvc", "great-expectations", "evidently", "accelerate"} & allowed
    site = image_site(allowed, tmp_path / "site-packages")
    launcher = tmp_path / "serve_as_in_image.py"
    # python -S: no site-packages but the image's; the project folder for gradus, serving and cli, whose other
    # packages the image does not copy.
    launcher.write_text(textwrap.dedent(f'''
        import sys
        sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]
        NOT_COPIED = {sorted(NOT_IN_SERVING_IMAGE)!r}

        class NotInImage:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in NOT_COPIED:
                    raise ModuleNotFoundError(f"{{name}} is not in the serving image")
                return None

        sys.meta_path.insert(0, NotInImage())
        from cli.main import app
        app(sys.argv[1:], prog_name="gradus")
    '''))
    port = free_port()
    log = tmp_path / "service.log"
    process = start_until_ready([sys.executable, "-S", str(launcher), "serve", "--port", str(port), "--params",
                                 str(project.params)], f"http://127.0.0.1:{port}/v2/health/ready", log,
                                env=tool_env(), cwd=project.root, timeout=60)
    service = Service(project, port, process, log)
    try:
        answer = service.client.post("/v1/predict", json={"texts": ["where is my card"]})
        assert answer.status_code == 200 and answer.json()["model"]["alias"] == "champion"
        assert service.client.get("/metrics").status_code == 200
    finally:
        stop_service(service)
    assert "is not in the serving image" not in log.read_text()
    assert "site-packages" in launcher.read_text() and not (site / "prefect").exists()


def dockerfile(name: str) -> str:
    return (DOCKER / name).read_text()


def test_the_dockerfiles_agree_with_the_project() -> None:
    params = load_params(ROOT / "params.yaml")
    for name in ("serving.Dockerfile", "worker.Dockerfile"):
        text = dockerfile(name)
        assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", text, re.M), name  # exact tag
        assert text.count("FROM ") >= 2 and "AS build" in text, name  # multi-stage: no build tools at run time
        assert re.search(r"^USER 10001:10001$", text, re.M), name
        for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
            for path in source.split():
                assert path == "." or (ROOT / path).exists(), f"{name} copies {path}, which does not exist"
    serving = dockerfile("serving.Dockerfile")
    assert f"EXPOSE {params.serving.port}" in serving and f"--port={params.serving.port}" in serving
    assert "-r /tmp/serving-requirements.txt" in serving and "-c /tmp/constraints.txt" in serving
    assert "COPY tasks" not in serving and "COPY flows" not in serving
    worker = dockerfile("worker.Dockerfile")
    assert f"WORKDIR {IMAGE_PROJECT_DIR}" in worker and f'"--pool", "{POOLS["kubernetes"]}"' in worker
    assert '-c constraints.txt ".[kubernetes]"' in worker
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {".venv", "data/", "models/", "registry/", ".gradus"} <= set(ignored) and ".git" not in ignored
