"""Reproduce, without Ferry, plain librdkafka consumers that never rejoin their group after
the broker was SIGSTOPped for longer than their session timeout.

    python -m chaos.repro_stuck_consumer DIR [--rounds 4] [--pause 10]

DIR is a running tools/kafka_local.py cluster (1 broker). Four consumers with Ferry's
consumer settings (session.timeout.ms 6000, heartbeat 600 ms, manual commits) read a topic
that a producer keeps writing; after each pause the seconds since each consumer's last
message are printed. A consumer that stays stuck while a fresh group reads the same topic
shows librdkafka's rejoin bug (librdkafka issue #2944), which Ferry's subscriptions inherit;
their consumer watchdog (sidecar/subscribe/watchdog.py) replaces such a consumer, and
tests/integration/test_subscribe_stuck_consumer.py proves it against a real broker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--pause", type=float, default=10.0)
    args = ap.parse_args()
    state = json.loads((args.dir / "ferry-kafka.json").read_text())
    boot, pid = state["bootstrap"], state["nodes"][0]["pid"]
    topic = f"stuck-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": boot})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(20)
    stop, last = threading.Event(), {}

    def consume(group: str) -> None:
        c = Consumer({"bootstrap.servers": boot, "group.id": group, "session.timeout.ms": 6000,
                      "heartbeat.interval.ms": 600, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "log_level": 3})  # fmt: skip
        c.subscribe([topic])
        while not stop.is_set():
            for m in c.consume(500, timeout=0.05):
                if not m.error():
                    last[group] = time.monotonic()
        c.close()

    def produce() -> None:
        p = Producer({"bootstrap.servers": boot, "linger.ms": 5, "log_level": 0})
        while not stop.is_set():
            with contextlib.suppress(BufferError):
                p.produce(topic, b"x" * 100)
            p.poll(0)
            time.sleep(0.002)

    groups = [f"g{i}-{uuid.uuid4().hex[:4]}" for i in range(4)]
    for target, arg in [(consume, (g,)) for g in groups] + [(produce, ())]:
        threading.Thread(target=target, args=arg, daemon=True).start()
    time.sleep(5)
    for rnd in range(args.rounds):
        os.kill(pid, signal.SIGSTOP)
        time.sleep(args.pause)
        os.kill(pid, signal.SIGCONT)
        time.sleep(45)
        now = time.monotonic()
        ages = {g: round(now - last.get(g, 0.0), 1) for g in groups}
        print(f"round {rnd}: seconds since each consumer's last message {ages}", flush=True)
    stop.set()


if __name__ == "__main__":
    main()
