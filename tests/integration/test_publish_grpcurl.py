"""A client with no generated code: grpcurl, through server reflection and JSON."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from testkit.ferry_process import FerryProcess, running_ferry
from testkit.kafka_read import read_topic
from tests.conftest import KafkaHandle


def _grpcurl(
    binary: Path, ferry: FerryProcess, *args: str, data: object = None
) -> subprocess.CompletedProcess[str]:
    command = [str(binary), "-plaintext"]
    if data is not None:
        command += ["-d", "@"]
    command += [ferry.address, *args]
    return subprocess.run(
        command,
        input=None if data is None else json.dumps(data),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_grpcurl_lists_services_and_publishes_json(
    grpcurl: Path, kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("grpcurl", partitions=3)
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        listed = _grpcurl(grpcurl, ferry, "list")
        assert listed.returncode == 0, listed.stderr
        services = set(listed.stdout.split())
        assert "ferry.v1.Publisher" in services
        assert "grpc.health.v1.Health" in services
        assert services & {
            "grpc.reflection.v1alpha.ServerReflection",
            "grpc.reflection.v1.ServerReflection",
        }, services

        described = _grpcurl(grpcurl, ferry, "describe", "ferry.v1.Publisher")
        assert described.returncode == 0, described.stderr
        assert "rpc Publish" in described.stdout
        assert "rpc PublishBatch" in described.stdout

        health = _grpcurl(grpcurl, ferry, "grpc.health.v1.Health/Check", data={})
        assert health.returncode == 0, health.stderr
        assert json.loads(health.stdout)["status"] == "SERVING"

        request = {
            "event": {
                "topic": topic,
                "key": base64.b64encode(b"user-42").decode(),
                "payload": base64.b64encode(b'{"hello": "world"}').decode(),
                "headers": [
                    {"key": "content-type", "value": base64.b64encode(b"application/json").decode()}
                ],
                "eventId": "grpcurl-1",
            },
            "ackLevel": "ACK_LEVEL_KAFKA",
            "kafkaWait": "10s",
        }
        published = _grpcurl(grpcurl, ferry, "ferry.v1.Publisher/Publish", data=request)
        assert published.returncode == 0, published.stderr
        result = json.loads(published.stdout)["result"]
        assert result["event_id"] == "grpcurl-1"
        position = result["kafka_position"]

        bad = dict(request, event=dict(request["event"], topic="bad topic"))
        refused = _grpcurl(grpcurl, ferry, "ferry.v1.Publisher/Publish", data=bad)
        assert refused.returncode != 0
        assert "InvalidArgument" in refused.stderr
        assert "event.topic" in refused.stderr

    [record] = read_topic(kafka.bootstrap, topic, expect=1, quiet=1)
    assert record.event_id == "grpcurl-1"
    assert record.key == b"user-42"
    assert record.value == b'{"hello": "world"}'
    assert record.headers["content-type"] == b"application/json"
    assert record.partition == position.get("partition", 0)  # proto3 JSON omits zeros
    assert record.offset == int(position.get("offset", 0))
