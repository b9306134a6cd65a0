"""How the log stores events: one row per (commit, topic) slice, its events encoded once.

A slice holds the events one commit logged for one topic, with consecutive
sequences `first_seq`..`last_seq`. Its `events` blob is those events as
ferry.v1.Event messages, each framed as field 1 (the blob parses as a
ferry.v1.PublishBatchRequest): an event that came over the wire is stored as
its client encoded it. Ids Ferry assigned are not in the blob: they are
runs of consecutive stamps (`ids.py`) with one tail, taken in event order by
the events whose encoded `event_id` is empty. Pure encoding: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from sidecar._gen.ferry.v1 import publisher_pb2, record_pb2
from sidecar.ids import format_id, parse_id
from sidecar.model import Headers, OutgoingEvent, PendingEvent

#: last_seq, first_seq, topic, events, ids_tail, ids_runs, ids_high, size, published_ms
SliceRow = tuple[int, int, str, bytes, str | None, str | None, int | None, int, int]

_EVENT_TAG = b"\x0a"  # field 1, length-delimited: one event of a PublishBatchRequest
_EVENT_ID_TAG = b"\x2a"  # ferry.v1.Event.event_id (field 5), length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_event(event: OutgoingEvent, *, with_id: bool) -> bytes:
    """One event as stored; `with_id` keeps an assigned id in the bytes (outside any run)."""
    body = event.encoded
    if not body:
        message = publisher_pb2.Event(
            topic=event.topic,
            headers=[
                record_pb2.Header(key=k) if v is None else record_pb2.Header(key=k, value=v)
                for k, v in event.headers
            ],
            event_id="" if event.assigned_id else event.event_id,
        )
        if event.key is not None:
            message.key = event.key
        if event.payload is not None:
            message.payload = event.payload
        body = message.SerializeToString()
    if with_id and event.assigned_id:
        raw_id = event.event_id.encode()
        body += _EVENT_ID_TAG + _varint(len(raw_id)) + raw_id
    return body


class SliceIds(NamedTuple):
    """The assigned ids of a slice: a tail and runs of consecutive stamps, in event order."""

    tail: str
    runs: list[tuple[int, int]]  # (first stamp, count)

    @property
    def low(self) -> int:
        return self.runs[0][0]

    @property
    def high(self) -> int:
        first, count = self.runs[-1]
        return first + count - 1

    def encode_runs(self) -> str:
        return json.dumps(self.runs, separators=(",", ":"))

    def index_of(self, stamp: int) -> int | None:
        """Position of `stamp` among the slice's assigned ids."""
        before = 0
        for first, count in self.runs:
            if first <= stamp < first + count:
                return before + stamp - first
            before += count
        return None


def decode_runs(tail: str | None, runs: str | None) -> SliceIds | None:
    if tail is None or runs is None:
        return None
    return SliceIds(tail, [(int(a), int(b)) for a, b in json.loads(runs)])


