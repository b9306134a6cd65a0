"""Child processes of a benchmark run: Kafka, Ferry, the echo server; all cleaned up on exit.

Every process the harness starts is registered in a `testkit.processes.Children`;
`Children.close()` (called from a `finally`, at interpreter exit, and after SIGTERM/Ctrl-C)
stops them, SIGKILLing what does not stop in time. Children also get a parent-death signal so
that a SIGKILLed harness does not leave them behind. Only loopback addresses are ever used.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import grpc

from sidecar._gen.ferry.v1 import publisher_pb2, publisher_pb2_grpc
from testkit.ferry_process import FerryProcess, wait_serving
from testkit.kafka_env import KafkaEnv
from testkit.paths import ROOT
from testkit.ports import HOST, free_port
from testkit.processes import Children

__all__ = [
    "FERRY_START_TIMEOUT_S",
    "ROOT",
    "EchoServer",
    "clean_dir",
    "create_topic",
    "install_signal_handlers",
    "kafka_env",
    "prune_work",
    "start_ferry",
]

#: A Ferry with a large log backlog to open on a busy 2-core machine may take a while.
FERRY_START_TIMEOUT_S = 120.0
#: Bounded retention: payload runs write gigabytes.
TOPIC_CONFIG = {"retention.bytes": str(512 * 1024 * 1024), "segment.bytes": str(64 << 20)}


def install_signal_handlers() -> None:
    """SIGINT/SIGTERM/SIGHUP end the run through every `finally` (SIGINT too: a shell starts
    background jobs with SIGINT ignored, and `kill -INT` should still work)."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def kafka_env(children: Children, work: Path) -> KafkaEnv:
    """A local 1-broker cluster under `work` (stopped with `children`), or `$KAFKA_BOOTSTRAP`."""
    kafka = KafkaEnv.from_environment(
        work / "kafka",
        fast_start=False,
        heap="768m",
        config={
            "log.retention.check.interval.ms": 10_000,
            "log.segment.delete.delay.ms": 0,
            # kafka_cluster fences a silent broker after 4 s (fast failover for fault tests);
            # a benchmark on a busy 2-core machine must not lose its only broker that way.
            "broker.session.timeout.ms": 30_000,
            "broker.heartbeat.interval.ms": 2_000,
        },
    )
    children.on_close(kafka.close)
    return kafka


def create_topic(kafka: KafkaEnv, name: str, partitions: int = 3) -> str:
    """Create `name` with bounded retention; retried 3 times (3 s apart)."""
    return kafka.create_topic(name, partitions, TOPIC_CONFIG, attempts=3)


def start_ferry(
    children: Children, data_dir: Path, bootstrap: str, *args: str, name: str = "ferry"
) -> FerryProcess:
    """A Ferry registered in `children`, started and serving."""
    ferry = FerryProcess(data_dir, bootstrap, *args, name=name, children=children)
    return ferry.start(FERRY_START_TIMEOUT_S)


class EchoServer:
    """The gRPC ceiling: `python -m bench.echo`, same messages, fixed answers."""

    def __init__(self, children: Children, work: Path) -> None:
        self.children = children
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.log = work / "echo.log"
        cmd = [sys.executable, "-m", "bench.echo", "--port", str(self.port)]
        self.proc = children.spawn("echo", cmd, self.log)
        wait_serving(self.address, self.proc, 30.0, self.log)
        with grpc.insecure_channel(self.address) as channel:  # answers like Ferry does
            stub = publisher_pb2_grpc.PublisherStub(channel)
            stub.Publish(publisher_pb2.PublishRequest(event=publisher_pb2.Event(topic="t")))

    @property
    def pid(self) -> int:
        return self.proc.pid


def prune_work(work: Path) -> None:
    """Delete the bulky data of a finished run (Kafka's logs, WALs); keep logs and profiles."""
    for data in work.glob("kafka/node-*/data"):
        shutil.rmtree(data, ignore_errors=True)
    for wal in work.glob("ferry*/wal.sqlite3*"):
        wal.unlink(missing_ok=True)


def clean_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path
