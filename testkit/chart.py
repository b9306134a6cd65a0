"""Ferry's Helm chart (helm/ferry) rendered with `helm template`, for the chart's tests and the
test that runs the rendered Ferry container in the built image.

    chart = Chart(helm_binary)
    manifests = chart.render(values_files=[CI / "tls-values.yaml"], values={"listen.port": 6000})
    ferry = ferry_container(pod_spec(manifests))
    chart.render_error(values={"config.listen": "x"})   # the message helm stops with
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from testkit.paths import ROOT

CHART_DIR = ROOT / "helm" / "ferry"
#: The values files of each toggle the chart is rendered, validated and scanned with.
CI_VALUES = CHART_DIR / "ci"
RELEASE = "orders"
NAMESPACE = "shop"
#: The name of Ferry's container in every rendered pod.
FERRY = "ferry"

Manifest = dict[str, Any]


class RenderError(Exception):
    """`helm template` refused the values; the message is helm's."""


class Chart:
    """`helm template` of the chart with the `helm` binary at `helm`."""

    def __init__(self, helm: Path, chart_dir: Path = CHART_DIR) -> None:
        self.helm = helm
        self.chart_dir = chart_dir

    def command(
        self, values_files: Iterable[Path] = (), values: Mapping[str, Any] | None = None
    ) -> list[str]:
        command = [str(self.helm), "template", RELEASE, str(self.chart_dir)]
        command += ["--namespace", NAMESPACE]
        for path in values_files:
            command += ["--values", str(path)]
        for key, value in (values or {}).items():
            command += ["--set-json", f"{key}={json.dumps(value)}"]
        return command

    def render_text(
        self, values_files: Iterable[Path] = (), values: Mapping[str, Any] | None = None
    ) -> str:
        """The rendered manifests as helm prints them; RenderError if helm refuses."""
        done = subprocess.run(
            self.command(values_files, values), capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RenderError(done.stderr.strip())
        return done.stdout

    def render(
        self, values_files: Iterable[Path] = (), values: Mapping[str, Any] | None = None
    ) -> list[Manifest]:
        """The rendered objects; `values` are `--set-json` paths ("listen.port": 6000)."""
        text = self.render_text(values_files, values)
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def render_error(
        self, values_files: Iterable[Path] = (), values: Mapping[str, Any] | None = None
    ) -> str:
        """helm's message for values it must refuse; AssertionError if it renders them."""
        try:
            self.render_text(values_files, values)
        except RenderError as refused:
            return str(refused)
        raise AssertionError(f"helm rendered values it should refuse: {values}")

    def notes(
        self, values_files: Iterable[Path] = (), values: Mapping[str, Any] | None = None
    ) -> str:
        """NOTES.txt as rendered for these values: `helm install --dry-run=client` prints it
        after the manifests, without a cluster (`helm template` leaves it out)."""
        command = self.command(values_files, values)
        command[1] = "install"
        command.append("--dry-run=client")
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
        _, found, notes = done.stdout.partition("NOTES:\n")
        assert found, f"no NOTES in helm install --dry-run:\n{done.stdout[-2000:]}"
        return notes


def ci_values_files() -> list[Path]:
    """Every toggle's values file (helm/ferry/ci/*-values.yaml)."""
    return sorted(CI_VALUES.glob("*-values.yaml"))


def find(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: Iterable[Manifest], kind: str) -> Manifest:
    [found] = find(manifests, kind)
    return found


def workload(manifests: Iterable[Manifest]) -> Manifest:
    """The Deployment or StatefulSet."""
    [found] = [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]
    return found


def pod_spec(manifests: Iterable[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = workload(manifests)["spec"]["template"]["spec"]
    return spec


def ferry_container(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Ferry's container, wherever it is (initContainers when native, containers when not)."""
    found: list[dict[str, Any]] = [
        c
        for key in ("initContainers", "containers")
        for c in spec.get(key) or []
        if c["name"] == FERRY
    ]
    assert len(found) == 1, f"expected one {FERRY} container, found {len(found)}"
    return found[0]


def env_values(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's plain environment (`value` entries; `valueFrom` ones are left out)."""
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def env_entry(container: Mapping[str, Any], name: str) -> dict[str, Any]:
    [entry] = [e for e in container.get("env") or [] if e["name"] == name]
    return dict(entry)


def volume(spec: Mapping[str, Any], name: str) -> dict[str, Any]:
    [found] = [v for v in spec.get("volumes") or [] if v["name"] == name]
    return dict(found)


def mount(container: Mapping[str, Any], name: str) -> dict[str, Any]:
    [found] = [m for m in container.get("volumeMounts") or [] if m["name"] == name]
    return dict(found)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
