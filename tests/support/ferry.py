"""A real Ferry process for integration tests: start, kill -9, SIGTERM, restart, inspect its log."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._gen.ferry.v1 import publisher_pb2_grpc, subscriber_pb2_grpc
from sidecar.wal.peek import pending_rows

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FerryProcess:
    """`python -m sidecar serve` on a free loopback port, with its WAL under `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        bootstrap: str,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.bootstrap = bootstrap
        self.args = list(args)
        self.env = env or {}
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self._channel: grpc.Channel | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "sidecar", "serve",
            "--listen", self.address,
            "--kafka-bootstrap", self.bootstrap,
            "--data-dir", str(self.data_dir),
            *self.args,
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> FerryProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.wait_serving(timeout)
        return self

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"ferry exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(grpc.RpcError):
                reply = self.health().Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"ferry not serving after {timeout}s:\n{self.log_tail()}")

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return self._channel

    def publisher(self) -> publisher_pb2_grpc.PublisherStub:
        return publisher_pb2_grpc.PublisherStub(self.channel())

    def subscriber(self) -> subscriber_pb2_grpc.SubscriberStub:
        return subscriber_pb2_grpc.SubscriberStub(self.channel())

    def health(self) -> health_pb2_grpc.HealthStub:
        return health_pb2_grpc.HealthStub(self.channel())

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def kill(self) -> None:
        """SIGKILL: no drain, no clean close."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_channel()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the drain to finish; return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._close_channel()
        return code

    def restart(self, timeout: float = 30.0) -> FerryProcess:
        self.kill()
        return self.start(timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def pending_rows(self) -> int:
        """Rows still in the write-ahead log (read-only peek, safe while Ferry runs)."""
        return pending_rows(self.data_dir)

    def wait_drained(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pending_rows() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.pending_rows()
        assert left == 0, f"{left} events still pending after {timeout}s:\n{self.log_tail()}"


@contextlib.contextmanager
def running_ferry(
    data_dir: Path, bootstrap: str, *args: str, env: dict[str, str] | None = None
) -> Iterator[FerryProcess]:
    ferry = FerryProcess(data_dir, bootstrap, *args, env=env).start()
    try:
        yield ferry
    finally:
        if ferry.proc is not None and ferry.proc.poll() is None:
            ferry.terminate()


def wait_until(predicate: object, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(interval)
    return bool(callable(predicate) and predicate())


__all__: Sequence[str] = ["FerryProcess", "free_port", "running_ferry", "wait_until"]
