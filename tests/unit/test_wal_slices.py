"""Slices: ids in blocks, events encoded once, assigned ids found again by range."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.ids import COUNTER_BITS, EventIds, format_id, parse_id
from sidecar.model import Accepted, OutgoingEvent, Settlement
from sidecar.wal import peek
from sidecar.wal.slices import SliceBuilder, StoredSlice, decode_runs, decode_slice
from sidecar.wal.store import DB_NAME, Statements, connect
from sidecar.wal.writer import WalLimits, WalWriter

NOW_S = 1_700_000_000.0
T = int(NOW_S * 1000)


def assigned(event_id: str, topic: str = "t", payload: bytes | None = b"p") -> OutgoingEvent:
    return OutgoingEvent(event_id, topic, None, payload, (), assigned_id=True)


def client(event_id: str, topic: str = "t", payload: bytes | None = b"p") -> OutgoingEvent:
    return OutgoingEvent(event_id, topic, b"k", payload, (("h", b"\x00"), ("h", None)))


# -- ids -------------------------------------------------------------------------------------------


def test_a_block_is_consecutive_stamps_under_one_tail() -> None:
    ids = EventIds(clock_ns=lambda: 5_000_000_000)
    block = ids.block(3)
    assert block.first == 5_000 << COUNTER_BITS
    parsed = [parse_id(i) for i in block.ids()]
    assert parsed == [(block.first + n, block.tail) for n in range(3)]
    assert ids.block(1).first == block.first + 3  # the next block goes on, never repeats


def test_blocks_keep_growing_when_the_clock_steps_back() -> None:
    now = [9_000_000_000]
    ids = EventIds(clock_ns=lambda: now[0])
    first = ids.block(2)
    now[0] -= 5_000_000_000
    assert ids.block(1).first == first.first + 2


@pytest.mark.parametrize(
    "other",
    ["order-42", "", "0190f1d2-aaaa-4000-8000-000000000001", "0190f1d2-aaaa-7000-8000-00000000000"],
)
def test_only_ids_in_ferrys_own_format_parse(other: str) -> None:
    assert parse_id(other) is None


def test_format_and_parse_round_trip() -> None:
    stamp, tail = (123 << COUNTER_BITS) | 7, "8abc-0123456789ab"
    assert parse_id(format_id(stamp, tail)) == (stamp, tail)


# -- encoding --------------------------------------------------------------------------------------


def stored(builder: SliceBuilder, topic: str = "t") -> StoredSlice:
    row = builder.row(topic, T)
    return StoredSlice(row[1], row[0], topic, row[3], decode_runs(row[4], row[5]), T)


def test_a_slice_round_trips_assigned_client_and_foreign_ids() -> None:
    block = EventIds(clock_ns=lambda: 1_000_000).block(4)
    ids = block.ids()
    events = [
        assigned(ids[0]),
        client("client-1", payload=None),  # a tombstone with binary, repeated headers
        assigned(ids[1]),
        assigned(ids[3]),  # a gap in the stamps: a second run
        assigned("not-a-uuid"),  # assigned, but not in Ferry's format: kept in the bytes
        assigned(ids[2]),  # older than the run's end: kept in the bytes too
    ]
    builder = SliceBuilder(10)
    assert [builder.add(e) for e in events] == list(range(10, 16))
    assert builder.kept_ids == [("not-a-uuid", 14), (ids[2], 15)]
    slice_ids = builder.ids()
    assert slice_ids is not None
    assert slice_ids.runs == [(block.first, 2), (block.first + 3, 1)]
    decoded = decode_slice(stored(builder))
    assert [(d.sequence, d.event_id, d.key, d.payload, d.headers) for d in decoded] == [
        (10 + n, e.event_id, e.key, e.payload, e.headers) for n, e in enumerate(events)
    ]
    # Only ids that live in runs come back as assigned: the others are remembered by name.
    assert [d.assigned_id for d in decoded] == [True, False, True, True, False, False]
    assert [d.sequence for d in decode_slice(stored(builder), after_seq=12)] == [13, 14, 15]


def test_client_encoded_bytes_are_stored_as_they_came() -> None:
    event = client("c-1")
    builder = SliceBuilder(1)
    builder.add(event._replace(encoded=b"\x0a\x01t\x2a\x03c-1\x1a\x01p"))
    [decoded] = decode_slice(stored(builder))
    assert (decoded.topic, decoded.event_id, decoded.payload) == ("t", "c-1", b"p")


# -- the writer ------------------------------------------------------------------------------------


@pytest.fixture
def writer(data_dir: Path) -> Iterator[WalWriter]:
    w = WalWriter(
        data_dir,
        WalLimits(max_rows=1000, max_bytes=1 << 20, dedupe_window_s=100.0),
        wall_clock=lambda: NOW_S,
    )
    yield w
    w.close()


def slice_rows(data_dir: Path) -> list[tuple[int, int, str]]:
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        rows = conn.execute("SELECT first_seq, last_seq, topic FROM slices ORDER BY last_seq")
        return [(int(a), int(b), str(c)) for a, b, c in rows]
    finally:
        conn.close()


async def test_one_commit_writes_one_slice_per_topic(writer: WalWriter, data_dir: Path) -> None:
    ids = EventIds().block(5).ids()
    await asyncio.gather(
        writer.append([assigned(ids[0], "a"), assigned(ids[1], "b"), assigned(ids[2], "a")]),
        writer.append([assigned(ids[3], "a"), client("c", "b")]),
    )
    rows = slice_rows(data_dir)
    assert sum(b - a + 1 for a, b, _ in rows) == 5
    assert len(rows) <= 4  # two commits at most, two topics each
    assert peek.pending_rows(data_dir) == 5


async def test_an_assigned_id_sent_back_is_a_duplicate_pending_and_after_delivery(
    writer: WalWriter, data_dir: Path
) -> None:
    ids = EventIds().block(3).ids()
    first = await writer.append([assigned(i) for i in ids])
    assert [o.sequence for o in first if isinstance(o, Accepted)] == [1, 2, 3]
    # A client retries with the id Ferry answered: it now comes as the client's own.
    [pending] = await writer.append([client(ids[1])])
    assert pending == Accepted(ids[1], 2, True, T)
    settled = Settlement({"t": 3}, [], [])
    await asyncio.wait_for(asyncio.wrap_future(writer.retire(settled)), 5)
    assert (writer.pending_rows, slice_rows(data_dir)) == (0, [])
    [delivered] = await writer.append([client(ids[2])])
    # Delivered, in the dedupe window; a block keeps no per-event Kafka position.
    assert delivered == Accepted(ids[2], 3, True, T, None, delivered=True)
    assert writer.pending_rows == 0


async def test_a_slice_settled_halfway_stays_and_is_read_from_its_watermark(
    writer: WalWriter, data_dir: Path
) -> None:
    await writer.append([client(f"e{i}") for i in range(4)])
    ids = [("e0", 0, 0), ("e1", 0, 1)]
    await asyncio.wait_for(asyncio.wrap_future(writer.retire(Settlement({"t": 2}, ids, []))), 5)
    assert writer.pending_rows == 4  # the slice counts whole until it retires whole
    assert peek.pending_event_ids(data_dir) == ["e2", "e3"]
    reader = Statements(connect(data_dir, readonly=True))
    try:
        assert reader.settled_to() == {"t": 2}
        assert [e.event_id for e in reader.pending_for_topic("t", 2, 10)] == ["e2", "e3"]
        assert [e.event_id for e in reader.pending_for_topic("t", 2, 1)] == ["e2"]
    finally:
        reader.conn.close()
