"""A subscriber in a separate process, to SIGKILL it mid-work.

`spawn_subscriber` runs ``python -m testkit.subscriber_process``: it opens a Subscribe stream,
prints one JSON line per delivery and per ack result (acking every n-th delivery) and never
exits by itself; `SubprocessSubscriber` reads those lines back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import grpc

from sidecar._gen.ferry.v1 import subscriber_pb2 as pb
from testkit.paths import ROOT
from testkit.stream_client import StreamClient
from testkit.subscribe_calls import APPLIED


class SubprocessSubscriber:
    """`python -m testkit.subscriber_process` in a child process; read its JSON lines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.deliveries: list[dict[str, Any]] = []
        self.acked: set[str] = set()  # event ids whose ack answered APPLIED
        self.opened = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            item = json.loads(line)
            with self._cond:
                if item["kind"] == "opened":
                    self.opened.set()
                elif item["kind"] == "delivery":
                    self.deliveries.append(item)
                elif item["kind"] == "acked":
                    self.acked.update(item["event_ids"])
                self._cond.notify_all()

    def wait(self, predicate: Callable[[SubprocessSubscriber], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)


def spawn_subscriber(
    address: str, message: pb.OpenSubscription, ack_every: int = 0
) -> SubprocessSubscriber:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "testkit.subscriber_process",
            "--address", address,
            "--open", message.SerializeToString().hex(),
            "--ack-every", str(ack_every),
        ],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    return SubprocessSubscriber(proc)


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--open", required=True, help="OpenSubscription, serialized, hex")
    parser.add_argument("--ack-every", type=int, default=0, help="ack every n-th delivery")
    args = parser.parse_args(argv)
    message = pb.OpenSubscription.FromString(bytes.fromhex(args.open))

    def emit(**item: Any) -> None:
        print(json.dumps(item), flush=True)

    with grpc.insecure_channel(args.address) as channel:
        client = StreamClient(channel, message).open()
        emit(kind="opened")
        seen = 0
        while not client.closed.is_set():
            batch = client.take(timeout=0.5)
            to_ack = []
            for r in batch:
                seen += 1
                emit(
                    kind="delivery",
                    event_id=r.event_id,
                    ack_id=r.ack_id,
                    attempt=r.attempt,
                    partition=r.delivery.partition,
                    offset=r.delivery.offset,
                )
                if args.ack_every and seen % args.ack_every == 0:
                    to_ack.append(r)
            if to_ack:
                results = client.ack([r.ack_id for r in to_ack])
                ok = [
                    r.event_id for r, x in zip(to_ack, results, strict=True) if x.status == APPLIED
                ]
                emit(kind="acked", event_ids=ok)
        emit(kind="closed", code=str(client.code()))
    with contextlib.suppress(Exception):
        sys.stdout.flush()


if __name__ == "__main__":
    _main()
