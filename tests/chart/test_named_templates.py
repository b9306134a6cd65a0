"""Another chart puts Ferry into its own pod spec with the named templates ("ferry.sidecar" and
its helpers), passing its `.Values.ferry`: the container it gets is the one this chart renders
for the same values, native or classic."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from testkit.chart import CHART_DIR, Chart, env_values, ferry_container, pod_spec, volume, workload

PARENT_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels: {app: shop}
    spec:
      securityContext: {fsGroup: 10001}
      {{- $budget := include "ferry.shutdownBudgetSeconds" .Values.ferry }}
      terminationGracePeriodSeconds: {{ add 10 $budget }}
      {{- with include "ferry.initContainers" .Values.ferry | trim }}
      initContainers: {{- . | nindent 8 }}
      {{- end }}
      containers:
        - name: shop
          image: shop:1.0.0
          env: {{- include "ferry.appEnv" .Values.ferry | nindent 12 }}
          {{- with include "ferry.appVolumeMounts" .Values.ferry | trim }}
          volumeMounts: {{- . | nindent 12 }}
          {{- end }}
        {{- with include "ferry.containers" .Values.ferry | trim }}
        {{- . | nindent 8 }}
        {{- end }}
      volumes: {{- include "ferry.volumes" .Values.ferry | trim | nindent 8 }}
"""


@pytest.fixture(scope="module")
def parent_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chart of its own with this one in charts/ (as `helm dependency build` leaves it)."""
    root = tmp_path_factory.mktemp("parent") / "shop"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": "shop", "version": "1.0.0"})
    )
    (root / "values.yaml").write_text(yaml.safe_dump({"ferry": {"app": {"enabled": False}}}))
    (root / "templates" / "deployment.yaml").write_text(PARENT_TEMPLATE)
    shutil.copytree(CHART_DIR, root / "charts" / "ferry", ignore=shutil.ignore_patterns("ci"))
    return root


@pytest.mark.parametrize(
    "ferry_values",
    [
        {"kafka": {"bootstrap": "kafka.shop:9092"}},
        {"nativeSidecar": False, "listen": {"mode": "unix"}},
        {"tls": {"secretName": "t", "serverName": "ferry.shop"}, "config": {"log_level": "debug"}},
    ],
    ids=["native", "classic-unix", "tls"],
)
def test_parent_chart_gets_the_same_ferry_container(
    chart: Chart, parent_chart: Path, ferry_values: dict[str, Any]
) -> None:
    parent = Chart(chart.helm, parent_chart)
    rendered = parent.render(values={"ferry": {"app": {"enabled": False}, **ferry_values}})
    [deployment] = [m for m in rendered if m["metadata"]["name"] == "shop"]
    spec = pod_spec([deployment])
    own = pod_spec(chart.render(values=ferry_values))
    assert ferry_container(spec) == ferry_container(own)
    native = ferry_values.get("nativeSidecar", True)
    assert [c["name"] for c in spec.get("initContainers", [])] == (["ferry"] if native else [])
    app = spec["containers"][0]
    assert env_values(app)["FERRY_ADDR"] == env_values(own["containers"][0])["FERRY_ADDR"]
    assert volume(spec, "ferry-wal") == volume(own, "ferry-wal")
    assert app.get("volumeMounts", []) == own["containers"][0].get("volumeMounts", [])
    budget = int(env_values(ferry_container(spec))["FERRY_DRAIN_GRACE_S"]) + 16
    assert spec["terminationGracePeriodSeconds"] == budget + 10


def test_parent_chart_with_app_disabled_renders_no_workload_of_this_chart(
    chart: Chart, parent_chart: Path
) -> None:
    rendered = Chart(chart.helm, parent_chart).render()
    assert [m["metadata"]["name"] for m in rendered] == ["shop"]
    assert workload(rendered)["metadata"]["name"] == "shop"
