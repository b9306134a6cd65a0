"""Ferry's lifecycle with real processes and a real broker: a dead thread turns Ferry NOT_SERVING
and stops it with exit code 70 (what is logged is delivered after the restart), and SIGTERM with
20 subscriptions, each with an open stream holding leases, exits 0 within the shutdown budget
with the acked offsets committed and the leases returned."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from sidecar.lifecycle import EXIT_INTERNAL_ERROR, ShutdownBudget
from testkit.consumer_offsets import committed
from testkit.ferry_process import FerryProcess
from testkit.kafka_read import read_topic
from testkit.publishing import event, publish, publish_through_ferry
from testkit.stream_client import StreamClient
from testkit.subscribe_calls import APPLIED, group_of, open_request, unique_subscription
from tests.conftest import KafkaHandle

#: Every name Ferry answers health for.
HEALTH_NAMES = ("", "ferry.v1.Publisher", "ferry.v1.Subscriber", "ferry.kafka")
BUDGET_S = ShutdownBudget.for_grace(10.0).total_s  # the default --drain-grace-s
SUBSCRIPTIONS = 20


def _crashing(data_dir: Path, kafka: KafkaHandle, point: str) -> FerryProcess:
    return FerryProcess(data_dir, kafka.bootstrap, env={"FERRY_FAILPOINTS": f"{point}=1"})


class HealthWatch:
    """Polls health until the process exits. `down` is set once every name answers NOT_SERVING,
    or once the server, still running, refuses health checks (its stop has begun); SERVING must
    never come back after that."""

    def __init__(self, ferry: FerryProcess) -> None:
        self.ferry = ferry
        self.down = threading.Event()
        self.seen: set[str] = set()
        self.serving_after_down = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _status(self, name: str) -> int | None:
        try:
            reply = self.ferry.health().Check(
                health_pb2.HealthCheckRequest(service=name), timeout=1
            )
        except grpc.RpcError:
            return None  # the server is stopping or gone
        return int(reply.status)

    def _run(self) -> None:
        assert self.ferry.proc is not None
        while self.ferry.proc.poll() is None:
            statuses = [self._status(name) for name in HEALTH_NAMES]
            if self.down.is_set() and health_pb2.HealthCheckResponse.SERVING in statuses:
                self.serving_after_down = True
            if all(s == health_pb2.HealthCheckResponse.NOT_SERVING for s in statuses):
                self.seen.add("NOT_SERVING")
                self.down.set()
            elif all(s is None for s in statuses) and self.ferry.proc.poll() is None:
                self.seen.add("refused")
                self.down.set()
            time.sleep(0.005)

    def wait_exit(self, timeout: float) -> tuple[int, float]:
        """The exit code, and how long after this call the process exited."""
        assert self.ferry.proc is not None
        started = time.monotonic()
        code = self.ferry.proc.wait(timeout)
        self._thread.join(5)
        return code, time.monotonic() - started


def _log_entries(ferry: FerryProcess, event_name: str) -> list[dict[str, Any]]:
    entries = []
    for line in ferry.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event_name}"' in line:
            entry = json.loads(line)  # one JSON line each, traceback included
            if entry.get("event") == event_name:
                entries.append(entry)
    return entries


def _check_died(ferry: FerryProcess, thread: str, point: str) -> None:
    [died] = _log_entries(ferry, "thread_died")
    assert died["thread"] == thread, died
    assert died["level"] == "error"
    [exception] = died["exception"]  # the traceback, structured, in the same line
    assert exception["exc_type"] == "InjectedCrash", died
    assert point in exception["exc_value"], died
    assert exception["frames"][-1]["name"] == "hit", died
    [drain] = _log_entries(ferry, "drain_started")
    assert drain["dead_threads"] == [thread], drain
    assert _log_entries(ferry, "drain_finished"), ferry.log_tail()


def _restart_clean(ferry: FerryProcess) -> FerryProcess:
    ferry.kill()
    ferry.env = {}
    return ferry.start()


def test_a_dead_consumer_thread_stops_ferry_and_a_restart_delivers(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("life-consumer", partitions=2)
    ferry = _crashing(data_dir, kafka, "consumer.crash").start()
    subscription = unique_subscription("life")
    try:
        ids = publish_through_ferry(ferry, topic, 20)
        watch = HealthWatch(ferry)
        client = StreamClient(ferry.channel(), open_request(subscription, [topic])).start()
        code, took = watch.wait_exit(BUDGET_S)
        print(f"\nconsumer died: exit {code} {took:.2f} s after the open; health {watch.seen}")
        assert code == EXIT_INTERNAL_ERROR, ferry.log_tail()
        assert not watch.serving_after_down
        assert client.wait_closed(10)
        assert client.received == [], "the consumer died before handing anything over"
        _check_died(ferry, f"consumer-{group_of(subscription)}", "consumer.crash")
        _restart_clean(ferry)
        client = StreamClient(ferry.channel(), open_request(subscription, [topic])).open()
        assert client.wait_received(len(ids), 60), f"{client.received_count()} delivered"
        assert sorted(r.event_id for r in client.received) == sorted(ids)
        results = client.ack(r.ack_id for r in client.received)
        assert all(r.status == APPLIED for r in results)
        assert ferry.terminate() == 0
    finally:
        ferry.kill()


def test_a_dead_log_writer_stops_ferry_and_what_it_committed_is_forwarded_after_restart(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("life-writer", partitions=1)
    ferry = FerryProcess(data_dir, kafka.bootstrap, env={"FERRY_FAILPOINTS": "wal.crash=3"})
    ferry.start()
    try:
        stub = ferry.publisher()
        publish(stub, event(topic, "logged-1"))
        publish(stub, event(topic, "logged-2"))
        watch = HealthWatch(ferry)
        third: Future[Any] = Future()

        def publish_third() -> None:
            try:
                third.set_result(publish(stub, event(topic, "never-logged"), timeout=20))
            except grpc.RpcError as exc:
                third.set_result(exc.code())

        threading.Thread(target=publish_third, daemon=True).start()
        # The third publish is never answered OK: its commit never happened. Ferry answers
        # NOT_SERVING, then refuses calls while the gRPC server stops (the call in progress
        # holds it up to 5 s).
        assert watch.down.wait(10), ferry.log_tail()
        code, took = watch.wait_exit(BUDGET_S)
        print(f"\nlog writer died: exit {code}, {took:.2f} s after health went down {watch.seen}")
        assert code == EXIT_INTERNAL_ERROR, ferry.log_tail()
        assert not watch.serving_after_down
        answer = third.result(30)
        assert isinstance(answer, grpc.StatusCode), answer
        _check_died(ferry, "wal-writer", "wal.crash")
        _restart_clean(ferry)
        ferry.wait_drained(30)
        assert ferry.terminate() == 0
    finally:
        ferry.kill()
    got = {r.event_id for r in read_topic(kafka.bootstrap, topic, expect=2, quiet=1)}
    assert got == {"logged-1", "logged-2"}


def test_sigterm_with_20_subscriptions_holding_leases_exits_0_within_the_budget(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("life-shutdown", partitions=2)
    ferry = FerryProcess(data_dir, kafka.bootstrap).start()
    names = [unique_subscription(f"sd{i:02d}") for i in range(SUBSCRIPTIONS)]
    try:
        ids = publish_through_ferry(ferry, topic, 40)
        clients = [
            StreamClient(ferry.channel(), open_request(name, [topic], lease_s=300)).start()
            for name in names
        ]
        # Each stream gets every record; it acks the first half of each partition (a prefix,
        # committed as is) and holds the rest leased.
        acked_to: dict[str, dict[int, int]] = {}
        for name, client in zip(names, clients, strict=True):
            assert client.wait_received(len(ids), 60), f"{name}: {client.received_count()}"
            by_partition: dict[int, list[int]] = {}
            for r in client.received:
                by_partition.setdefault(r.delivery.partition, []).append(r.delivery.offset)
            assert sorted(by_partition) == [0, 1]
            assert all(len(offs) >= 4 for offs in by_partition.values()), by_partition
            prefix = {p: sorted(offs)[len(offs) // 2] for p, offs in by_partition.items()}
            acks = [
                r.ack_id
                for r in client.received
                if r.delivery.offset < prefix[r.delivery.partition]
            ]
            assert all(x.status == APPLIED for x in client.ack(acks))
            acked_to[name] = prefix
        assert ferry.proc is not None
        started = time.monotonic()
        ferry.proc.send_signal(signal.SIGTERM)
        code = ferry.proc.wait(BUDGET_S + 30)
        took = time.monotonic() - started
        print(
            f"\nSIGTERM to exit with {SUBSCRIPTIONS} subscriptions holding leases: "
            f"{took:.2f} s (budget {BUDGET_S:.0f} s)"
        )
        assert code == 0, ferry.log_tail()
        assert took < BUDGET_S
        for client in clients:
            assert client.wait_closed(10)
            assert client.code() == grpc.StatusCode.UNAVAILABLE, client.error
        stopped = _log_entries(ferry, "subscription_stopped")
        assert sorted(e["subscription"] for e in stopped) == sorted(names)
        assert all(e["closed"] for e in stopped), stopped
        assert not _log_entries(ferry, "consumer_close_abandoned")
        for name in names:  # the acked prefix is committed
            got = {
                p: offset
                for p, (offset, _) in committed(kafka.bootstrap, group_of(name), topic).items()
            }
            assert got == acked_to[name], name
        # The leases were returned: after a restart each subscription gets exactly what it
        # had not acked.
        records = read_topic(kafka.bootstrap, topic, expect=len(ids), quiet=0.5)
        ferry.start()
        clients = [
            StreamClient(ferry.channel(), open_request(name, [topic])).start() for name in names
        ]
        for name, client in zip(names, clients, strict=True):
            expected = {
                (r.partition, r.offset) for r in records if r.offset >= acked_to[name][r.partition]
            }
            assert client.wait_received(len(expected), 60), f"{name}: {client.received_count()}"
            time.sleep(0.1)
            got = {(r.delivery.partition, r.delivery.offset) for r in client.received}
            assert got == expected, name
        assert ferry.terminate() == 0
    finally:
        ferry.kill()
