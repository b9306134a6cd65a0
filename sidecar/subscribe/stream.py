"""One open Subscribe stream as the dispatcher sees it: its limits and its outbox.

The outbox carries domain values (batches of leased records, ack results, a
refused request, the close reason) to the servicer, which turns them into
messages. Records granted in one dispatch travel as one batch: a queue
operation per record cost more than the record's lease. A stream that stops reading stops receiving:
`can_take` counts records not yet written as outstanding, so a stuck client
holds at most its limit in memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from sidecar.subscribe.leases import AckOutcome, Lease

if TYPE_CHECKING:
    from sidecar.kafka.ports import FetchedRecord


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Per-stream settings from OpenSubscription, already validated."""

    lease_duration: float
    max_outstanding_events: int
    max_outstanding_bytes: int


class LeasedRecord(NamedTuple):
    """A record handed to a stream under `lease`."""

    lease: Lease
    record: FetchedRecord


@dataclass(frozen=True, slots=True)
class LeasedBatch:
    """Records granted to a stream together, in grant order."""

    records: list[LeasedRecord]


@dataclass(frozen=True, slots=True)
class AckReport:
    """Results of one ack/nack/extend message, in request order."""

    results: list[tuple[str, AckOutcome, float | None]]


@dataclass(frozen=True, slots=True)
class Rejected:
    """One client request of the stream was refused; the stream and its leases stay open."""

    error: Exception


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The server ends the stream with this error (e.g. ShuttingDown)."""

    error: Exception


OutboxItem = LeasedBatch | AckReport | Rejected | StreamClosed


class Stream:
    """A subscriber connection: limits, the bytes it holds under lease, and its outbox."""

    def __init__(self, stream_id: int, options: StreamOptions) -> None:
        self.id = stream_id
        self.options = options
        self.outbox: asyncio.Queue[OutboxItem] = asyncio.Queue()
        self.leased_bytes = 0
        self.unsent = 0
        self.closed = False
        self._batch: list[LeasedRecord] = []

    def can_take(self, outstanding: int, size: int) -> bool:
        """Whether one more record of `size` bytes fits (one record always fits an empty stream)."""
        if self.closed or outstanding >= self.options.max_outstanding_events:
            return False
        if self.unsent >= self.options.max_outstanding_events:
            return False
        return outstanding == 0 or self.leased_bytes + size <= self.options.max_outstanding_bytes

    def deliver(self, item: LeasedRecord) -> None:
        """Add a granted record to the batch that `flush` queues."""
        self.leased_bytes += item.record.size
        self.unsent += 1
        self._batch.append(item)

    def flush(self) -> int:
        """Queue the records delivered since the last flush as one outbox item; their count."""
        batch = self._batch
        if not batch:
            return 0
        self.outbox.put_nowait(LeasedBatch(batch))
        self._batch = []
        return len(batch)

    def report(self, report: AckReport | Rejected) -> None:
        """Queue the answer to one client request, behind what is queued already."""
        self.outbox.put_nowait(report)

    def close(self, error: Exception) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(StreamClosed(error))

    def unread(self, batch: LeasedBatch) -> None:
        """A batch the servicer took from the outbox but did not write before the stream ended."""
        self._batch.extend(batch.records)

    def taken(self, count: int) -> None:
        """The servicer wrote `count` leased records to the wire."""
        self.unsent -= count

    def drop_unsent(self) -> set[str]:
        """Empty the outbox of a closed stream; return the ack ids the client never saw.

        A StreamClosed stays: the servicer ends the call with its error (a shutdown closes
        streams this way), and would otherwise wait for a next item that never comes.
        """
        never_sent = {leased.lease.ack_id for leased in self._batch}
        self._batch = []
        ending: StreamClosed | None = None
        while not self.outbox.empty():
            item = self.outbox.get_nowait()
            if isinstance(item, LeasedBatch):
                never_sent.update(leased.lease.ack_id for leased in item.records)
            elif isinstance(item, StreamClosed):
                ending = item
        if ending is not None:
            self.outbox.put_nowait(ending)
        self.unsent = 0
        return never_sent