class SliceBuilder:
    """Collects one topic's new events of a commit into a slice."""

    def __init__(self, first_seq: int) -> None:
        self.first_seq = first_seq
        self.parts: list[bytes] = []
        self.size = 0
        self._tail = ""
        self._runs: list[list[int]] = []
        #: Assigned ids kept in the bytes (outside any run), with their sequences: the log
        #: remembers them as client ids, to be found when a client sends one back.
        self.kept_ids: list[tuple[str, int]] = []

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.parts) - 1

    def add(self, event: OutgoingEvent) -> int:
        """Append `event`; return its sequence."""
        with_id = event.assigned_id and not self._add_stamp(event.event_id)
        body = encode_event(event, with_id=with_id)
        self.parts.append(_EVENT_TAG + _varint(len(body)) + body)
        self.size += event.size
        seq = self.first_seq + len(self.parts) - 1
        if with_id:
            self.kept_ids.append((event.event_id, seq))
        return seq

    def _add_stamp(self, event_id: str) -> bool:
        """Take an assigned id into the runs; False when it cannot be (it stays in the bytes)."""
        parsed = parse_id(event_id)
        if parsed is None:
            return False
        stamp, tail = parsed
        if not self._runs:
            self._tail = tail
        elif tail != self._tail or stamp <= self._runs[-1][0] + self._runs[-1][1] - 1:
            return False  # runs must grow, under one tail, to be looked up by range
        last = self._runs[-1] if self._runs else None
        if last is not None and last[0] + last[1] == stamp:
            last[1] += 1
        else:
            self._runs.append([stamp, 1])
        return True

    def ids(self) -> SliceIds | None:
        if not self._runs:
            return None
        return SliceIds(self._tail, [(a, b) for a, b in self._runs])

    def blob(self) -> bytes:
        return b"".join(self.parts)

    def row(self, topic: str, published_ms: int) -> SliceRow:
        """The slice as the `slices` table holds it."""
        ids = self.ids()
        return (
            self.last_seq,
            self.first_seq,
            topic,
            self.blob(),
            ids.tail if ids else None,
            ids.encode_runs() if ids else None,
            ids.high if ids else None,
            self.size,
            published_ms,
        )


class StoredSlice(NamedTuple):
    """A slice row as read back."""

    first_seq: int
    last_seq: int
    topic: str
    events: bytes
    ids: SliceIds | None
    published_ms: int


def stored_slice(row: Sequence[object]) -> StoredSlice:
    """A slice read back from (first_seq, last_seq, topic, events, ids_tail, ids_runs,
    published_ms)."""
    first, last, topic, events, tail, runs, published_ms = row
    return StoredSlice(
        int(str(first)),
        int(str(last)),
        str(topic),
        bytes(events),  # type: ignore[call-overload]
        decode_runs(tail, runs),  # type: ignore[arg-type]
        int(str(published_ms)),
    )


def _headers(headers: Iterable[record_pb2.Header]) -> Headers:
    return tuple((h.key, h.value if h.HasField("value") else None) for h in headers)


def decode_slice(stored: StoredSlice, after_seq: int = 0) -> list[PendingEvent]:
    """The slice's events with sequences above `after_seq`, in order."""
    batch = publisher_pb2.PublishBatchRequest.FromString(stored.events)
    stamps: Iterable[int] = ()
    if stored.ids is not None:
        stamps = (s for first, count in stored.ids.runs for s in range(first, first + count))
    next_stamp = iter(stamps).__next__
    tail = stored.ids.tail if stored.ids is not None else ""
    topic, published_ms, seq = stored.topic, stored.published_ms, stored.first_seq - 1
    events: list[PendingEvent] = []
    for message in batch.events:
        seq += 1
        event_id, assigned = message.event_id, False
        if not event_id:
            event_id, assigned = format_id(next_stamp(), tail), True
        if seq <= after_seq:
            continue
        has = message.HasField
        events.append(
            PendingEvent(
                seq,
                event_id,
                topic,
                message.key if has("key") else None,
                message.payload if has("payload") else None,
                _headers(message.headers) if message.headers else (),
                published_ms,
                assigned,
            )
        )
    return events


def sequence_of(stored: StoredSlice, stamp: int) -> int | None:
    """The sequence of the assigned id `stamp` in the slice, if it holds it."""
    if stored.ids is None:
        return None
    index = stored.ids.index_of(stamp)
    if index is None:
        return None
    count = stored.last_seq - stored.first_seq + 1
    if sum(n for _, n in stored.ids.runs) == count:
        return stored.first_seq + index  # every event's id is assigned: no need to decode
    for event in decode_slice(stored):
        if event.assigned_id and parse_id(event.event_id) == (stamp, stored.ids.tail):
            return event.sequence
    return None


def events_of(stored: Sequence[StoredSlice]) -> list[PendingEvent]:
    return [event for s in stored for event in decode_slice(s)]
