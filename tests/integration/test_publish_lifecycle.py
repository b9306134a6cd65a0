"""Process lifecycle: SIGTERM drains, a second SIGTERM exits at once, one process per data dir."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc
from testkit.delivery import Delivery
from testkit.ferry_process import FerryProcess, running_ferry
from testkit.kafka_read import read_topic
from testkit.kafka_restore import ensure_running, kafka_restored
from testkit.paths import ROOT
from testkit.ports import free_port
from testkit.publishing import FAST_RETRY, event, publish
from testkit.waiting import wait_for
from tests.conftest import KafkaHandle


def _burst(
    stub: publisher_pb2_grpc.PublisherStub, topic: str, prefix: str, batches: int
) -> dict[str, pb.Event]:
    published: dict[str, pb.Event] = {}
    for b in range(batches):
        chunk = [
            event(topic, f"{prefix}{b:02d}-{i:03d}", key=f"k{i % 5}".encode()) for i in range(100)
        ]
        reply = stub.PublishBatch(pb.PublishBatchRequest(events=chunk), timeout=10)
        assert all(e.WhichOneof("outcome") == "result" for e in reply.entries)
        published.update((ev.event_id, ev) for ev in chunk)
    return published


class Prober:
    """Keeps publishing during a drain; records what each attempt was answered."""

    def __init__(self, address: str, topic: str) -> None:
        self.address, self.topic = address, topic
        self.events: dict[str, pb.Event] = {}
        self.answers: dict[str, str] = {}  # event_id -> "OK" or the status code's name
        self.details: dict[str, str] = {}  # code name -> one example of its details
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = publisher_pb2_grpc.PublisherStub(channel)
            i = 0
            while not self.stop.is_set():
                ev = event(self.topic, f"probe-{i:05d}")
                i += 1
                self.events[ev.event_id] = ev
                try:
                    publish(stub, ev, timeout=2)
                except grpc.RpcError as exc:
                    self.answers[ev.event_id] = exc.code().name
                    self.details.setdefault(exc.code().name, exc.details() or "")
                else:
                    self.answers[ev.event_id] = "OK"
                time.sleep(0.005)

    def with_code(self, code: str) -> dict[str, pb.Event]:
        return {e: self.events[e] for e, c in self.answers.items() if c == code}

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for code in self.answers.values():
            counts[code] = counts.get(code, 0) + 1
        return counts

    def check_refusals(self) -> None:
        """Refusals are UNAVAILABLE (CANCELLED: see `report_cancelled`), never anything else."""
        unexpected = set(self.counts()) - {"OK", "UNAVAILABLE", "CANCELLED"}
        assert not unexpected, (self.counts(), self.details)

    def check_delivery(self, delivery: Delivery) -> None:
        """What was answered OK arrived; what was refused UNAVAILABLE was never written."""
        delivery.assert_contents(self.with_code("OK"))
        leaked = set(self.with_code("UNAVAILABLE")) & set(delivery.by_id)
        assert not leaked, f"events answered UNAVAILABLE reached Kafka: {sorted(leaked)[:5]}"

    def report_cancelled(self) -> None:
        cancelled = self.with_code("CANCELLED")
        if cancelled:
            pytest.xfail(
                f"BUG: {len(cancelled)} publish(es) during the drain were answered CANCELLED "
                f"({self.details['CANCELLED']!r}), not UNAVAILABLE as the API promises: "
                "FerryApp.drain stops the gRPC server while calls it already accepted are "
                "still queued, and grpc cancels those (sidecar/app.py)"
            )

    def __enter__(self) -> Prober:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_sigterm_drains_and_exits_zero(kafka: KafkaHandle, data_dir: Path) -> None:
    topic = kafka.topic("drain", partitions=3)
    ferry = FerryProcess(data_dir, kafka.bootstrap).start()
    try:
        published = _burst(ferry.publisher(), topic, "burst", 20)
        with Prober(ferry.address, topic) as prober:
            time.sleep(0.2)
            assert ferry.proc is not None
            ferry.proc.send_signal(signal.SIGTERM)
            code = ferry.proc.wait(30)
            time.sleep(0.3)  # the prober sees the refusals after the exit too
        assert code == 0, ferry.log_tail()
        assert ferry.pending_rows() == 0, "with Kafka up, the drain must deliver everything"
        print(f"\nduring drain: {prober.counts()}")
        assert prober.with_code("OK"), "the prober never got through before SIGTERM"
        assert prober.with_code("UNAVAILABLE"), "no publish was refused during/after the drain"
        prober.check_refusals()
        log = ferry.log_path.read_text()
        assert '"drain_started"' in log
        assert '"drain_finished"' in log
        published.update(prober.with_code("OK"))
        ferry.start()
        ferry.wait_drained(30)
        assert ferry.terminate() == 0
    finally:
        ferry.kill()
    delivery = Delivery(read_topic(kafka.bootstrap, topic, expect=len(published), quiet=2))
    delivery.assert_contents(published)
    prober.check_delivery(delivery)
    assert delivery.duplicates == 0
    prober.report_cancelled()


def test_second_sigterm_during_a_long_drain_exits_at_once(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    cluster = kafka.require_control()
    topic = kafka.topic("drain-long", partitions=3)
    with kafka_restored(cluster):
        cluster.stop()
        ferry = FerryProcess(
            data_dir, kafka.bootstrap, "--drain-grace-s", "120", *FAST_RETRY
        ).start()
        try:
            published = _burst(ferry.publisher(), topic, "held", 3)
            assert ferry.proc is not None
            with Prober(ferry.address, topic) as prober:
                time.sleep(0.2)
                ferry.proc.send_signal(signal.SIGTERM)
                wait_for(lambda: prober.with_code("UNAVAILABLE"), 10, what="a refused publish")
            prober.check_refusals()
            time.sleep(1.0)
            assert ferry.proc.poll() is None, "the drain should wait for Kafka (grace 120 s)"
            started = time.monotonic()
            ferry.proc.send_signal(signal.SIGTERM)
            code = ferry.proc.wait(10)
            assert time.monotonic() - started < 3
            assert code == 128 + signal.SIGTERM, code
            assert "second_signal_exiting_now" in ferry.log_path.read_text()
            published.update(prober.with_code("OK"))
            # Every OK is logged; a CANCELLED one may or may not be (outcome unknown).
            pending = ferry.pending_rows()
            assert len(published) <= pending <= len(published) + len(prober.with_code("CANCELLED"))
            ensure_running(cluster)
            ferry.start()
            ferry.wait_drained(60)
            assert ferry.terminate() == 0
        finally:
            ferry.kill()
    delivery = Delivery(read_topic(kafka.bootstrap, topic, expect=len(published), quiet=2))
    delivery.assert_contents(published)
    prober.check_delivery(delivery)
    assert set(delivery.by_id) <= set(published) | set(prober.with_code("CANCELLED"))
    prober.report_cancelled()


def test_second_process_on_the_same_data_dir_refuses_to_start(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("lock", partitions=1)
    with running_ferry(data_dir, kafka.bootstrap) as first:
        second = FerryProcess(data_dir, kafka.bootstrap, port=free_port())
        started = time.monotonic()
        result = subprocess.run(
            second.command(), cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert "locked by another Ferry process" in output, output
        assert time.monotonic() - started < 20
        # The first one is untouched and keeps working.
        publish(first.publisher(), event(topic, "still-works"), ack_level=pb.ACK_LEVEL_KAFKA)
    # Once the first is gone, the lock is free again.
    with running_ferry(data_dir, kafka.bootstrap) as again:
        publish(again.publisher(), event(topic, "after"), ack_level=pb.ACK_LEVEL_KAFKA)
    ids = [r.event_id for r in read_topic(kafka.bootstrap, topic, expect=2, quiet=1)]
    assert ids == ["still-works", "after"]
