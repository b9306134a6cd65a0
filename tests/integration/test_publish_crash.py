"""kill -9 of the sidecar while clients publish: nothing answered OK is ever lost."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc
from testkit.delivery import Delivery
from testkit.ferry_process import FerryProcess
from testkit.kafka_read import read_topic
from testkit.publishing import event
from tests.conftest import KafkaHandle

KILLS = 5
CLIENTS = 4
BATCH_CLIENT = 0  # this client publishes batches of BATCH events; the others one at a time
BATCH = 20
RETRY_FOR_S = 2.0  # how long a client retries one event (same id) before giving up on it
#: Reconnect quickly after each restart instead of gRPC's default 1 s+ backoff.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 300),
]


@dataclass
class Client:
    """One publishing client; its keys are its own, so their publish order is defined."""

    number: int
    topic: str
    ok: dict[str, pb.Event] = field(default_factory=dict)
    attempted: dict[str, pb.Event] = field(default_factory=dict)
    per_key: dict[bytes, list[str]] = field(default_factory=dict)
    unknown: int = 0  # events given up on (outcome unknown)
    retries: int = 0
    duplicate_answers: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    def events(self, i: int) -> list[pb.Event]:
        count = BATCH if self.number == BATCH_CLIENT else 1
        return [
            event(
                self.topic,
                f"c{self.number}-{i:05d}-{j:02d}",
                key=f"c{self.number}-k{(i * count + j) % 3}".encode(),
                headers={"client": str(self.number)} if j % 2 else {},
            )
            for j in range(count)
        ]

    def run(self, address: str, stop: threading.Event) -> None:
        with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = publisher_pb2_grpc.PublisherStub(channel)
            i = 0
            while not stop.is_set():
                events = self.events(i)
                self.attempted.update((ev.event_id, ev) for ev in events)
                give_up_at = time.monotonic() + RETRY_FOR_S
                while True:
                    try:
                        results = self._send(stub, events)
                    except grpc.RpcError as exc:  # killed mid-call: outcome unknown
                        name = exc.code().name
                        self.codes[name] = self.codes.get(name, 0) + 1
                        if time.monotonic() > give_up_at or stop.is_set():
                            self.unknown += len(events)
                            break
                        self.retries += 1
                        time.sleep(0.05)
                        continue
                    for ev, result in zip(events, results, strict=True):
                        assert result.event_id == ev.event_id
                        self.ok[ev.event_id] = ev
                        self.per_key.setdefault(ev.key, []).append(ev.event_id)
                        self.duplicate_answers += result.duplicate
                    break
                i += 1

    def _send(
        self, stub: publisher_pb2_grpc.PublisherStub, events: list[pb.Event]
    ) -> list[pb.PublishResult]:
        if len(events) == 1:
            return [stub.Publish(pb.PublishRequest(event=events[0]), timeout=3).result]
        reply = stub.PublishBatch(pb.PublishBatchRequest(events=events), timeout=3)
        assert all(e.WhichOneof("outcome") == "result" for e in reply.entries), reply
        return [e.result for e in reply.entries]


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_kill_9_while_publishing_loses_nothing(
    kafka: KafkaHandle, data_dir: Path, mode: str
) -> None:
    topic = kafka.topic(f"kill9-{mode}", partitions=3)
    rng = random.Random()
    clients = [Client(n, topic) for n in range(CLIENTS)]
    stop = threading.Event()
    ferry = FerryProcess(data_dir, kafka.bootstrap, "--forwarder-mode", mode).start()
    threads = [threading.Thread(target=c.run, args=(ferry.address, stop)) for c in clients]
    try:
        for thread in threads:
            thread.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.5))
            ferry.kill()
            ferry.start()
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(30)
        ferry.wait_drained(60)
        assert ferry.terminate() == 0
    finally:
        stop.set()
        ferry.kill()

    ok = {k: v for c in clients for k, v in c.ok.items()}
    attempted = {k: v for c in clients for k, v in c.attempted.items()}
    per_key = {k: v for c in clients for k, v in c.per_key.items()}
    starts = ferry.log_path.read_text().count('"ferry_started"')
    assert starts == KILLS + 1
    delivery = Delivery(read_topic(kafka.bootstrap, topic, expect=len(ok), quiet=2))
    codes: dict[str, int] = {}
    for c in clients:
        for name, n in c.codes.items():
            codes[name] = codes.get(name, 0) + n
    print(
        f"\n{KILLS} kills: {len(ok)} answered OK, {sum(c.unknown for c in clients)} given up, "
        f"{sum(c.retries for c in clients)} retries "
        f"({sum(c.duplicate_answers for c in clients)} answered duplicate=true), "
        f"errors {codes}; Kafka holds {len(delivery.records)} records of "
        f"{len(delivery.by_id)} events: duplicates={delivery.duplicates}"
    )
    assert len(ok) > 500, "too little was published to mean anything"
    delivery.assert_contents(ok)
    assert set(delivery.by_id) <= set(attempted), "Kafka holds events nobody published"
    delivery.assert_contents({k: attempted[k] for k in delivery.by_id})
    assert delivery.order_violations(per_key) == []
    # Only rows in flight (sent, not yet retired) at each kill may be sent twice.
    assert delivery.duplicates <= max(100, len(delivery.by_id) // 10)
