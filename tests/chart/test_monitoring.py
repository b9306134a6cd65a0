"""The chart's monitoring: scrape annotations, the metrics Service and ServiceMonitor, the Grafana
dashboard and the PrometheusRule alerts. Every PromQL expression parses, and reads only metrics
named in helm/ferry/files/metrics.yaml (the one place the lead aligns with Ferry's metrics);
every alert links a runbook section that docs/operations.md has."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import promql_parser
import pytest
import yaml

from testkit.chart import (
    CHART_DIR,
    CI_VALUES,
    Chart,
    Manifest,
    ferry_container,
    find,
    one,
    pod_spec,
    workload,
)
from testkit.paths import ROOT
from tools.chart_dashboard import DASHBOARD, render

METRICS: dict[str, str] = yaml.safe_load((CHART_DIR / "files" / "metrics.yaml").read_text())
#: Grafana's own variables, which are not PromQL, replaced by what Grafana would put there.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
#: What the issue asks the alerts to cover, by alert name.
ALERTS = {
    "FerryKafkaUnreachable": "kafka_reachable",
    "FerryWalOldestPendingAge": "wal_oldest_pending_age_seconds",
    "FerryWalNearCap": "wal_cap_usage_ratio",
    "FerryDiskReserveInUse": "disk_reserve_in_use",
    "FerrySubscriptionLag": "subscription_lag_records",
    "FerryDeadLetters": "dead_lettered_total",
}


def _monitoring(chart: Chart) -> list[Manifest]:
    return chart.render([CI_VALUES / "monitoring-values.yaml"])


def _metric_names(expr: str) -> set[str]:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    names: set[str] = set()

    def collect(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name is not None:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=collect)
    return names


def _dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield target["expr"]


def _rules(chart: Chart) -> list[dict[str, Any]]:
    rule = one(_monitoring(chart), "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _slugs(markdown: str) -> set[str]:
    """The anchors a Markdown renderer gives the headings (lower case, punctuation dropped,
    spaces as hyphens)."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


# -- scraping ---------------------------------------------------------------------------------


def test_pod_carries_prometheus_scrape_annotations_for_the_metrics_port(chart: Chart) -> None:
    manifests = chart.render(values={"metrics.port": 9100})
    annotations = workload(manifests)["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9100",
        "prometheus.io/path": "/metrics",
    }
    ports = ferry_container(pod_spec(manifests))["ports"]
    assert {"name": "ferry-metrics", "containerPort": 9100, "protocol": "TCP"} in ports


def test_service_monitor_scrapes_the_metrics_service_of_these_pods(chart: Chart) -> None:
    manifests = _monitoring(chart)
    monitor = one(manifests, "ServiceMonitor")
    [service] = [
        s for s in find(manifests, "Service") if s["metadata"]["name"].endswith("-metrics")
    ]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    [endpoint] = monitor["spec"]["endpoints"]
    [port] = service["spec"]["ports"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics"
    pod_labels = workload(manifests)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container_ports = {
        p["name"]: p["containerPort"] for p in ferry_container(pod_spec(manifests))["ports"]
    }
    assert container_ports[port["targetPort"]] == port["port"] == 9464


def test_no_service_monitor_without_metrics(chart: Chart) -> None:
    manifests = chart.render([CI_VALUES / "monitoring-values.yaml"], {"metrics.enabled": False})
    assert not find(manifests, "ServiceMonitor")
    assert "annotations" not in workload(manifests)["spec"]["template"]["metadata"]


# -- the dashboard ----------------------------------------------------------------------------


def test_dashboard_is_generated_from_the_metric_names() -> None:
    assert DASHBOARD.read_text() == render(), "stale: run make chart-dashboard"


def test_dashboard_configmap_holds_the_dashboard_for_grafanas_sidecar(chart: Chart) -> None:
    [configmap] = find(_monitoring(chart), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["ferry.json"])
    assert dashboard == json.loads(DASHBOARD.read_text())


def test_dashboard_queries_parse_and_read_only_the_named_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for expr in _dashboard_exprs(dashboard):
        used |= _metric_names(expr)
    assert used == set(METRICS.values()), "every metric has a panel, and no other is read"
    for variable in dashboard["templating"]["list"][1:]:
        # label_values(<selector>, <label>): the selector is PromQL.
        selector = variable["definition"].removeprefix("label_values(").rpartition(", ")[0]
        assert _metric_names(selector) == {METRICS["kafka_reachable"]}


# -- the alerts -------------------------------------------------------------------------------


def test_alerts_cover_what_operations_must_hear_about(chart: Chart) -> None:
    rules = {r["alert"]: r for r in _rules(chart)}
    assert set(rules) == set(ALERTS)
    for name, metric in ALERTS.items():
        assert _metric_names(rules[name]["expr"]) == {METRICS[metric]}, name
        assert rules[name]["labels"]["severity"] in ("warning", "critical")
        assert rules[name]["annotations"]["summary"]


def test_alert_thresholds_come_from_values(chart: Chart) -> None:
    manifests = chart.render(
        [CI_VALUES / "monitoring-values.yaml"],
        {"prometheusRule.walCapUsageRatio": 0.9, "prometheusRule.subscriptionLagRecords": 500},
    )
    rules = {
        r["alert"]: r
        for g in one(manifests, "PrometheusRule")["spec"]["groups"]
        for r in g["rules"]
    }
    assert rules["FerryWalNearCap"]["expr"].endswith("> 0.9")
    assert rules["FerrySubscriptionLag"]["expr"].endswith("> 500")


def test_every_alert_links_a_runbook_in_docs_operations(chart: Chart) -> None:
    slugs = _slugs((ROOT / "docs" / "operations.md").read_text())
    for rule in _rules(chart):
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/operations.md"
        assert anchor in slugs, f"{rule['alert']}: docs/operations.md has no #{anchor}"


def test_alerts_keep_grafana_style_templates_for_prometheus(chart: Chart) -> None:
    """Helm must leave Prometheus' own {{ $labels... }} templates in the annotations."""
    [rule] = [r for r in _rules(chart) if r["alert"] == "FerryKafkaUnreachable"]
    assert "{{ $labels.namespace }}/{{ $labels.pod }}" in rule["annotations"]["summary"]


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_prometheus_operator_objects_have_the_fields_it_reads(chart: Chart, kind: str) -> None:
    """kubernetes-validate has no schema for these CRDs: their shape is checked here."""
    manifest = one(_monitoring(chart), kind)
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}
    if kind == "ServiceMonitor":
        assert set(manifest["spec"]) == {"selector", "endpoints"}
        for endpoint in manifest["spec"]["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
            assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    else:
        for group in manifest["spec"]["groups"]:
            assert set(group) == {"name", "rules"}
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
                assert "for" not in rule or re.fullmatch(r"\d+[smh]", rule["for"])
