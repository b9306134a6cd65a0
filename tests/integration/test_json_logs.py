"""Every line Ferry writes is JSON, also while Kafka is unreachable and a client sends garbage.

Kafka is a loopback port where nothing listens: librdkafka's producer and a subscription's
consumer fail to connect several times a second for ~10 s. Their failures must show up (as
JSON, rate-limited to a few lines), a malformed request must be logged as JSON (whatever
status it gets), and a collector reading Ferry's stdout and stderr must be able to parse
every line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from sidecar._gen.ferry.v1 import subscriber_pb2 as spb
from testkit.ferry_process import FerryProcess
from testkit.ports import free_port
from testkit.stream_client import open_stream

UNREACHABLE_FOR_S = 10.0


def _connection_failures(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if e.get("event") in {"librdkafka", "kafka_error"}
        and "Connection refused" in str(e.get("message") or e.get("error"))
    ]


def test_every_line_is_json_while_kafka_is_unreachable(data_dir: Path) -> None:
    ferry = FerryProcess(data_dir, f"127.0.0.1:{free_port()}").start()
    started = time.monotonic()
    try:
        garbage = ferry.channel().unary_unary(
            "/ferry.v1.Publisher/Publish", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as refused:
            garbage(b"\xff\xff\xff", timeout=10)
        print(f"\nmalformed request answered {refused.value.code()}")
        stream = open_stream(
            ferry, spb.OpenSubscription(subscription="json-logs", topics=["json-logs"]), 10
        )
        time.sleep(max(0.0, UNREACHABLE_FOR_S - (time.monotonic() - started)))
        stream.cancel()
    finally:
        code = ferry.terminate()
    assert code == 0, ferry.log_tail()

    lines = ferry.log_path.read_text(errors="replace").splitlines()
    not_json = []
    entries: list[dict[str, Any]] = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            not_json.append(line)
    assert not_json == [], f"{len(not_json)} of {len(lines)} lines are not JSON"
    assert all(isinstance(e, dict) and "event" in e and "level" in e for e in entries)

    failures = _connection_failures(entries)
    clients = {(e.get("client"), e.get("group")) for e in failures}
    print(f"{len(lines)} lines, {len(failures)} of them connection failures")
    assert ("producer", None) in clients, "the producer's failure was never logged"
    assert ("consumer", "ferry.json-logs") in clients, "the consumer's failure was never logged"
    assert len(failures) <= 5, "\n".join(map(json.dumps, failures))
    assert all(e.get("fac") == "FAIL" for e in failures if e["event"] == "librdkafka")
    # The malformed request's traceback (if it gets one) is one JSON line, logged once.
    assert sum("DecodeError" in json.dumps(e) for e in entries) <= 1
