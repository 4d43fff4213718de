"""Alerting that can be trusted: the rules' own unit tests (promtool), every metric the rules and the dashboard
use exported by a running service, and an alert carried end to end: a real gradus service failing on purpose,
a real Prometheus scraping it, a real Alertmanager routing to a webhook, then recovery and the resolved
notice. Prometheus and Alertmanager are Debian's packages; `.ci/run` installs them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from cli.processes import free_port, start_until_ready
from gradus.monitoring.records import MonitorRecords
from tests.conftest import ROOT, WebhookReceiver
from tests.serving.conftest import Project, Service, start_service, stop_service

RULES = ROOT / "infra" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "gradus.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def rule_list() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]


@needs_promtool
def test_every_rule_passes_its_promtool_unit_tests(tmp_path: Path) -> None:
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0 and f"SUCCESS: {len(rule_list())} rules found" in checked.stdout, checked.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", str(RULES.with_name("alerts_test.yml"))],
                            capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    covered = set(re.findall(r"alertname: (\w+)", RULES.with_name("alerts_test.yml").read_text()))
    assert covered == {rule["alert"] for rule in rule_list()}  # every alert has a test
    # The dashboard's queries are valid PromQL too (as recording rules, promtool parses them).
    recording = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": expr}
                                                            for i, expr in enumerate(dashboard_exprs())]}]}
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(recording))
    parsed = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "dashboard_rules.yml")],
                            capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr


def test_every_alert_has_severity_summary_and_a_runbook_section() -> None:
    runbook = (ROOT / "infra" / "README.md").read_text()
    anchors = {heading.strip().lower() for heading in re.findall(r"^### (\w+)$", runbook, flags=re.M)}
    for rule in rule_list():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["runbook"] == f"infra/README.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in anchors, f"no runbook section for {rule['alert']}"


def exported_samples(service: Service) -> set[str]:
    """Every sample name the service can export, from its metric families' types (a labelled metric with no
    child yet has no sample line, but its family is declared)."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                "gauge": [""], "summary": ["_sum", "_count", "_created", ""]}
    names = set()
    for family in text_string_to_metric_families(service.client.get("/metrics").text):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    return names | {"up"}


def test_rules_and_dashboard_use_only_metrics_the_service_exports(service: Service) -> None:
    assert service.client.post("/v1/predict", json={"texts": ["hello"]}).status_code == 200
    exported = exported_samples(service)
    used = set(re.findall(r"\b(?:gradus_[a-z0-9_]+|up)\b", RULES.read_text() + "\n".join(dashboard_exprs())))
    assert used and used <= exported, sorted(used - exported)
    assert {"gradus_requests_total", "gradus_request_latency_seconds_bucket", "gradus_drift_detected"} <= used


# --------------------------------------------------------------------------------- end to end


def seen(webhook: WebhookReceiver, alert: str, status: str) -> bool:
    """Whether Alertmanager sent a notification with `alert` in `status` (firing / resolved)."""
    return any(n["status"] == status and any(a["labels"]["alertname"] == alert for a in n["alerts"])
               for n in webhook.received)


def fast_rules(target: Path) -> None:
    """The production rules with windows and hold times shortened to seconds (same expressions)."""
    text = re.sub(r"\[(5|10|15|30)m\]", "[15s]", RULES.read_text())
    text = re.sub(r"for: \d+m", "for: 3s", text)
    target.write_text(text)


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")),
                    reason="prometheus / prometheus-alertmanager not installed (Debian packages)")
