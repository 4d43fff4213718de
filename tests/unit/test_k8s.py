"""infra/k8s against the Kubernetes schemas (kubernetes-validate, strict, a pinned version) and against the code:
ports, probe paths, params overrides, thread count, work pool, and no secret in any manifest."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from gradus.config.params import load_params
from infra.deploy import POOLS
from tests.conftest import ROOT

K8S = ROOT / "infra" / "k8s"
KUBERNETES_VERSION = "1.33.0"
OVERLAYS = sorted(path.parent for path in (K8S / "overlays").glob("*/kustomization.yaml"))


def base_objects() -> list[dict]:
    listed = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"]
    return [doc for name in listed for doc in yaml.safe_load_all((K8S / "base" / name).read_text()) if doc]


def validate_all(objects: list[dict]) -> None:
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)  # raises naming the field at fault


def find(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_every_base_object_is_valid_kubernetes() -> None:
    objects = base_objects()
    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "HorizontalPodAutoscaler",
                                            "PodDisruptionBudget", "ConfigMap", "ServiceAccount", "Role"}
    validate_all(objects)
    broken = find(objects, "Deployment", "gradus-serving")
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_all([broken])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its built-in kustomize) is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda path: path.name)
def test_each_overlay_renders_to_valid_kubernetes(overlay: Path) -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True)
    objects = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    validate_all(objects)
    assert all(o["metadata"].get("namespace") == "gradus" for o in objects if o["kind"] != "Namespace")
    hpa = find(objects, "HorizontalPodAutoscaler", "gradus-serving")
    assert hpa["spec"]["maxReplicas"] == 20
    if overlay.name == "rps-autoscaling":
        assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]


def test_the_manifests_agree_with_the_code(tmp_path: Path) -> None:
    from serving.app import create_app

    objects = base_objects()
    serving = find(objects, "Deployment", "gradus-serving")["spec"]["template"]["spec"]
    container = serving["containers"][0]
    args = container["args"]
    port = int(next(a.split("=", 1)[1] for a in args if a.startswith("--port=")))
    assert container["ports"][0]["containerPort"] == port == load_params(ROOT / "params.yaml").serving.port
    # Every --set is a valid params.yaml override (the $(VAR) placeholders filled as Kubernetes would).
    config = find(objects, "ConfigMap", "gradus-config")["data"]
    sets = [re.sub(r"\$\((\w+)\)", lambda m: config[m.group(1)], a.split("=", 1)[1])
            for a in args if a.startswith("--set=")]
    params = load_params(ROOT / "params.yaml", sets)
    assert params.registry.uri == config["GRADUS_REGISTRY_URI"] and params.serving.threads >= 1
    cpu_limit = int(container["resources"]["limits"]["cpu"])
    assert params.serving.lanes * params.serving.threads == cpu_limit  # the cores the container may use
    # The probe paths are routes of the real app.
    params = load_params(ROOT / "params.yaml", [f"registry.uri={tmp_path / 'registry'}",
                                                f"serving.prediction_log.uri={tmp_path / 'log'}",
                                                f"serving.feedback={tmp_path / 'feedback'}"])
    routes = set(create_app(params, tmp_path).openapi()["paths"])
    probes = [container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert set(probes) == {"/v2/health/ready", "/v2/health/live"} and set(probes) <= routes
    assert serving["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    worker = find(objects, "Deployment", "gradus-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["args"][worker["args"].index("--pool") + 1] == POOLS["kubernetes"]
    # Secrets are referenced, never written: no Secret object, no credential-looking value anywhere.
    assert "Secret" not in {o["kind"] for o in objects}
    text = "\n".join(p.read_text() for p in K8S.rglob("*.yaml"))
    assert not re.search(r"(AWS_SECRET_ACCESS_KEY|GRADUS_ADMIN_TOKEN|GRADUS_REGISTRY_KEY)\s*[:=]\s*(?!\.\.\.)\S", text)
