"""The command line of the local Kafka (`testkit.kafka_cluster`), as ``make run``,
``make kafka-jars`` and ``make kafka-stop`` use it::

    python -m testkit.kafka_local fetch [--cache DIR]
    python -m testkit.kafka_local start --dir DIR [--port 9092] [--brokers 1|3]
        [--cache DIR] [--timeout S] [--auto-create-topics]
    python -m testkit.kafka_local status --dir DIR
    python -m testkit.kafka_local stop --dir DIR

``start`` leaves a detached cluster running and prints its bootstrap servers; ``status`` and
``stop`` find it again through the state file in DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from testkit.kafka_cluster import STATE_FILE, KafkaCluster
from testkit.kafka_jars import KafkaError, fetch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m testkit.kafka_local", description="Local Kafka (KRaft) from jars."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download Kafka's jars").add_argument("--cache", type=Path)
    p_start = sub.add_parser("start", help="start a detached cluster, wait until ready")
    for p in (p_start, sub.add_parser("stop"), sub.add_parser("status")):
        p.add_argument("--dir", type=Path, required=True, help="cluster work/data dir")
    p_start.add_argument("--port", type=int, help="client port of node 1 (node i: +i-1)")
    p_start.add_argument("--brokers", type=int, choices=(1, 3))
    p_start.add_argument("--cache", type=Path)
    p_start.add_argument("--timeout", type=float, default=90.0)
    p_start.add_argument("--auto-create-topics", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    if args.cmd == "fetch":
        print(f"{fetch(args.cache)} ({time.monotonic() - t0:.1f}s)")
        return 0
    if args.cmd != "start" and not (args.dir / STATE_FILE).exists():
        print(f"no kafka cluster in {args.dir}", file=sys.stderr)
        return 0 if args.cmd == "stop" else 1
    try:
        cluster = KafkaCluster(args.dir) if (args.dir / STATE_FILE).exists() else None
        if args.cmd == "start" and cluster is not None and cluster.running():
            print(f"kafka already running from {args.dir}", file=sys.stderr)
            print(cluster.bootstrap)
            return 0
        if args.cmd == "start" or cluster is None:
            cluster = KafkaCluster(
                args.dir,
                args.brokers,
                port=args.port,
                cache_dir=args.cache,
                auto_create_topics=args.auto_create_topics,
                detached=True,
            )
            cluster.start(args.timeout)
            print(f"kafka ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
            print(cluster.bootstrap)
            return 0
    except KafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.cmd == "stop":
        cluster.stop()
        print(f"stopped kafka in {args.dir}", file=sys.stderr)
        return 0
    alive = {str(n.node_id): n.alive() for n in cluster.nodes}
    print(
        json.dumps({"running": all(alive.values()), "bootstrap": cluster.bootstrap, "nodes": alive})
    )
    return 0 if all(alive.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
