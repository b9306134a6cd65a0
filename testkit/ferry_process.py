"""A real Ferry process (`python -m sidecar serve`) on a free loopback port: start, wait until
it serves, kill -9, SIGTERM, restart, inspect its log and its write-ahead log.

`FerryProcess` started with a `Children` registry (benchmarks, fault runs) is stopped with the
registry and dies with its starter (parent-death signal); without one (tests), whoever
started it kills it (`Ferries`, `running_ferry`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._gen.ferry.v1 import publisher_pb2_grpc, subscriber_pb2_grpc
from sidecar.wal.peek import pending_rows
from testkit.client_access import ClientAccess
from testkit.ferry_log import json_entries, tail
from testkit.paths import ROOT
from testkit.ports import HOST, free_port
from testkit.processes import Children
from testkit.waiting import wait_until

STOP_TIMEOUT_S = 30.0  # a SIGTERMed Ferry drains its streams and lanes first
PLAINTEXT = ClientAccess()


def wait_serving(
    address: str,
    proc: subprocess.Popen[bytes],
    timeout: float,
    log: Path,
    interval: float = 0.05,
    access: ClientAccess = PLAINTEXT,
) -> None:
    """Poll the gRPC health service at `address` (reached with `access`) until it answers
    SERVING; RuntimeError (with the tail of `log`) if `proc` exits first, TimeoutError after
    `timeout` s."""
    deadline = time.monotonic() + timeout
    with access.channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{address} exited with {proc.returncode}:\n{tail(log)}")
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(interval)
    raise TimeoutError(f"{address} not serving after {timeout}s:\n{tail(log)}")


class FerryProcess:
    """`python -m sidecar serve` on a free loopback port, with its WAL under `data_dir` and its
    output appended to `log_path` (default: ``<data_dir>.log`` next to it). `args` and `env`
    (extra environment) apply from the next `start`. With `socket_path` it listens on that unix
    socket instead of a port; `access` is how clients reach it (TLS, client certificate,
    token), for its `channel` and the start's health check. Its metrics endpoint listens on a
    loopback port the kernel picks (`metrics_url`), unless `args` say otherwise."""

    def __init__(
        self,
        data_dir: Path,
        bootstrap: str,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        name: str = "ferry",
        children: Children | None = None,
        log_path: Path | None = None,
        socket_path: Path | None = None,
        access: ClientAccess = PLAINTEXT,
    ) -> None:
        self.data_dir = data_dir
        self.socket_path = socket_path
        self.access = access
        self.bootstrap = bootstrap
        self.args = list(args)
        self.env = env or {}
        self.port = port or free_port()
        self.name = name
        self.children = children
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0  # from spawning to SERVING, of the last start
        self._channel: grpc.Channel | None = None

    @property
    def address(self) -> str:
        """The gRPC target: a loopback host:port, or unix:///path with `socket_path`."""
        if self.socket_path is not None:
            return f"unix://{self.socket_path.resolve()}"
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "sidecar", "serve",
            "--listen", self.address,
            "--kafka-bootstrap", self.bootstrap,
            "--data-dir", str(self.data_dir),
            "--metrics-listen", f"{HOST}:0",
            *self.args,
        ]  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> FerryProcess:
        """Spawn and wait until it serves (`wait_serving`)."""
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is not None:
            self._exited()  # it died on its own: forget it before the next one starts
        if self.children is not None:
            self.proc = self.children.spawn(
                self.name, self.command(), self.log_path, stop_timeout=STOP_TIMEOUT_S,
                env=self.env,
            )  # fmt: skip
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self.command(),
                    cwd=ROOT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        self.wait_serving(timeout)
        self.startup_s = time.monotonic() - started
        return self

    def wait_serving(self, timeout: float) -> None:
        assert self.proc is not None, f"{self.name} was never started"
        wait_serving(self.address, self.proc, timeout, self.log_path, access=self.access)

    def kill(self) -> None:
        """SIGKILL: no drain, no clean close."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._exited()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the drain to finish; return the exit code."""
        assert self.proc is not None, f"{self.name} was never started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._exited()
        return code

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited after `timeout` s; its exit code."""
        if self.proc is None:
            return None
        try:
            return self.terminate(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def restart(self, timeout: float = 30.0) -> FerryProcess:
        self.kill()
        return self.start(timeout)

    def _exited(self) -> None:
        if self.children is not None and self.proc is not None:
            self.children.forget(self.proc)
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # -- clients -----------------------------------------------------------------------------

    def channel(self) -> grpc.Channel:
        """One channel to this process, reused until it exits."""
        if self._channel is None:
            self._channel = self.access.channel(self.address)
        return self._channel

    def new_channel(self, access: ClientAccess | None = None) -> grpc.Channel:
        """A channel of its own (a new connection), with `access` (default: `self.access`);
        the caller closes it."""
        return (access or self.access).channel(self.address)

    def publisher(self) -> publisher_pb2_grpc.PublisherStub:
        return publisher_pb2_grpc.PublisherStub(self.channel())

    def subscriber(self) -> subscriber_pb2_grpc.SubscriberStub:
        return subscriber_pb2_grpc.SubscriberStub(self.channel())

    def health(self) -> health_pb2_grpc.HealthStub:
        return health_pb2_grpc.HealthStub(self.channel())

    # -- inspection --------------------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def metrics_url(self) -> str:
        """The metrics endpoint of the running process (its `metrics_serving` log line: the
        last one is this start's, logged before it serves gRPC)."""
        entries = list(json_entries(self.log_path, "metrics_serving"))
        assert entries, f"{self.name} serves no metrics:\n{self.log_tail()}"
        return f"http://{HOST}:{entries[-1]['port']}/metrics"

    def forwarder_pid(self, timeout: float = 30.0) -> int:
        """The pid of the forwarder process started last (its `forwarder_process_started`
        line), waiting up to `timeout` s for the first one to start."""
        wait_until(lambda: any(json_entries(self.log_path, "forwarder_process_started")), timeout)
        entries = list(json_entries(self.log_path, "forwarder_process_started"))
        assert entries, f"{self.name} started no forwarder process:\n{self.log_tail()}"
        pid: int = entries[-1]["pid"]
        return pid

    def pending_rows(self) -> int:
        """Rows still in the write-ahead log (read-only peek, safe while Ferry runs)."""
        return pending_rows(self.data_dir)

    def wait_drained(self, timeout: float = 60.0, below: int = 0) -> float:
        """Wait until at most `below` rows are pending; the seconds that took. An
        AssertionError (with the log's tail) after `timeout` s."""
        started = time.monotonic()
        if not wait_until(lambda: self.pending_rows() <= below, timeout):
            left = self.pending_rows()
            raise AssertionError(
                f"{self.name}: {left} events still pending after {timeout}s:\n{self.log_tail()}"
            )
        return time.monotonic() - started


@contextlib.contextmanager
def running_ferry(
    data_dir: Path, bootstrap: str, *args: str, env: dict[str, str] | None = None
) -> Iterator[FerryProcess]:
    """A started Ferry, SIGTERMed (drained) at the end of the block if it still runs."""
    ferry = FerryProcess(data_dir, bootstrap, *args, env=env).start()
    try:
        yield ferry
    finally:
        if ferry.alive():
            ferry.terminate()


class Ferries:
    """Ferry processes of one test, each with its own data dir under `root`; `close()` kills
    them all."""

    def __init__(self, root: Path, bootstrap: str) -> None:
        self.root = root
        self.bootstrap = bootstrap
        self.started: list[FerryProcess] = []

    def start(
        self, *args: str, name: str | None = None, bootstrap: str | None = None
    ) -> FerryProcess:
        """Start a Ferry with `args` (on `bootstrap` instead of the fleet's, when given)."""
        data_dir = self.root / (name or f"ferry{len(self.started)}")
        ferry = FerryProcess(data_dir, bootstrap or self.bootstrap, *args).start()
        self.started.append(ferry)
        return ferry

    def close(self) -> None:
        for ferry in self.started:
            ferry.kill()
