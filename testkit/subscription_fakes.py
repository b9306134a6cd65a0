"""Stand-ins around a `Subscription` for pure-logic tests (no Kafka, no threads): a consumer
that records what the subscription asks of it, one that ignores it, a dead-letter sink that
keeps what it is given, and readers of a stream's outbox."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.kafka.ports import CommitOffset
from sidecar.model import Accepted, Outcome, OutgoingEvent
from sidecar.subscribe.stream import LeasedBatch, LeasedRecord, Stream, StreamOptions


class IdleConsumer:
    """A consumer control (and registry handle) that does nothing."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def commit(self, offsets: list[CommitOffset]) -> None:
        pass

    def hold_records(self, holding: bool) -> None:
        pass

    def want_records(self, wanted: bool) -> None:
        pass


@dataclass
class RecordingConsumer(IdleConsumer):
    """A consumer control that remembers commits, holds and wishes for records."""

    commits: list[list[CommitOffset]] = field(default_factory=list)
    holding: bool = False
    wanted: list[bool] = field(default_factory=list)

    def commit(self, offsets: list[CommitOffset]) -> None:
        self.commits.append(offsets)

    def hold_records(self, holding: bool) -> None:
        self.holding = holding

    def want_records(self, wanted: bool) -> None:
        self.wanted.append(wanted)


@dataclass
class DeadLetterRecorder:
    """A dead-letter sink that accepts every event and keeps it in `written`."""

    written: list[OutgoingEvent] = field(default_factory=list)

    async def __call__(self, events: list[OutgoingEvent]) -> list[Outcome]:
        self.written.extend(events)
        return [Accepted(e.event_id, len(self.written), False, 0) for e in events]


async def no_dead_letters(events: list[OutgoingEvent]) -> list[Outcome]:
    """A dead-letter sink for subscriptions that have none."""
    return []


def stream_options(max_events: int = 100, lease: float = 10.0) -> StreamOptions:
    """A stream's options with room enough in bytes never to bind."""
    return StreamOptions(lease, max_events, 1 << 30)


def drain(stream: Stream) -> list[LeasedRecord]:
    """Every leased record in the stream's outbox, taken as the servicer takes them."""
    out: list[LeasedRecord] = []
    while not stream.outbox.empty():
        item = stream.outbox.get_nowait()
        if isinstance(item, LeasedBatch):
            out.extend(item.records)
    stream.taken(len(out))
    return out
