"""The forwarder runs in a process of its own, which Ferry supervises: a forwarder process that
crashes or is killed is started again while Ferry keeps serving, and nothing logged is lost;
a forwarder process whose Ferry was killed exits by itself."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from grpc_health.v1 import health_pb2

from sidecar._gen.ferry.v1 import publisher_pb2 as ppb
from sidecar.failpoints import ENV as FAILPOINTS_ENV
from sidecar.lifecycle import EXIT_INTERNAL_ERROR
from testkit.ferry_log import json_entries
from testkit.ferry_process import FerryProcess
from testkit.kafka_read import read_topic
from testkit.metrics import Scrape
from testkit.publishing import event
from testkit.waiting import wait_until
from tests.conftest import KafkaHandle


def _publish(ferry: FerryProcess, topic: str, prefix: str, count: int) -> set[str]:
    events = [event(topic, f"{prefix}-{i:03d}", key=f"k{i % 7}".encode()) for i in range(count)]
    reply = ferry.publisher().PublishBatch(ppb.PublishBatchRequest(events=events), timeout=10)
    assert all(e.WhichOneof("outcome") == "result" for e in reply.entries), reply
    return {e.event_id for e in events}


def _serving(ferry: FerryProcess) -> bool:
    reply = ferry.health().Check(
        health_pb2.HealthCheckRequest(service="ferry.v1.Publisher"), timeout=5
    )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _deaths(ferry: FerryProcess) -> list[dict[str, object]]:
    return list(json_entries(ferry.log_path, "forwarder_process_died"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone but for its parent's wait
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_crashed_forwarder_process_is_started_again_and_forwards_what_is_logged(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("fwd-proc-crash", partitions=3)
    ferry = FerryProcess(data_dir, kafka.bootstrap, env={FAILPOINTS_ENV: "forwarder.crash=1"})
    ferry.start()
    try:
        first = ferry.forwarder_pid()
        # One commit, one wave: the forwarder thread dies having retired nothing.
        ids = _publish(ferry, topic, "crash", 50)
        assert wait_until(lambda: _deaths(ferry), 30), ferry.log_tail()
        [death] = _deaths(ferry)
        assert death["exit_code"] == EXIT_INTERNAL_ERROR, death
        assert death["killed_by_signal"] is False
        [died] = list(json_entries(ferry.log_path, "thread_died"))
        assert died["thread"] == "forwarder", died
        assert "forwarder.crash" in str(died["exception"]), died
        assert ferry.alive()
        assert _serving(ferry), "publishing never stops for the forwarder"
        # Started again, unarmed: it forwards what the dead one left in the log.
        ferry.wait_drained(30)
        assert ferry.forwarder_pid() != first
        ids |= _publish(ferry, topic, "after", 20)
        ferry.wait_drained(30)
        restarts = Scrape.of(ferry.metrics_url()).value("ferry_forwarder_process_restarts_total")
        assert restarts == 1
        assert ferry.terminate() == 0
    finally:
        ferry.kill()
    got = {r.event_id for r in read_topic(kafka.bootstrap, topic, expect=len(ids), quiet=1)}
    assert got == ids


def test_a_killed_forwarder_process_is_started_again(kafka: KafkaHandle, data_dir: Path) -> None:
    topic = kafka.topic("fwd-proc-kill", partitions=3)
    ferry = FerryProcess(data_dir, kafka.bootstrap).start()
    try:
        ids = _publish(ferry, topic, "before", 30)
        ferry.wait_drained(30)
        killed = ferry.forwarder_pid()
        os.kill(killed, signal.SIGKILL)
        assert wait_until(lambda: _deaths(ferry), 30), ferry.log_tail()
        [death] = _deaths(ferry)
        assert death["exit_code"] == -signal.SIGKILL, death
        assert death["killed_by_signal"] is True
        ids |= _publish(ferry, topic, "after", 30)  # logged while no forwarder may run
        ferry.wait_drained(30)
        assert ferry.forwarder_pid() != killed
        assert ferry.terminate() == 0
    finally:
        ferry.kill()
    got = {r.event_id for r in read_topic(kafka.bootstrap, topic, expect=len(ids), quiet=1)}
    assert got == ids


def test_the_forwarder_process_exits_when_ferry_is_killed(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    ferry = FerryProcess(data_dir, kafka.bootstrap).start()
    try:
        forwarder = ferry.forwarder_pid()
        assert _alive(forwarder)
        ferry.kill()
        # Orphaned, it is reparented (to init, which reaps it, or to a subreaper that may not).
        assert wait_until(lambda: not _alive(forwarder), 10), "the forwarder outlived Ferry"
        assert list(json_entries(ferry.log_path, "forwarder_process_orphaned"))
    finally:
        ferry.kill()


def test_a_kill_point_in_the_forwarder_process_kills_ferry_first(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    """`forwarder.after_ack` stands for the whole of Ferry dying after Kafka's ack and before
    the rows retire: Ferry dies by SIGKILL, then the forwarder process. The next Ferry finds
    in Kafka the rows it holds that were acknowledged, and sends only the others: every
    acknowledged event reaches Kafka, once."""
    topic = kafka.topic("fwd-proc-killpoint", partitions=3)
    ferry = FerryProcess(data_dir, kafka.bootstrap, env={FAILPOINTS_ENV: "forwarder.after_ack=1"})
    ferry.start()
    try:
        forwarder = ferry.forwarder_pid()
        assert ferry.proc is not None
        ids = _publish(ferry, topic, "before", 40)
        assert ferry.proc.wait(30) == -signal.SIGKILL, ferry.log_tail()
        assert wait_until(lambda: not _alive(forwarder), 10), "the forwarder outlived Ferry"
        [hit] = list(json_entries(ferry.log_path, "failpoint_hit"))
        assert hit["point"] == "forwarder.after_ack", hit
        assert ferry.pending_rows() > 0, "the rows Kafka acknowledged were retired anyway"
    finally:
        ferry.kill()
    ferry.env.pop(FAILPOINTS_ENV)
    ferry.start()
    try:
        ferry.wait_drained(30)
        assert ferry.terminate() == 0
    finally:
        ferry.kill()
    got = [r.event_id for r in read_topic(kafka.bootstrap, topic, expect=len(ids), quiet=1)]
    assert sorted(got) == sorted(ids)
    [check] = list(json_entries(ferry.log_path, "resend_check"))
    assert 0 < check["found"] <= check["checked"] == len(ids), check
