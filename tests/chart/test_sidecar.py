"""What the chart renders for Ferry's container and its pod: where the sidecar sits (native or
classic), its probes, listen address, volumes, security context, resources and grace period,
and how secrets reach it (only by reference to existing Secrets)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from testkit.chart import (
    CI_VALUES,
    Chart,
    Manifest,
    ci_values_files,
    env_entry,
    env_values,
    ferry_container,
    find,
    mount,
    pod_spec,
    volume,
    workload,
)
from testkit.paths import ROOT

#: Ferry exits within --drain-grace-s + this (README, Guarantees: Shutdown).
SHUTDOWN_OVERHEAD_S = 16
#: The defaults and every toggle that renders the workload (app.enabled).
WORKLOAD_TOGGLES = [
    None,
    *(path for path in ci_values_files() if path.name != "monitoring-only-values.yaml"),
]


def _toggle_id(toggle: Path | None) -> str:
    return "defaults" if toggle is None else toggle.name.removesuffix("-values.yaml")


def _dockerfile_arg(name: str) -> int:
    found = re.search(rf"^ARG {name}=(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert found, f"no ARG {name} in the Dockerfile"
    return int(found.group(1))


def _render(chart: Chart, toggle: str | None = None, **values: Any) -> list[Manifest]:
    files = [] if toggle is None else [CI_VALUES / f"{toggle}-values.yaml"]
    return chart.render(files, values)


# -- where the sidecar sits -------------------------------------------------------------------


def test_native_sidecar_is_an_init_container_that_restarts_always(chart: Chart) -> None:
    spec = pod_spec(_render(chart))
    [ferry] = spec["initContainers"]
    assert ferry["name"] == "ferry"
    assert ferry["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["app"]


def test_classic_sidecar_is_a_second_container(chart: Chart) -> None:
    spec = pod_spec(_render(chart, "classic-sidecar"))
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["app", "ferry"]
    assert "restartPolicy" not in ferry_container(spec)


# -- probes and the listen address --------------------------------------------------------------


def test_grpc_probes_on_the_listen_port_readiness_on_the_publisher(chart: Chart) -> None:
    ferry = ferry_container(pod_spec(_render(chart, listen={"port": 6000})))
    env = env_values(ferry)
    assert env["FERRY_LISTEN"] == "0.0.0.0:6000"
    assert env["FERRY_INSECURE_BIND_ALL"] == "true"
    assert {"name": "ferry-grpc", "containerPort": 6000, "protocol": "TCP"} in ferry["ports"]
    probes = {kind: ferry[f"{kind}Probe"] for kind in ("startup", "readiness", "liveness")}
    for probe in probes.values():
        assert probe["grpc"]["port"] == 6000
        assert "exec" not in probe
    assert probes["readiness"]["grpc"]["service"] == "ferry.v1.Publisher"
    assert probes["startup"]["grpc"]["service"] == ""
    assert probes["liveness"]["grpc"]["service"] == ""


def test_startup_probe_allows_minutes_to_open_a_large_log_and_liveness_is_patient(
    chart: Chart,
) -> None:
    ferry = ferry_container(pod_spec(_render(chart)))
    startup, liveness = ferry["startupProbe"], ferry["livenessProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
    for kind in ("startup", "readiness", "liveness"):
        assert ferry[f"{kind}Probe"]["timeoutSeconds"] >= 2


def test_application_dials_ferry_on_loopback(chart: Chart) -> None:
    app = pod_spec(_render(chart, listen={"port": 6000}))["containers"][0]
    assert env_values(app)["FERRY_ADDR"] == "127.0.0.1:6000"


def test_unix_socket_is_shared_with_the_application_only_and_probed_by_exec(
    chart: Chart,
) -> None:
    spec = pod_spec(_render(chart, "unix-socket"))
    ferry, app = ferry_container(spec), spec["containers"][0]
    env = env_values(ferry)
    assert env["FERRY_LISTEN"] == "unix:///run/ferry/ferry.sock"
    assert env["FERRY_LISTEN_SOCKET_MODE"] == "0660"
    assert "FERRY_INSECURE_BIND_ALL" not in env
    assert env_values(app)["FERRY_ADDR"] == "unix:///run/ferry/ferry.sock"
    assert volume(spec, "ferry-socket")["emptyDir"]["medium"] == "Memory"
    assert mount(ferry, "ferry-socket")["mountPath"] == "/run/ferry"
    assert mount(app, "ferry-socket")["mountPath"] == "/run/ferry"
    assert "ports" not in ferry, "no TCP port at all"
    for kind in ("startup", "readiness", "liveness"):
        command = ferry[f"{kind}Probe"]["exec"]["command"]
        assert command[:2] == ["python3", "-c"]
        assert command[3] == "unix:///run/ferry/ferry.sock"
    assert ferry["readinessProbe"]["exec"]["command"][4] == "ferry.v1.Publisher"


def test_tls_probes_verify_the_certificate_and_present_a_client_one(chart: Chart) -> None:
    spec = pod_spec(_render(chart, "tls"))
    ferry = ferry_container(spec)
    env = env_values(ferry)
    assert "FERRY_INSECURE_BIND_ALL" not in env, "TLS makes 0.0.0.0 allowed"
    tls_dir = mount(ferry, "ferry-tls")["mountPath"]
    assert env["FERRY_TLS_CERT"] == f"{tls_dir}/tls.crt"
    assert env["FERRY_TLS_KEY"] == f"{tls_dir}/tls.key"
    assert env["FERRY_TLS_CLIENT_CA"] == f"{tls_dir}/ca.crt"
    assert volume(spec, "ferry-tls")["secret"]["secretName"] == "ferry-server-tls"
    probe_dir = mount(ferry, "ferry-probe-tls")["mountPath"]
    assert volume(spec, "ferry-probe-tls")["secret"]["secretName"] == "ferry-probe-client-tls"
    command = ferry["readinessProbe"]["exec"]["command"]
    assert command[3:] == [
        "127.0.0.1:50051",
        "ferry.v1.Publisher",
        "2",
        f"{tls_dir}/ca.crt",
        "ferry.orders.svc",
        f"{probe_dir}/tls.crt",
        f"{probe_dir}/tls.key",
    ]


def test_exec_probe_script_is_python(chart: Chart) -> None:
    command = ferry_container(pod_spec(_render(chart, "tls")))["livenessProbe"]["exec"]["command"]
    compile(command[2], "<exec probe>", "exec")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls": {"secretName": "t"}}, "tls.serverName"),
        ({"tls": {"secretName": "t", "serverName": "f", "clientAuth": True}}, "probeClientSecret"),
        ({"tls": {"clientAuth": True, "serverName": "f"}}, "tls.clientAuth needs tls.secretName"),
        ({"listen": {"mode": "unix"}, "tls": {"secretName": "t", "serverName": "f"}}, "unix"),
        ({"policy": {"configMapName": "a", "secretName": "b"}}, "not both"),
        ({"kafka": {"sasl": {"passwordSecret": {"name": "p"}}}}, "kafka.sasl.username"),
    ],
)
def test_combinations_that_cannot_work_are_refused_by_name(
    chart: Chart, values: dict[str, Any], message: str
) -> None:
    assert message in chart.render_error(values=values)


# -- the write-ahead log's volume -------------------------------------------------------------


def test_log_defaults_to_an_emptydir_with_a_size_limit_in_a_subdirectory(chart: Chart) -> None:
    spec = pod_spec(_render(chart))
    ferry = ferry_container(spec)
    wal = volume(spec, "ferry-wal")
    assert wal["emptyDir"]["sizeLimit"] == "3Gi"
    mount_path = mount(ferry, "ferry-wal")["mountPath"]
    assert mount_path == "/var/lib/ferry"
    # Ferry refuses the volume's root (group- or world-writable): the log is a subdirectory.
    assert env_values(ferry)["FERRY_DATA_DIR"] == f"{mount_path}/wal"


def test_persistence_makes_a_statefulset_with_one_claim_per_pod(chart: Chart) -> None:
    manifests = _render(chart, "statefulset")
    statefulset = workload(manifests)
    assert statefulset["kind"] == "StatefulSet"
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "ferry-wal"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    spec = pod_spec(manifests)
    assert "ferry-wal" not in [v["name"] for v in spec.get("volumes") or []], "the claim is"
    assert mount(ferry_container(spec), "ferry-wal")["mountPath"] == "/var/lib/ferry"
    [service] = find(manifests, "Service")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"


def test_existing_claim_is_one_deployment_replica_recreated(chart: Chart) -> None:
    manifests = _render(chart, "existing-claim")
    deployment = workload(manifests)
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    claim = volume(pod_spec(manifests), "ferry-wal")["persistentVolumeClaim"]
    assert claim == {"claimName": "orders-ferry-wal"}
    error = chart.render_error([CI_VALUES / "existing-claim-values.yaml"], {"workload.replicas": 2})
    assert "one claim holds one Ferry's log" in error


# -- security ---------------------------------------------------------------------------------


@pytest.mark.parametrize("toggle", WORKLOAD_TOGGLES, ids=_toggle_id)
def test_ferry_runs_non_root_read_only_without_capabilities(
    chart: Chart, toggle: Path | None
) -> None:
    spec = pod_spec(chart.render([] if toggle is None else [toggle]))
    context = ferry_container(spec)["securityContext"]
    uid, gid = _dockerfile_arg("UID"), _dockerfile_arg("GID")
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid), "the image's user"
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["fsGroup"] == gid, "the log's volume must be writable by Ferry's group"
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        resources = container["resources"]
        assert resources["requests"]["cpu"], container["name"]
        assert resources["requests"]["memory"], container["name"]
        assert resources["limits"]["memory"], container["name"]


# -- the grace period ---------------------------------------------------------------------------


@pytest.mark.parametrize("drain_grace_s", [10, 60, 12.5])
def test_grace_period_outlasts_ferrys_shutdown_and_the_applications(
    chart: Chart, drain_grace_s: float
) -> None:
    spec = pod_spec(_render(chart, drainGraceSeconds=drain_grace_s, app={"stopSeconds": 20}))
    env = env_values(ferry_container(spec))
    assert float(env["FERRY_DRAIN_GRACE_S"]) == drain_grace_s
    budget = math.ceil(drain_grace_s) + SHUTDOWN_OVERHEAD_S
    # Native sidecars stop after the application: the pod's grace covers both in turn.
    assert spec["terminationGracePeriodSeconds"] > 20 + budget


def test_default_grace_period_is_above_kubernetes_default_of_30_s(chart: Chart) -> None:
    """Ferry's own budget at the default drain grace is 26 s; the application's comes on top."""
    assert pod_spec(_render(chart))["terminationGracePeriodSeconds"] > 30


def test_a_grace_period_below_ferrys_budget_is_refused(chart: Chart) -> None:
    error = chart.render_error(values={"workload.terminationGracePeriodSeconds": 26})
    assert "not above Ferry's shutdown budget of 26 s" in error
    spec = pod_spec(_render(chart, workload={"terminationGracePeriodSeconds": 90}))
    assert spec["terminationGracePeriodSeconds"] == 90


# -- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("toggle", [None, *ci_values_files()], ids=_toggle_id)
def test_the_chart_never_renders_a_secret_or_mounts_with_subpath(
    chart: Chart, toggle: Path | None
) -> None:
    manifests = chart.render([] if toggle is None else [toggle])
    assert not find(manifests, "Secret"), "secrets come from existing Secrets only"
    for manifest in find(manifests, "Deployment") + find(manifests, "StatefulSet"):
        spec = pod_spec([manifest])
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            for volume_mount in container.get("volumeMounts", []):
                # The kubelet never updates a subPath mount: rotations would not arrive.
                assert "subPath" not in volume_mount, volume_mount


def test_tokens_come_from_a_secret_key_ref_and_token_files_are_mounted(chart: Chart) -> None:
    spec = pod_spec(_render(chart, "secrets"))
    ferry = ferry_container(spec)
    tokens = env_entry(ferry, "FERRY_TOKENS")
    assert "value" not in tokens
    assert tokens["valueFrom"] == {"secretKeyRef": {"name": "ferry-tokens", "key": "tokens"}}
    files = env_values(ferry)["FERRY_TOKEN_FILE"].split(",")
    expected = [("orders-tokens", "tokens"), ("billing-tokens", "current")]
    assert len(files) == len(expected)
    for index, (path, (secret, key)) in enumerate(zip(files, expected, strict=True)):
        name = f"ferry-tokens-{index}"
        assert path == f"{mount(ferry, name)['mountPath']}/{key}"
        assert mount(ferry, name)["readOnly"] is True
        assert volume(spec, name)["secret"]["secretName"] == secret


#: Each Kafka secret file setting -> (its volume, the Secret, the key) in ci/secrets-values.yaml.
KAFKA_FILES = {
    "FERRY_KAFKA_SASL_PASSWORD_FILE": ("ferry-kafka-sasl", "ferry-kafka-sasl", "password"),
    "FERRY_KAFKA_SSL_CA": ("ferry-kafka-ca", "kafka-ca", "ca.crt"),
    "FERRY_KAFKA_SSL_CERT": ("ferry-kafka-client", "ferry-kafka-client", "tls.crt"),
    "FERRY_KAFKA_SSL_KEY": ("ferry-kafka-client", "ferry-kafka-client", "tls.key"),
    "FERRY_KAFKA_SSL_KEY_PASSWORD_FILE": (
        "ferry-kafka-key-password",
        "ferry-kafka-key-password",
        "password",
    ),
}


def test_kafka_credentials_and_tls_files_are_mounted_from_existing_secrets(
    chart: Chart,
) -> None:
    spec = pod_spec(_render(chart, "secrets"))
    ferry = ferry_container(spec)
    env = env_values(ferry)
    assert env["FERRY_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["FERRY_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["FERRY_KAFKA_SASL_USERNAME"] == "orders-service"
    assert env["FERRY_KAFKA_SSL_VERIFY"] == "false"
    for variable, (volume_name, secret, key) in KAFKA_FILES.items():
        directory = mount(ferry, volume_name)
        assert directory["readOnly"] is True
        assert env[variable] == f"{directory['mountPath']}/{key}", variable
        secret_volume = volume(spec, volume_name)["secret"]
        assert secret_volume["secretName"] == secret
        # Owner root, group fsGroup: readable by Ferry through its group, by nobody else.
        assert secret_volume["defaultMode"] == 0o440


def test_oauth_client_secret_is_a_mounted_file(chart: Chart) -> None:
    spec = pod_spec(_render(chart, "oauth"))
    ferry = ferry_container(spec)
    env = env_values(ferry)
    directory = mount(ferry, "ferry-kafka-oauth")["mountPath"]
    assert env["FERRY_KAFKA_OAUTH_CLIENT_SECRET_FILE"] == f"{directory}/client-secret"
    assert volume(spec, "ferry-kafka-oauth")["secret"]["secretName"] == "ferry-kafka-oauth"
    assert env["FERRY_KAFKA_OAUTH_CLIENT_ID"] == "orders-service"
    assert env["FERRY_POLICY_FILE"] == f"{mount(ferry, 'ferry-policy')['mountPath']}/policy.yaml"
    assert volume(spec, "ferry-policy")["secret"]["secretName"] == "ferry-policy"


def test_no_secret_value_can_be_given_inline(chart: Chart) -> None:
    """tokens is not a config setting, and no value takes a password."""
    assert "tokens" in chart.render_error(values={"config.tokens": "x" * 20})
    assert "password" in chart.render_error(values={"kafka.sasl.password": "hunter2hunter2"})


# -- what reaches Ferry's port ------------------------------------------------------------------


def test_services_never_expose_ferrys_port(chart: Chart) -> None:
    manifests = _render(chart, "monitoring")
    grpc_port = ferry_container(pod_spec(manifests))["ports"][0]
    assert grpc_port["name"] == "ferry-grpc"
    for service in find(manifests, "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] != "ferry-grpc"
            assert port["port"] != grpc_port["containerPort"]


def test_network_policy_opens_the_application_and_metrics_ports_only(chart: Chart) -> None:
    manifests = _render(chart, "monitoring")
    [policy] = find(manifests, "NetworkPolicy")
    pod_labels = workload(manifests)["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    opened = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert sorted(opened) == [8080, 9464]
    [metrics_rule] = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 9464]
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


def test_notes_name_the_grpcurl_and_status_commands_and_warn_of_an_open_port(
    chart: Chart,
) -> None:
    notes = chart.notes()
    assert "grpcurl -plaintext 127.0.0.1:50051 grpc.health.v1.Health/Check" in notes
    assert "ferry status" in notes
    assert "ferry status --json" in notes
    assert "WARNING" in notes
    assert "WARNING" not in chart.notes(values={"networkPolicy.enabled": True})
    unix = chart.notes([CI_VALUES / "unix-socket-values.yaml"])
    assert "grpcurl -plaintext -unix /run/ferry/ferry.sock" in unix
