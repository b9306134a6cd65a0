"""A broker paused (SIGSTOP) for longer than the consumer session timeout: every subscription
delivers again afterwards (issue #5).

librdkafka 2.16 sometimes never rejoins after such a pause (librdkafka issue #2944): the
consumer reports its partitions lost, then waits in `query-coord` (or `up`/`wait-join`)
forever. Ferry's consumer watchdog replaces such a consumer.
On the 2-core dev machine two 8 s pauses 4 s apart left 5 of 12 plain consumers stuck, so the
test runs 12 subscriptions, fetching a steady stream, through two pauses; without the watchdog it
fails whenever one of them is stuck (2 of 3 runs against the code before the watchdog).

The broker is this module's own: pausing the session's broker would stall whatever else runs
against it, and this one can be thrown away afterwards. It runs with the full JIT (no fast
start): against a C1-only broker the stuck state showed up in 1 run of 5 only. The test takes
~45-60 s, broker start included.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from sidecar.model import EVENT_ID_HEADER
from testkit.acking_worker import AckingWorker
from testkit.ferry_log import json_entries
from testkit.ferry_process import Ferries
from testkit.kafka_admin import create_topic, unique_topic
from testkit.kafka_cluster import KafkaCluster
from testkit.kafka_env import local_cluster
from testkit.stream_client import StreamClient, open_stream
from testkit.subscribe_calls import open_request, unique_subscription

SESSION_MS = 6000  # the broker's minimum session timeout
PAUSE_S = 7.5  # past the session timeout: every consumer loses its partitions
REJOIN_WAIT_S = 3.5  # between the pauses
SUBSCRIPTIONS = 12
# A stuck consumer is replaced 3 session timeouts after it lost its partitions (6 s into the
# pause), ~16 s after the last resume; then it joins, and the backlog flows.
DELIVERED_WITHIN_S = 35.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    if os.environ.get("KAFKA_BOOTSTRAP", "").strip():
        pytest.skip("pauses a broker of its own; $KAFKA_BOOTSTRAP names an external Kafka")
    cluster = local_cluster(tmp_path_factory.mktemp("stuck") / "kafka", fast_start=False)
    yield cluster
    cluster.stop()


class SteadyProducer:
    """Produces ~200 records a second with distinct event ids until stopped; remembers which
    ones Kafka acknowledged."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 0})
        self._topic = topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)
        self.delivered: set[str] = set()

    def start(self) -> SteadyProducer:
        self._thread.start()
        return self

    def wait_delivered(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.delivered) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(self.delivered) >= count

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self._producer.flush(30) == 0, "records left unsent after the broker came back"

    def _run(self) -> None:
        def on_delivery(err: object, msg: Any) -> None:
            if err is None:
                self.delivered.add(msg.value().decode())

        i = 0
        while not self._stop.is_set():
            event_id = f"steady-{i}"
            with contextlib.suppress(BufferError):
                self._producer.produce(
                    self._topic,
                    event_id.encode(),
                    headers=[(EVENT_ID_HEADER, event_id)],
                    on_delivery=on_delivery,
                )
                i += 1
            self._producer.poll(0)
            time.sleep(0.005)


def test_every_subscription_delivers_again_after_the_broker_was_paused_past_the_session(
    broker: KafkaCluster, tmp_path: Path
) -> None:
    topic = create_topic(broker.bootstrap, unique_topic("stuck"), 3)
    ferries = Ferries(tmp_path, broker.bootstrap)
    workers: dict[str, AckingWorker] = {}
    try:
        ferry = ferries.start(
            "--consumer-session-timeout-ms", str(SESSION_MS), "--subscription-linger-s", "1",
            "--log-level", "debug",
        )  # fmt: skip
        for _ in range(SUBSCRIPTIONS):
            name = unique_subscription("stuck")
            client: StreamClient = open_stream(ferry, open_request(name, [topic], lease_s=30))
            workers[name] = AckingWorker(client).start()

        def missing(expected: set[str]) -> dict[str, int]:
            return {n: len(expected - set(w.applied)) for n, w in workers.items()}

        def wait_acked(timeout: float) -> dict[str, int]:
            expected = set(producer.delivered)
            deadline = time.monotonic() + timeout
            while any(missing(expected).values()) and time.monotonic() < deadline:
                time.sleep(0.2)
            return missing(expected)

        # Records keep arriving through the pauses: consumers that are fetching when the broker
        # stops get stuck far more often than idle ones.
        producer = SteadyProducer(broker.bootstrap, topic).start()
        assert producer.wait_delivered(100, 30)
        assert not any(wait_acked(30).values()), "not delivered before the pauses"

        for _ in range(2):
            broker.pause(1)
            time.sleep(PAUSE_S)
            broker.resume(1)
            time.sleep(REJOIN_WAIT_S)
        producer.stop()

        resumed = time.monotonic()
        left = wait_acked(DELIVERED_WITHIN_S)
        replaced = list(json_entries(ferry.log_path, "consumer_replaced"))
        print(
            f"\n{len(producer.delivered)} events, {len(replaced)} consumer(s) replaced; all "
            f"delivered {time.monotonic() - resumed:.1f}s after the last resume + {REJOIN_WAIT_S}s"
        )
        assert not any(left.values()), (
            f"events still unacked per subscription {left} {DELIVERED_WITHIN_S}s after the "
            f"broker came back; consumers replaced: {replaced}"
        )
        for worker in workers.values():
            assert not worker.client.violations
    finally:
        for worker in workers.values():
            worker.stop(2)
            worker.client.cancel()
        ferries.close()
