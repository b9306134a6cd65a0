"""One topic cannot stop the others: its share of the log's cap, and records Kafka refuses for
good parked (counted, logged, released by an operator) instead of blocking their key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from testkit.delivery import Delivery
from testkit.ferry_process import FerryProcess, running_ferry
from testkit.grpc_errors import error_reason, retry_delay_s
from testkit.kafka_admin import create_topic, unique_topic
from testkit.kafka_read import read_topic
from testkit.publishing import FAST_RETRY, event, publish
from testkit.waiting import wait_for
from testkit.wal_files import last_sequence
from tests.conftest import KafkaHandle

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_topic_fills_only_its_share(kafka: KafkaHandle, data_dir: Path) -> None:
    flowing = kafka.topic("share-ok", partitions=1)
    missing = unique_topic("share-missing")
    flags = ("--wal-max-rows", "20", "--wal-topic-share", "0.5", *FAST_RETRY)
    with running_ferry(data_dir, kafka.bootstrap, *flags) as ferry:
        stub = ferry.publisher()
        held = {f"held-{i}": event(missing, f"held-{i}", key=b"k") for i in range(10)}
        for ev in held.values():
            publish(stub, ev)
        seq = last_sequence(ferry.data_dir)
        with pytest.raises(grpc.RpcError) as info:
            publish(stub, event(missing, "one-too-many"))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(info.value) == "TOPIC_SHARE_FULL"
        assert (retry_delay_s(info.value) or 0) > 0
        assert repr(missing) in (info.value.details() or "")
        assert last_sequence(ferry.data_dir) == seq
        # The other topic keeps flowing, well past what the missing one holds.
        arrived = {}
        for i in range(30):
            ev = event(flowing, f"ok-{i}")
            reply = publish(stub, ev, ack_level=pb.ACK_LEVEL_KAFKA, timeout=20)
            assert reply.result.HasField("kafka_position")
            arrived[ev.event_id] = ev
        create_topic(kafka.bootstrap, missing, partitions=1)
        ferry.wait_drained(60)
        publish(stub, event(missing, "after-the-topic-exists"))
        ferry.wait_drained(30)
    Delivery(read_topic(kafka.bootstrap, flowing, expect=30, quiet=1)).assert_contents(arrived)
    got = [r.event_id for r in read_topic(kafka.bootstrap, missing, expect=11, quiet=1)]
    assert got == [*held, "after-the-topic-exists"]


def ferry_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def set_max_message_bytes(bootstrap: str, topic: str, value: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entry = ConfigEntry(
        "max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource("topic", topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def test_a_record_the_topic_refuses_is_parked_and_released(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    """The topic takes at most 2,000 bytes a batch: a 5,000-byte record is refused for good.
    Its key's later records pass it; it waits, counted and logged, until an operator raises the
    limit and releases it."""
    topic = unique_topic("parked")
    create_topic(kafka.bootstrap, topic, 1, config={"max.message.bytes": "2000"})
    small = [event(topic, f"small-{i}", key=b"k", payload=b"s" * 100) for i in range(12)]
    big = event(topic, "big", key=b"k", payload=os.urandom(5000))  # lz4 cannot shrink it
    ferry = FerryProcess(data_dir, kafka.bootstrap, *FAST_RETRY).start()
    try:
        stub = ferry.publisher()
        for ev in [*small[:6], big, *small[6:]]:
            publish(stub, ev)
        wait_for(lambda: ferry.pending_rows() == 0, 60, what="every row delivered or parked")
        assert ferry.terminate() == 0
    finally:
        ferry.kill()
    log = ferry.log_path.read_text()
    assert '"event_parked"' in log
    assert '"big"' in log
    got = [r.event_id for r in read_topic(kafka.bootstrap, topic, expect=12, quiet=1)]
    assert got == [ev.event_id for ev in small], "the small records pass the refused one"

    listed = ferry_cli("parked", "list", "--data-dir", str(data_dir))
    assert listed.returncode == 0, listed.stderr
    assert "big" in listed.stdout
    assert "1 parked events" in listed.stdout

    set_max_message_bytes(kafka.bootstrap, topic, 1_000_000)
    released = ferry_cli("parked", "release", "--data-dir", str(data_dir), "--topic", topic)
    assert released.returncode == 0, released.stderr
    assert "1 parked events released" in released.stdout
    with running_ferry(data_dir, kafka.bootstrap) as again:
        again.wait_drained(60)
        # A publish of the parked id before its release would have been a duplicate.
        assert publish(again.publisher(), big).result.duplicate
    records = read_topic(kafka.bootstrap, topic, expect=13, quiet=1)
    assert [r.event_id for r in records][-1] == "big"
    assert records[-1].value == big.payload
    assert (
        ferry_cli("parked", "list", "--data-dir", str(data_dir))
        .stdout.strip()
        .endswith("0 parked events")
    )


def test_parked_commands_refuse_while_ferry_runs(kafka: KafkaHandle, data_dir: Path) -> None:
    with running_ferry(data_dir, kafka.bootstrap):
        result = ferry_cli("parked", "release", "--data-dir", str(data_dir))
    assert result.returncode == 2
    assert "stop Ferry first" in result.stderr
