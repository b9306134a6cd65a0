"""A slow subscriber with 100,000 events waiting in Kafka: Ferry pauses the partitions instead of
holding the backlog in memory, and deliveries keep flowing."""

from __future__ import annotations

import time

import psutil
import pytest

from testkit.ferry_process import Ferries
from testkit.kafka_produce import produce_direct
from testkit.stream_client import open_stream
from testkit.subscribe_calls import APPLIED, open_request, unique_subscription
from tests.conftest import KafkaHandle

FERRY_ARGS = ("--subscription-linger-s", "1")
BACKLOG = 100_000
PAYLOAD_BYTES = 1024
SAMPLE_S = 15.0
# How much Ferry's RSS may grow over its idle baseline (~62 MiB) while a slow subscriber works
# through the backlog. Measured on the 2-core dev machine with this test's 100k x 1 KiB backlog:
#   paused as shipped (max_outstanding 100 -> at most ~1k records held):  +27 MiB
#   the hold limit patched to 25k records (paused at 25k, resumed at 12.5k): +80 MiB
#   the pause patched out (everything fetched is held):                  +170 MiB
# The paused growth is librdkafka's fetch queue, gRPC and the consumer thread. 60 MiB leaves
# ~30 MiB of headroom over the paused run and is ~20 MiB under 25k held records, so passing
# means the subscription paused well before 25k records.
RSS_GROWTH_BOUND = 60 * 1024 * 1024


def test_slow_subscriber_keeps_memory_bounded(
    kafka: KafkaHandle, ferries: Ferries, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = kafka.topic("sub-slow", partitions=3)
    produce_direct(
        kafka.bootstrap,
        topic,
        ((f"k{i % 64}".encode(), f"{i:08d}".encode().ljust(PAYLOAD_BYTES, b"."), None)
         for i in range(BACKLOG)),
    )  # fmt: skip
    ferry = ferries.start(*FERRY_ARGS)
    assert ferry.proc is not None
    process = psutil.Process(ferry.proc.pid)
    time.sleep(1.0)
    baseline = process.memory_info().rss

    client = open_stream(
        ferry,
        open_request(unique_subscription("slow"), [topic], lease_s=60, max_outstanding=100),
    )
    first = client.take(timeout=30, at_least=100)
    assert len(first) == 100, "the stream is limited to 100 outstanding events"
    pending = first
    samples: list[tuple[float, int, int]] = []  # (time, rss, delivered so far)
    started = time.monotonic()
    while time.monotonic() - started < SAMPLE_S:
        # A slow reader: 100 events per 0.25 s at most.
        time.sleep(0.25)
        if pending:
            assert {x.status for x in client.ack(r.ack_id for r in pending)} == {APPLIED}
        samples.append(
            (time.monotonic() - started, process.memory_info().rss, len(client.received))
        )
        pending = client.take(timeout=2)
        assert len(pending) <= 100

    peak = max(rss for _, rss, _ in samples)
    delivered = len(client.received)
    per_window = [max(d for t, _, d in samples if t < end) for end in (5.0, 10.0, SAMPLE_S + 1)]
    with capsys.disabled():
        print(
            f"\n[memory] baseline RSS {baseline / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB "
            f"(+{(peak - baseline) / 2**20:.1f} MiB, bound +{RSS_GROWTH_BOUND / 2**20:.0f} MiB); "
            f"{delivered} of {BACKLOG} delivered in {SAMPLE_S:.0f}s, by 5 s windows {per_window}"
        )
    assert peak - baseline < RSS_GROWTH_BOUND
    # Deliveries kept flowing through the whole window, at the reader's pace.
    assert per_window[0] < per_window[1] < per_window[2]
    assert delivered < BACKLOG // 4
    # Pausing and resuming skipped nothing and repeated nothing: each partition's deliveries are
    # its offsets from 0 on, once each (a skipped offset would later be committed past).
    offsets: dict[int, list[int]] = {}
    for r in client.received:
        offsets.setdefault(r.delivery.partition, []).append(r.delivery.offset)
    for partition, got in offsets.items():
        assert sorted(got) == list(range(len(got))), f"partition {partition}: gaps or repeats"
    assert {r.attempt for r in client.received} == {1}
    assert not client.violations
    client.cancel()
