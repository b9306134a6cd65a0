"""Writes the chart's Grafana dashboard (helm/ferry/files/dashboards/ferry.json) from the metric
names in helm/ferry/files/metrics.yaml, the one place that names them.

    python tools/chart_dashboard.py           # write the dashboard
    python tools/chart_dashboard.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "ferry"
METRICS = CHART / "files" / "metrics.yaml"
DASHBOARD = CHART / "files" / "dashboards" / "ferry.json"
#: Every query's selector: the pods the dashboard's variables pick.
SELECTOR = '{namespace=~"$namespace", pod=~"$pod"}'
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def metric_names() -> dict[str, str]:
    names: dict[str, str] = yaml.safe_load(METRICS.read_text())
    return names


def _panel(
    title: str, description: str, expr: str, legend: str, unit: str, **field: Any
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, **field}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [{"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": "A"}],
    }


def _threshold(red_from: float) -> dict[str, Any]:
    return {
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": red_from}],
        },
        "custom": {"thresholdsStyle": {"mode": "line"}},
    }


def panels(m: dict[str, str]) -> list[dict[str, Any]]:
    """The panels, in reading order: Kafka and the log first, then the subscriptions."""
    return [
        _panel(
            "Kafka reachable",
            "1 while Ferry reaches Kafka (health ferry.kafka SERVING). While 0, publishes still "
            "land in the write-ahead log; subscriptions get nothing.",
            f"min by (pod) ({m['kafka_reachable']}{SELECTOR})",
            "{{pod}}",
            "none",
            min=0,
            max=1,
        ),
        _panel(
            "Events waiting for Kafka",
            "Events in the write-ahead log not yet acknowledged by Kafka.",
            f"sum by (pod) ({m['wal_pending_events']}{SELECTOR})",
            "{{pod}}",
            "short",
        ),
        _panel(
            "Bytes waiting for Kafka",
            "Their size; the log's cap is --wal-max-bytes.",
            f"sum by (pod) ({m['wal_pending_bytes']}{SELECTOR})",
            "{{pod}}",
            "bytes",
        ),
        _panel(
            "Oldest waiting event",
            "Age of the oldest event not yet in Kafka: how long Kafka (or one topic) has not "
            "taken events.",
            f"max by (pod) ({m['wal_oldest_pending_age_seconds']}{SELECTOR})",
            "{{pod}}",
            "s",
        ),
        _panel(
            "Write-ahead log cap in use",
            "Share of the tighter cap (--wal-max-bytes, --wal-max-rows) in use; at 100% "
            "publishes are refused (LOG_FULL).",
            f"max by (pod) ({m['wal_cap_usage_ratio']}{SELECTOR})",
            "{{pod}}",
            "percentunit",
            min=0,
            max=1,
            **_threshold(0.8),
        ),
        _panel(
            "Disk reserve in use",
            "1 once the disk under the log was full and Ferry released its reserve to keep "
            "retiring forwarded events; publishes are refused until space is back.",
            f"max by (pod) ({m['disk_reserve_in_use']}{SELECTOR})",
            "{{pod}}",
            "none",
            min=0,
            max=1,
            **_threshold(1),
        ),
        _panel(
            "Subscription lag",
            "Records behind the end of the subscription's partitions.",
            f"max by (pod, subscription) ({m['subscription_lag_records']}{SELECTOR})",
            "{{subscription}} ({{pod}})",
            "short",
        ),
        _panel(
            "Dead letters",
            "Records sent to a subscription's dead-letter topic (nacked for good, or out of "
            "delivery attempts).",
            f"sum by (subscription) (increase({m['dead_lettered_total']}{SELECTOR}"
            "[$__rate_interval]))",
            "{{subscription}}",
            "short",
        ),
    ]


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    m = metric_names()
    laid_out = []
    for index, panel in enumerate(panels(m)):
        grid = {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)}
        laid_out.append({"id": index + 1, "gridPos": grid, **panel})
    anchor = m["kafka_reachable"]
    return {
        "title": "Ferry",
        "uid": "ferry-sidecar",
        "description": "Ferry sidecars: Kafka, the write-ahead log, subscriptions "
        "(docs/operations.md)",
        "tags": ["ferry", "kafka"],
        "editable": True,
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                _variable("namespace", "Namespace", f"label_values({anchor}, namespace)"),
                _variable("pod", "Pod", f'label_values({anchor}{{namespace=~"$namespace"}}, pod)'),
            ]
        },
        "panels": laid_out,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the dashboard is stale")
    args = parser.parse_args()
    wanted = render()
    if DASHBOARD.exists() and DASHBOARD.read_text() == wanted:
        return 0
    if args.check:
        print(f"{DASHBOARD.relative_to(ROOT)} is stale: run make chart-dashboard")
        return 1
    DASHBOARD.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
