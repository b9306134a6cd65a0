"""grpc.health.v1: Ferry serves without Kafka; "ferry.kafka" tells whether Kafka is reachable."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from testkit.ferry_process import FerryProcess
from testkit.kafka_restore import ensure_running, kafka_restored
from testkit.publishing import FAST_RETRY, event, publish
from testkit.waiting import wait_for
from tests.conftest import KafkaHandle

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _status(ferry: FerryProcess, service: str) -> int:
    reply = ferry.health().Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


def test_health_follows_kafka_reachability(kafka: KafkaHandle, data_dir: Path) -> None:
    cluster = kafka.require_control()
    topic = kafka.topic("health", partitions=1)
    with kafka_restored(cluster):
        ferry = FerryProcess(data_dir, kafka.bootstrap, *FAST_RETRY).start()
        try:
            assert _status(ferry, "") == SERVING
            assert _status(ferry, "ferry.v1.Publisher") == SERVING
            with pytest.raises(grpc.RpcError) as info:
                _status(ferry, "ferry.v1.NoSuchService")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            wait_for(lambda: _status(ferry, "ferry.kafka") == SERVING, 20, 0.2, "kafka SERVING")

            cluster.stop()
            wait_for(lambda: _status(ferry, "ferry.kafka") == NOT_SERVING, 30, 0.2, "NOT_SERVING")
            # Ferry itself keeps serving: publishing works without Kafka.
            assert _status(ferry, "") == SERVING
            assert _status(ferry, "ferry.v1.Publisher") == SERVING
            publish(ferry.publisher(), event(topic, "while-down"))

            ensure_running(cluster)
            wait_for(lambda: _status(ferry, "ferry.kafka") == SERVING, 30, 0.2, "SERVING again")
            ferry.wait_drained(30)
            assert ferry.terminate() == 0
        finally:
            ferry.kill()
