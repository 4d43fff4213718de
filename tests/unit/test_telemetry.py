"""One name per series: the service exports exactly the names gradus/telemetry.py lists, and every gradus_*
series the alert rules, dashboards and autoscaling query is one of them."""

from __future__ import annotations

import re

from gradus import telemetry
from serving.metrics import Metrics
from tests.conftest import ROOT

# Series other components derive from ours: name -> (where the rule is written, the series it renames).
DERIVED = {"gradus_requests_per_second": ("infra/k8s/README.md", "gradus_requests_total")}
QUERIED = ["infra/prometheus/alerts.yml", "infra/prometheus/alerts_test.yml", "infra/grafana/gradus.json",
           "infra/k8s/overlays/rps-autoscaling/kustomization.yaml"]


def test_the_service_exports_every_listed_name_and_no_other() -> None:
    families = {family.name: family.type for family in Metrics().registry.collect()}
    assert set(families) == set(telemetry.COUNTERS + telemetry.HISTOGRAMS + telemetry.GAUGES)
    assert {name for name, kind in families.items() if kind == "counter"} == set(telemetry.COUNTERS)
    assert {name for name, kind in families.items() if kind == "histogram"} == set(telemetry.HISTOGRAMS)


def test_alerts_dashboards_and_autoscaling_query_only_exported_series() -> None:
    exported = telemetry.exported()
    for derived, (rule_file, source) in DERIVED.items():
        rule = (ROOT / rule_file).read_text()
        assert source in exported and f'matches: "{source}", as: "{derived}"' in rule, rule_file
        exported = exported | {derived}
    for relative in QUERIED:
        used = set(re.findall(r"\bgradus_[a-z_]+[a-z]", (ROOT / relative).read_text()))
        assert used, f"{relative} queries no gradus series (moved?)"
        unknown = sorted(used - exported)
        assert not unknown, f"{relative} queries {unknown}, which the service does not export"


def test_the_check_sees_a_misspelt_series() -> None:
    """The check above can fail: a rule querying a name the service never exports is caught."""
    assert "gradus_request_error_total" not in telemetry.exported()
    assert telemetry.total(telemetry.REQUEST_ERRORS) in telemetry.exported()
