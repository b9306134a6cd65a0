"""`ferry status`: where it connects (from serve's own variables), the token it sends, and the
tables it prints."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sidecar._gen.ferry.v1 import admin_pb2 as pb
from sidecar.status_cli import add_arguments, dial_address, render, target_of


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("0.0.0.0:50051", "127.0.0.1:50051"),
        ("[::]:50051", "[::1]:50051"),
        ("unix:///run/ferry/ferry.sock", "unix:///run/ferry/ferry.sock"),
    ],
)
def test_a_listen_address_is_dialled_on_loopback(listen: str, address: str) -> None:
    assert dial_address(listen) == address


def test_serve_s_variables_say_where_and_how(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cert = tmp_path / "server.pem"
    monkeypatch.setenv("FERRY_LISTEN", "0.0.0.0:6000")
    monkeypatch.setenv("FERRY_TLS_CERT", str(cert))
    target = target_of(parse(), tokens_env="first-token-0123456789,second-token-0123456789")
    assert target.address == "127.0.0.1:6000"
    assert target.tls_ca == cert  # the server's own chain is trusted unless --tls-ca says
    assert target.token == "first-token-0123456789"


def test_a_token_file_s_first_token(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# operators\n\nop-token-0123456789\nother\n")
    args = parse("--token-file", f"{tokens},{tmp_path / 'unused'}")
    assert target_of(args, tokens_env="env-token").token == "op-token-0123456789"
    with pytest.raises(ValueError, match="cannot read"):
        target_of(parse("--token-file", str(tmp_path / "missing")))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="holds no token"):
        target_of(parse("--token-file", str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="--listen"):
        target_of(parse("--listen", "nowhere"))


def test_the_tables() -> None:
    status = pb.GetStatusResponse(version="0.1.0", build="CPython 3.11.2", draining=False)
    status.uptime.FromSeconds(3723)
    status.forwarder.kafka_reachable = False
    status.forwarder.in_flight_events = 3
    status.log.pending_events = 1200
    status.log.pending_bytes = 2048
    status.log.oldest_pending_age.FromSeconds(95)
    status.log.max_events = 5_000_000
    status.log.max_bytes = 1 << 30
    status.log.cap_used = 0.25
    status.disk.free_bytes = 3 << 30
    status.disk.reserve_bytes = 8 << 20
    topic = status.topics.add(topic="orders", pending_events=1200, pending_bytes=2048)
    topic.backing_off, topic.failures = True, 4
    topic.retry_in.FromSeconds(8)
    topic.last_error = "KafkaError{code=_TRANSPORT}"
    sub = status.subscriptions.add(name="audit", topics=["orders"], streams=0, paused=True)
    sub.committed_lag = 17
    text = render(status)
    lines = text.splitlines()
    assert lines[0] == "Ferry 0.1.0 (CPython 3.11.2), serving, up 1h02m03s"
    assert "Kafka:  UNREACHABLE; 3 events in flight" in text
    assert "1200 events pending (2.0 KiB), oldest 1m35s; 25.0% of the cap" in text
    assert "reserve 8.0 MiB RELEASED (disk full: publishes refused)" in text
    [orders] = [line for line in lines if line.startswith("orders ")]
    assert "BACKING OFF (4 failures, retry in 8.0s)" in orders
    assert orders.endswith("KafkaError{code=_TRANSPORT}")
    [audit] = [line for line in lines if line.startswith("audit ")]
    assert audit.split()[:6] == ["audit", "orders", "0", "0", "0", "17"]
    assert audit.endswith("lingering, PAUSED (holds its limit)")
    empty = render(pb.GetStatusResponse())
    assert "(no topics)" in empty
    assert "(no subscriptions)" in empty
    assert "reserve disabled" in empty
    assert "oldest -" in empty