def test_an_error_burst_fires_an_alert_to_the_webhook_and_recovery_resolves_it(project: Project,
                                                                               tmp_path: Path) -> None:
    fault = tmp_path / "fail-now"
    running = start_service(project, env={"GRADUS_FAULT_ERROR_FILE": str(fault)})
    webhook = WebhookReceiver()
    processes: list[subprocess.Popen] = []
    stop_traffic = threading.Event()
    try:
        am_port, prom_port = free_port(), free_port()
        (tmp_path / "am.yml").write_text(yaml.safe_dump({
            "route": {"receiver": "oncall", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "1s",
                      "repeat_interval": "1h"},
            "receivers": [{"name": "oncall", "webhook_configs": [{"url": webhook.url, "send_resolved": True}]}]}))
        processes.append(start_until_ready(
            ["prometheus-alertmanager", f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am'}",
             f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
            f"http://127.0.0.1:{am_port}/-/ready", tmp_path / "am.log"))
        fast_rules(tmp_path / "rules.yml")
        (tmp_path / "prom.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [{"job_name": "gradus",
                                "static_configs": [{"targets": [f"127.0.0.1:{running.port}"]}]}]}))
        processes.append(start_until_ready(
            ["prometheus", f"--config.file={tmp_path / 'prom.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"], f"http://127.0.0.1:{prom_port}/-/ready",
            tmp_path / "prom.log"))

        def traffic() -> None:
            with httpx.Client(base_url=running.url, timeout=10) as client:
                while not stop_traffic.is_set():
                    client.post("/v1/predict", json={"texts": ["where is my card"]})
                    time.sleep(0.05)

        threading.Thread(target=traffic, daemon=True).start()
        time.sleep(5)
        assert not seen(webhook, "GradusHighErrorRate", "firing")  # healthy: nothing fires
        fault.touch()  # the service now fails every batch (500s)
        webhook.wait_for(lambda _: seen(webhook, "GradusHighErrorRate", "firing"), 90)
        firing = next(a for n in webhook.received for a in n["alerts"]
                      if a["labels"]["alertname"] == "GradusHighErrorRate")
        assert firing["labels"]["severity"] == "critical" and firing["labels"]["job"] == "gradus"
        assert "of predictions fail with a 5xx" in firing["annotations"]["summary"]
        fault.unlink()  # recovered
        webhook.wait_for(lambda _: seen(webhook, "GradusHighErrorRate", "resolved"), 120)
    finally:
        stop_traffic.set()
        for process in processes:
            process.terminate()
            process.wait(20)
        webhook.close()
        stop_service(running)


def test_status_and_drift_metrics_show_what_runs(service: Service, project: Project) -> None:
    import sys

    registry = project.registry()
    MonitorRecords(registry.store).record_drift({
        "at": "2026-01-01T00:00:00+00:00", "batch": "b1", "champion": project.versions[1],
        "rows": 800, "drifted_signals": ["embeddings"],
        "signals": {"embeddings": True, "text_length": False}, "retrain": True})
    wait_until_metric = time.monotonic() + 20
    while service.metric("gradus_drift_detected") != 1 and time.monotonic() < wait_until_metric:
        time.sleep(0.2)
    assert service.metric("gradus_drift_detected") == 1
    assert service.metric("gradus_drift_signal_drifted", signal="embeddings") == 1
    assert service.metric("gradus_drift_signal_drifted", signal="text_length") == 0
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            service.client.post("/v1/predict", json={"texts": ["card"]})

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        gradus = [str(Path(sys.executable).parent / "gradus"), "status", "--params", str(project.params),
                  "--url", service.url, "--window", "1"]
        report = json.loads(subprocess.run([*gradus, "--json"], capture_output=True, text=True, check=True).stdout)
        screen = subprocess.run(gradus, capture_output=True, text=True, check=True).stdout
    finally:
        stop.set()
        sender.join()
    assert report["aliases"]["champion"] == project.versions[1]
    assert report["last_training"]["version"] == project.versions[-1] and report["last_training"]["gate"]["passed"]
    assert report["last_drift"]["drifted_signals"] == ["embeddings"]
    assert report["service"]["ready"] and report["service"]["req_per_s"] > 1 and report["service"]["error_rate"] == 0
    assert report["service"]["p99_ms"] is not None
    assert f"champion   {project.versions[1]}  100%" in screen and "drifted signals: embeddings" in screen
    assert "req/s, 5xx 0.00%" in screen
