"""The chart lints, renders with its defaults and with every toggle (helm/ferry/ci/*-values.yaml),
and every rendered object is valid against the Kubernetes schemas of the oldest version the chart
supports (1.29, native sidecars) and of the newest that kubernetes-validate ships, offline and
strict (an unknown field is an error). The prometheus-operator objects, which those schemas do
not cover, are checked by tests/chart/test_monitoring.py."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest

from testkit.chart import CHART_DIR, Chart, Manifest, ci_values_files, pod_spec, workload

#: The chart's kubeVersion floor (native sidecars) and the newest schemas available offline.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
#: Objects of prometheus-operator's CRDs: no schema in kubernetes-validate.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
TOGGLES = [None, *ci_values_files()]


def _id(toggle: Path | None) -> str:
    return "defaults" if toggle is None else toggle.name.removesuffix("-values.yaml")


def _render(chart: Chart, toggle: Path | None) -> list[Manifest]:
    return chart.render([] if toggle is None else [toggle])


def _validate(manifest: Manifest, version: str) -> None:
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as invalid:
        path = ".".join(str(p) for p in invalid.path)
        raise AssertionError(
            f"{manifest['kind']}/{manifest['metadata']['name']} is invalid for Kubernetes "
            f"{version} at {path}: {invalid.message}"
        ) from None


@pytest.mark.parametrize("toggle", TOGGLES, ids=_id)
def test_helm_lint_strict(helm: Path, toggle: Path | None) -> None:
    command = [str(helm), "lint", "--strict", str(CHART_DIR)]
    if toggle is not None:
        command += ["--values", str(toggle)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("toggle", TOGGLES, ids=_id)
def test_every_rendered_object_is_valid_kubernetes(chart: Chart, toggle: Path | None) -> None:
    manifests = _render(chart, toggle)
    assert manifests, "nothing rendered"
    for manifest in manifests:
        if manifest["kind"] in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            _validate(manifest, version)


@pytest.mark.parametrize("toggle", TOGGLES, ids=_id)
def test_every_object_is_in_the_release_namespace(chart: Chart, toggle: Path | None) -> None:
    for manifest in _render(chart, toggle):
        assert manifest["metadata"]["namespace"] == "shop", manifest["metadata"]["name"]


def test_the_validation_catches_a_misspelt_field_and_a_wrong_type(chart: Chart) -> None:
    """The schemas are strict: the checks above would see a template's mistake."""
    deployment = workload(chart.render())
    misspelt = copy.deepcopy(deployment)
    pod_spec([misspelt])["initContainers"][0]["readinesProbe"] = {"periodSeconds": 5}
    with pytest.raises(AssertionError, match="readinesProbe"):
        _validate(misspelt, KUBERNETES_VERSIONS[0])
    wrong_type = copy.deepcopy(deployment)
    pod_spec([wrong_type])["terminationGracePeriodSeconds"] = "forty"
    with pytest.raises(AssertionError, match="terminationGracePeriodSeconds"):
        _validate(wrong_type, KUBERNETES_VERSIONS[0])
