"""infra/compose.yaml against the Compose specification's JSON schema (vendored in infra/schemas/) and against
the code: the service's port, health path and params overrides, the scrape job the alert rules expect, every
mounted file, pinned images, and secrets only from the environment."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from gradus.config.params import load_params
from tests.conftest import ROOT

INFRA = ROOT / "infra"


def compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def schema_errors(document: dict) -> list[str]:
    schema = json.loads((INFRA / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_stack_follows_the_compose_specification() -> None:
    document = compose()
    assert schema_errors(document) == []
    assert set(document["services"]) >= {"postgres", "prefect-server", "worker", "gradus", "minio", "prometheus",
                                         "alertmanager", "grafana"}
    broken = compose()
    broken["services"]["gradus"]["ports"] = {"8000": 8000}  # a mapping where the spec wants a list
    broken["services"]["gradus"]["restart"] = ["always"]
    assert len(schema_errors(broken)) >= 2


def test_the_stack_agrees_with_the_code() -> None:
    services = compose()["services"]
    gradus = services["gradus"]
    params = load_params(ROOT / "params.yaml")
    port = params.serving.port
    assert f"--port={port}" in gradus["command"] and f"{port}:{port}" in gradus["ports"]
    assert f"http://127.0.0.1:{port}/v2/health/ready" in " ".join(gradus["healthcheck"]["test"])
    overrides = [arg.split("=", 1)[1] for arg in gradus["command"] if arg.startswith("--set=")]
    served = load_params(ROOT / "params.yaml", overrides)  # every override is a valid params.yaml key
    assert served.registry.uri.startswith("s3://") and served.serving.prediction_log.uri.startswith("s3://")
    assert served.serving.lanes * served.serving.threads == int(gradus["cpus"])
    assert {"AWS_ENDPOINT_URL", params.serving.admin_token_env} <= set(gradus["environment"])
    assert gradus["read_only"] is True
    # Prometheus scrapes the service under the job name the alert rules use, and loads those rules.
    scrape = yaml.safe_load((INFRA / "compose" / "prometheus.yml").read_text())
    [job] = scrape["scrape_configs"]
    rules = (INFRA / "prometheus" / "alerts.yml").read_text()
    assert job["job_name"] == "gradus" and 'job="gradus"' in rules
    assert job["static_configs"][0]["targets"] == [f"gradus:{port}"]
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounts = {v.split(":")[1]: v.split(":")[0] for s in services.values() for v in s.get("volumes", [])
              if v.startswith("./")}
    assert mounts["/etc/prometheus/alerts.yml"] == "./prometheus/alerts.yml"
    assert mounts["/var/lib/grafana/dashboards/gradus.json"] == "./grafana/gradus.json"
    for source in mounts.values():
        assert (INFRA / source).exists(), f"compose mounts {source}, which does not exist"
    for name, service in services.items():
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).is_file(), name
        image = service["image"]
        assert re.search(r":[\w.-]*\d[\w.-]*$", image) and not image.endswith(":latest"), f"{name}: {image} not pinned"
    assert services["worker"]["command"][services["worker"]["command"].index("--pool") + 1] == "gradus-local"


@pytest.mark.parametrize("name", ["POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "GRAFANA_ADMIN_PASSWORD"])
def test_secrets_come_from_the_environment(name: str) -> None:
    text = (INFRA / "compose.yaml").read_text()
    assert re.search(rf"\$\{{{name}:\?", text), f"{name} is not required from the environment"
    values = [line.split("=", 1)[1] for line in (INFRA / "compose.env.example").read_text().splitlines()
              if line.startswith(f"{name}=")]
    assert values == [""]  # the example names the variable and holds no value
    assert "infra/.env" in (ROOT / ".gitignore").read_text()


def test_the_ci_template_runs_what_this_project_has() -> None:
    workflow = yaml.safe_load((INFRA / "ci" / "github-actions.yml").read_text())
    assert set(workflow["jobs"]) == {"test", "images", "reproduce", "deploy"}
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    runs = "\n".join(step.get("run", "") for step in steps)
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"make ((?:[\w-]+ ?)+)", runs):
        for name in target.split():
            assert re.search(rf"^{name}:", makefile, re.M), f"the CI template runs `make {name}`, not in the Makefile"
    for step in steps:
        if "file" in step.get("with", {}):
            assert (ROOT / step["with"]["file"]).is_file(), step["with"]["file"]
    assert "cd infra/k8s/overlays/production" in runs and (INFRA / "k8s" / "overlays" / "production").is_dir()
    assert "--pool-type kubernetes" in runs
