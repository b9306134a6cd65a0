"""Child processes of a benchmark run: Kafka, Ferry, the echo server; all cleaned up on exit.

Every process the harness starts is registered in `Children`; `Children.close()` (called
from a `finally`, at interpreter exit, and after SIGTERM/Ctrl-C) stops them, SIGKILLing
what does not stop in time. Children also get PR_SET_PDEATHSIG so that a SIGKILLed
harness does not leave them behind. Only loopback addresses are ever used.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._gen.ferry.v1 import publisher_pb2, publisher_pb2_grpc
from sidecar.wal.peek import pending_rows
from testkit import kafka_local

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

__all__ = [
    "ROOT",
    "Children",
    "EchoServer",
    "FerryServer",
    "KafkaEnv",
    "clean_dir",
    "free_port",
    "install_signal_handlers",
    "kafka_local",
    "pending_rows",
    "prune_work",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _pdeathsig() -> None:  # in the child, between fork and exec
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Children:
    """Every process this run started, stopped in reverse order by `close()`."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes], float]] = []
        self._closers: list[Callable[[], None]] = []
        atexit.register(self.close)

    def spawn(
        self,
        name: str,
        cmd: Sequence[str],
        log: Path | None = None,
        *,
        stop_timeout: float = 10.0,
        pipes: bool = False,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        out: Any = subprocess.DEVNULL
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = open(log, "ab")  # noqa: SIM115 - the child owns it from here
        try:
            proc = subprocess.Popen(
                list(cmd),
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else out,
                stderr=out,
                preexec_fn=_pdeathsig,
            )
        finally:
            if log is not None:
                out.close()
        self._procs.append((name, proc, stop_timeout))
        return proc

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float | None = None) -> int | None:
        """SIGTERM, wait, SIGKILL; forget the process."""
        entry = next((e for e in self._procs if e[1] is proc), None)
        wait = timeout if timeout is not None else (entry[2] if entry else 10.0)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._procs = [e for e in self._procs if e[1] is not proc]
        return proc.returncode

    def close(self) -> None:
        for _name, proc, timeout in reversed(list(self._procs)):
            self.stop(proc, timeout)
        closers, self._closers = self._closers, []
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                closer()


def install_signal_handlers() -> None:
    """SIGINT/SIGTERM/SIGHUP end the run through every `finally` (SIGINT too: a shell starts
    background jobs with SIGINT ignored, and `kill -INT` should still work)."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


class KafkaEnv:
    """The broker: a local KRaft cluster under `work`, or `$KAFKA_BOOTSTRAP` (not stoppable)."""

    def __init__(self, children: Children, work: Path) -> None:
        self.external = os.environ.get("KAFKA_BOOTSTRAP", "").strip()
        self.cluster: kafka_local.KafkaCluster | None = None
        if self.external:
            self.bootstrap = self.external
            return
        self.cluster = kafka_local.KafkaCluster(
            work / "kafka",
            brokers=1,
            config={
                "log.retention.check.interval.ms": 10_000,
                "log.segment.delete.delay.ms": 0,
                # kafka_local fences a silent broker after 4 s (fast failover for fault tests);
                # a benchmark on a busy 2-core machine must not lose its only broker that way.
                "broker.session.timeout.ms": 30_000,
                "broker.heartbeat.interval.ms": 2_000,
            },
            heap="768m",
        )
        self.cluster.start()
        children.on_close(lambda: self.cluster.stop() if self.cluster else None)
        self.bootstrap = self.cluster.bootstrap

    @property
    def controllable(self) -> bool:
        return self.cluster is not None

    def pid(self) -> int | None:
        return self.cluster.nodes[0].pid if self.cluster else None

    def create_topic(self, name: str, partitions: int = 3) -> str:
        """Create `name` (bounded retention: payload runs write gigabytes); retried 3 times."""
        config = {"retention.bytes": str(512 * 1024 * 1024), "segment.bytes": str(64 << 20)}
        for attempt in range(3):
            try:
                kafka_local.create_topic(self.bootstrap, name, partitions, -1, config, 30.0)
                return name
            except Exception as exc:
                if "already exists" in str(exc).lower():  # an earlier attempt got through
                    return name
                if attempt == 2:
                    raise
                time.sleep(3.0)
        return name

    def stop(self) -> None:
        assert self.cluster is not None
        self.cluster.stop()

    def start(self) -> None:
        assert self.cluster is not None
        self.cluster.start()


def wait_serving(address: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{address} exited with {proc.returncode}:\n{tail(log)}")
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.05)
    raise TimeoutError(f"{address} not serving after {timeout}s:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class FerryServer:
    """`python -m sidecar serve` on a free loopback port with its WAL in `data_dir`."""

    def __init__(
        self, children: Children, data_dir: Path, bootstrap: str, *args: str, name: str = "ferry"
    ) -> None:
        self.children, self.data_dir, self.name = children, data_dir, name
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.log = data_dir.parent / f"{data_dir.name}.log"
        self.cmd = [
            sys.executable, "-m", "sidecar", "serve", "--listen", self.address,
            "--kafka-bootstrap", bootstrap, "--data-dir", str(data_dir), *args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> FerryServer:
        t0 = time.monotonic()
        self.proc = self.children.spawn(self.name, self.cmd, self.log, stop_timeout=30.0)
        wait_serving(self.address, self.proc, timeout, self.log)
        self.startup_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.children.stop(self.proc)
            self.proc = None

    def pending_rows(self) -> int:
        return pending_rows(self.data_dir)

    def wait_drained(self, timeout: float, below: int = 0) -> float:
        """Wait until at most `below` rows are pending; return the seconds it took."""
        t0 = time.monotonic()
        while self.pending_rows() > below:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(
                    f"{self.name}: {self.pending_rows()} rows pending after {timeout}s"
                )
            time.sleep(0.1)
        return time.monotonic() - t0


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
