"""A subscriber that acks what its stream delivers, on a thread of its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from sidecar._gen.ferry.v1 import subscriber_pb2 as pb
from testkit.stream_client import Received, StreamClient
from testkit.subscribe_calls import ACK_CHUNK, APPLIED


class AckingWorker:
    """Acks everything a stream delivers (after `work_s` per batch); records what was APPLIED.

    `ack_filter` may decline deliveries (they are then left to expire, or nacked with `nack`).
    """

    def __init__(
        self,
        client: StreamClient,
        *,
        work_s: float = 0.0,
        batch: int | None = None,
        ack_filter: Callable[[Received], bool] | None = None,
        nack: bool = False,
        nack_delay_s: float | None = None,
    ) -> None:
        self.client = client
        self.work_s = work_s
        self.batch = batch
        self.ack_filter = ack_filter
        self.nack = nack
        self.nack_delay_s = nack_delay_s
        self.applied: dict[str, Received] = {}  # event id -> the delivery acked
        self.statuses: list[int] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._futures: list[tuple[list[Received], Future[list[pb.AckIdResult]]]] = []
        self._thread = threading.Thread(target=self._run, name="acking-worker", daemon=True)

    def start(self) -> AckingWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._collect(block=True)

    def _run(self) -> None:
        while not self._stop.is_set() and not self.client.closed.is_set():
            got = self.client.take(timeout=0.2, at_most=self.batch)
            if not got:
                self._collect(block=False)
                continue
            if self.work_s:
                time.sleep(self.work_s)
            accepted: list[Received] = []
            declined: list[Received] = []
            for r in got:
                (accepted if self.ack_filter is None or self.ack_filter(r) else declined).append(r)
            for i in range(0, len(accepted), ACK_CHUNK):
                chunk = accepted[i : i + ACK_CHUNK]
                self._futures.append((chunk, self.client.ack_async(r.ack_id for r in chunk)))
            for i in range(0, len(declined) if self.nack else 0, ACK_CHUNK):
                chunk = declined[i : i + ACK_CHUNK]
                self.client.nack_async((r.ack_id for r in chunk), self.nack_delay_s)
            self._collect(block=False)

    def _collect(self, block: bool) -> None:
        keep = []
        for received, future in self._futures:
            if not block and not future.done():
                keep.append((received, future))
                continue
            try:
                results = future.result(10)
            except BaseException as exc:
                self.errors.append(exc)
                continue
            for r, result in zip(received, results, strict=True):
                self.statuses.append(result.status)
                if result.status == APPLIED:
                    self.applied[r.event_id] = r
        self._futures = keep
