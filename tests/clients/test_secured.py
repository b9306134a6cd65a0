"""The clients that speak TLS and tokens against a Ferry that requires mutual TLS and a bearer
token: each one's example publisher and subscriber, configured by the FERRY_TLS_* and
FERRY_TOKEN_FILE variables (Go: ferry.WithEnvCredentials; Java: FerryClient.fromEnv; Python:
Credentials.from_env; Rust: Credentials::from_env; TypeScript: credentialsFromEnv), publish
and receive an event; without the token the publish is refused UNAUTHENTICATED, and (Go)
without the client certificate the handshake fails; nothing of the refused runs reaches Kafka,
and no secret reaches Ferry's debug log."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from pathlib import Path

import pytest

from testkit.certs import CertificateAuthority
from testkit.client_access import ClientAccess
from testkit.ferry_process import FerryProcess
from testkit.kafka_read import read_topic
from testkit.log_secrets import SecretLog
from testkit.paths import ROOT
from testkit.subscribe_calls import unique_subscription
from testkit.waiting import wait_for
from tests.conftest import KafkaHandle

RUN_TIMEOUT_S = 300  # a first run builds the examples
#: What each client's example publisher writes to stderr when Ferry refuses its call for
#: want of a token.
UNAUTHENTICATED = {
    "go": "Unauthenticated",
    "java": "UNAUTHENTICATED",
    "python": "UNAUTHENTICATED",
    "rust": "UNAUTHENTICATED",
    "ts": "UNAUTHENTICATED",
}


def _ci(lang: str) -> str:
    return str(ROOT / "clients" / lang / "ci.sh")


def _run(lang: str, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_ci(lang), command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize("lang", sorted(UNAUTHENTICATED))
def test_client_with_mutual_tls_and_a_token(
    lang: str, kafka: KafkaHandle, tmp_path: Path, secret_log: SecretLog
) -> None:
    ca = CertificateAuthority.create("Ferry Test CA")
    server, client = ca.issue_server(), ca.issue_client("orders-service")
    token = secrets.token_urlsafe(32)
    secret_log.add(token)
    secret_log.add_pem_key(server.key_pem)
    secret_log.add_pem_key(client.key_pem)
    tls = tmp_path / "tls"
    server_cert, server_key = server.write(tls, "server")
    client_cert, client_key = client.write(tls, "client")
    ca_file = ca.write(tls)
    token_file = tmp_path / "token"
    token_file.write_text(f"# the orders service\n{token}\n")
    ferry = FerryProcess(
        tmp_path / "wal", kafka.bootstrap,
        "--tls-cert", str(server_cert), "--tls-key", str(server_key),
        "--tls-client-ca", str(ca_file), "--token-file", str(token_file),
        access=ClientAccess(root_ca=ca.cert_pem, client=client, token=token),
    )  # fmt: skip
    secret_log.watch(ferry)
    topic = kafka.topic(f"{lang}-mtls", partitions=1)
    env = {
        "FERRY_ADDR": ferry.address,
        "TOPIC": topic,
        "FERRY_TLS_CA": str(ca_file),
        "FERRY_TLS_CLIENT_CERT": str(client_cert),
        "FERRY_TLS_CLIENT_KEY": str(client_key),
        "FERRY_TOKEN_FILE": str(token_file),
    }
    try:
        ferry.start()
        published = _run(lang, "run-publisher", {**env, "COUNT": "1", "ID_PREFIX": topic})
        assert published.returncode == 0, published.stderr[-4000:]
        assert json.loads(published.stdout) == {"published": 1}
        subscription = unique_subscription(f"{lang}-mtls")
        received = _run(
            lang,
            "run-subscriber",
            {**env, "SUBSCRIPTION": subscription, "EXPECT": "1", "TIMEOUT_S": "120"},
        )
        assert received.returncode == 0, received.stderr[-4000:]
        assert json.loads(received.stdout) == {"received": 1}

        no_token = {k: v for k, v in env.items() if k != "FERRY_TOKEN_FILE"}
        refused = _run(lang, "run-publisher", {**no_token, "COUNT": "1", "ID_PREFIX": "no-token"})
        assert refused.returncode == 1, refused.stderr[-4000:]
        assert UNAUTHENTICATED[lang] in refused.stderr, refused.stderr[-4000:]

        if lang == "go":  # the log lines it reads are the Go subscriber's
            no_cert = {k: v for k, v in env.items() if "CLIENT" not in k}
            _assert_handshake_refused(no_cert, tmp_path / "no-cert.log")
    finally:
        ferry.kill()
    [record] = read_topic(kafka.bootstrap, topic, expect=1, quiet=1)
    assert record.event_id == f"{topic}-0"


def _assert_handshake_refused(env: dict[str, str], log: Path) -> None:
    """A subscriber without a client certificate: Ferry ends every connection at the TLS
    handshake (with TLS 1.3 the client sees a reset or a broken pipe), so the subscriber
    reconnects, logging UNAVAILABLE, until it is stopped, and receives nothing."""
    settings = {"SUBSCRIPTION": unique_subscription("no-cert"), "EXPECT": "1", "TIMEOUT_S": "120"}
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [_ci("go"), "run-subscriber"],
            env={**os.environ, **env, **settings},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            wait_for(
                lambda: log.read_text().count("subscribe stream ended, reconnecting") >= 2,
                RUN_TIMEOUT_S,
                what="two refused connection attempts",
            )
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 1, text[-4000:]
    assert out == ""
    assert "code=Unavailable" in text, text[-4000:]
    assert 'msg="subscriber stopped short" received=0' in text, text[-4000:]
