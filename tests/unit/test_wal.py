"""The write-ahead log's single writer, on real SQLite files in a temporary directory."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.errors import (
    ConfigError,
    DiskFull,
    EventIdConflict,
    ShuttingDown,
    StorageFailure,
    WalFull,
)
from sidecar.model import (
    Accepted,
    DeliveredEvent,
    KafkaPosition,
    OutgoingEvent,
    Rejected,
    Settlement,
)
from sidecar.wal import peek, store
from sidecar.wal.full_disk import SQLITE_FULL, storage_error
from sidecar.wal.store import DB_NAME, LOCK_NAME, Statements, connect
from sidecar.wal.writer import WalLimits, WalWriter

BIG = WalLimits(max_rows=1_000_000, max_bytes=1 << 40, dedupe_window_s=3600.0)
#: The wall clock of writers in these tests, and the publish time of what they log.
NOW_S = 1_700_000_000.0
T = int(NOW_S * 1000)

MakeWriter = Callable[..., WalWriter]


def ev(
    event_id: str,
    topic: str = "orders",
    payload: bytes | None = b"payload",
    key: bytes | None = b"key",
    headers: tuple[tuple[str, bytes | None], ...] = (),
    assigned: bool = False,
) -> OutgoingEvent:
    return OutgoingEvent(event_id, topic, key, payload, headers, assigned_id=assigned)


@pytest.fixture
def make_writer(data_dir: Path) -> Iterator[MakeWriter]:
    writers: list[WalWriter] = []

    def make(limits: WalLimits = BIG, directory: Path = data_dir, **kwargs: object) -> WalWriter:
        kwargs.setdefault("wall_clock", lambda: NOW_S)
        writer = WalWriter(directory, limits, **kwargs)  # type: ignore[arg-type]
        writers.append(writer)
        return writer

    yield make
    for writer in writers:
        writer.close()


def rows_in(data_dir: Path) -> list[tuple[int, str]]:
    """The pending events (sequence, id), read through a separate connection."""
    return [(e.sequence, e.event_id) for e in peek.pending_events(data_dir)]


def delivered_in(data_dir: Path) -> dict[str, tuple[int, int, int]]:
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        return {
            r[0]: (int(r[1]), int(r[2]), int(r[3]))
            for r in conn.execute(
                "SELECT event_id, seq, partition, kafka_offset FROM client_ids"
                " WHERE delivered_at IS NOT NULL"
            )
        }
    finally:
        conn.close()


async def retire(writer: WalWriter, settled_to: dict[str, int], *delivered: DeliveredEvent) -> None:
    """Report what the forwarder would: each topic settled up to a sequence, and the
    (client-supplied) ids Kafka acknowledged."""
    await asyncio.wait_for(
        asyncio.wrap_future(writer.retire(Settlement(settled_to, list(delivered), []))), 5
    )


def accepted(outcome: object) -> Accepted:
    assert isinstance(outcome, Accepted), outcome
    return outcome


# -- opening -------------------------------------------------------------------------------------


async def test_durable_pragmas_are_in_force(make_writer: MakeWriter, data_dir: Path) -> None:
    writer = make_writer()
    conn = writer._conn  # the writer's own connection: synchronous is per connection
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    other = connect(data_dir, readonly=True)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        other.close()


async def test_files_are_private(make_writer: MakeWriter, data_dir: Path) -> None:
    os.mkdir(data_dir, 0o755)
    os.chmod(data_dir, 0o755)  # a pre-existing, too open directory gets tightened
    old = os.umask(0o022)
    try:
        writer = make_writer()
        await writer.append([ev("a")])
    finally:
        os.umask(old)
    assert mode_of(data_dir) == 0o700
    assert mode_of(data_dir / DB_NAME) == 0o600
    assert mode_of(data_dir / LOCK_NAME) == 0o600
    for suffix in ("-wal", "-shm"):  # SQLite's side files hold event data too
        assert mode_of(data_dir / (DB_NAME + suffix)) == 0o600, suffix


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_directory_lock_refuses_a_second_writer(
    make_writer: MakeWriter, data_dir: Path
) -> None:
    first = make_writer()
    with pytest.raises(ConfigError, match="locked"):
        WalWriter(data_dir, BIG)
    with pytest.raises(ConfigError):
        store.lock_directory(data_dir)
    first.close()
    second = make_writer()  # close() released the lock
    assert accepted((await second.append([ev("a")]))[0]).sequence == 1


# -- appending -----------------------------------------------------------------------------------


async def test_append_answers_after_commit_with_sequences(
    make_writer: MakeWriter, data_dir: Path
) -> None:
    writer = make_writer()
    outcomes = await writer.append([ev("a"), ev("b"), ev("c", topic="payments")])
    assert [accepted(o).sequence for o in outcomes] == [1, 2, 3]
    assert not any(accepted(o).duplicate for o in outcomes)
    assert rows_in(data_dir) == [(1, "a"), (2, "b"), (3, "c")]  # visible to another connection
    assert writer.pending_rows == 3
    assert writer.pending_bytes == sum(e.size for e in (ev("a"), ev("b"), ev("c")))


async def test_group_commit(make_writer: MakeWriter) -> None:
    writer = make_writer()
    outcomes = await asyncio.gather(*(writer.append([ev(f"id-{i}")]) for i in range(500)))
    sequences = sorted(accepted(o[0]).sequence for o in outcomes)
    assert sequences == list(range(1, 501))
    assert writer.pending_rows == 500
    assert 1 <= writer.commits <= 50, writer.commits  # far fewer fsyncs than appends


async def test_stored_event_round_trips(make_writer: MakeWriter, data_dir: Path) -> None:
    writer = make_writer()
    headers = (("h", "é日".encode()), ("z", b""), ("h", b"\x00\xff\x80"), ("n", None))
    original = ev("a", payload=b"\x00\xffbinary", key=None, headers=headers)
    tombstone = ev("b", payload=None, key=b"")
    await writer.append([original, tombstone])
    reader = Statements(connect(data_dir, readonly=True))
    try:
        rows = reader.pending_for_topic("orders", 0, 10)
    finally:
        reader.conn.close()
    assert [(r.event_id, r.key, r.payload, r.headers, r.publish_time_ms) for r in rows] == [
        ("a", None, b"\x00\xffbinary", headers, T),
        ("b", b"", None, (), T),
    ]


# -- dedupe --------------------------------------------------------------------------------------


async def test_same_id_twice_in_one_batch(make_writer: MakeWriter, data_dir: Path) -> None:
    writer = make_writer()
    first, second = await writer.append([ev("a"), ev("a")])
    assert accepted(first) == Accepted("a", 1, False, T)
    assert accepted(second) == Accepted("a", 1, True, T)
    assert rows_in(data_dir) == [(1, "a")]
    assert writer.pending_rows == 1


async def test_same_id_in_a_later_batch(make_writer: MakeWriter, data_dir: Path) -> None:
    writer = make_writer()
    await writer.append([ev("a"), ev("b")])
    [again] = await writer.append([ev("b")])
    assert accepted(again) == Accepted("b", 2, True, T)
    assert writer.pending_rows == 2
    assert len(rows_in(data_dir)) == 2


async def test_same_id_concurrently(make_writer: MakeWriter, data_dir: Path) -> None:
    writer = make_writer()
    results = await asyncio.gather(*(writer.append([ev("same")]) for _ in range(50)))
    outcomes = [accepted(r[0]) for r in results]
    assert sum(not o.duplicate for o in outcomes) == 1
    assert {o.sequence for o in outcomes} == {1}
    assert rows_in(data_dir) == [(1, "same")]
    assert writer.pending_rows == 1


@pytest.mark.parametrize(
    "other",
    [
        ev("a", payload=b"other payload"),
        ev("a", topic="payments"),
        ev("a", key=b"other key"),
        ev("a", key=None),
        ev("a", payload=None),
        ev("a", headers=(("h", b"v"),)),
        ev("a", headers=(("h", None),)),
    ],
    ids=["payload", "topic", "key", "no-key", "null-payload", "headers", "null-header"],
)
async def test_same_id_with_other_content_is_a_conflict(
    make_writer: MakeWriter, data_dir: Path, other: OutgoingEvent
) -> None:
    writer = make_writer()
    await writer.append([ev("a")])
    [outcome] = await writer.append([other])
    assert isinstance(outcome, Rejected)
    assert isinstance(outcome.error, EventIdConflict)
    # Within one batch too: the first wins, the second is rejected, the rest goes in.
    results = await writer.append([ev("b"), other._replace(event_id="b"), ev("c")])
    assert accepted(results[0]).sequence == 2
    assert isinstance(results[1], Rejected)
    assert isinstance(results[1].error, EventIdConflict)
    assert accepted(results[2]).sequence == 3
    assert [r[1] for r in rows_in(data_dir)] == ["a", "b", "c"]


async def test_assigned_ids_skip_the_dedupe_lookup(
    make_writer: MakeWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    real_client, real_assigned = Statements.find_client_id, Statements.find_assigned_id

    def find_client_id(self: Statements, event_id: str) -> object:
        lookups.append(event_id)
        return real_client(self, event_id)

    def find_assigned_id(self: Statements, event_id: str) -> object:
        lookups.append(event_id)
        return real_assigned(self, event_id)

    monkeypatch.setattr(Statements, "find_client_id", find_client_id)
    monkeypatch.setattr(Statements, "find_assigned_id", find_assigned_id)
    writer = make_writer()
    outcomes = await writer.append([ev(f"assigned-{i}", assigned=True) for i in range(5)])
    assert [accepted(o).sequence for o in outcomes] == [1, 2, 3, 4, 5]
    assert lookups == []
    await writer.append([ev("client-id")])
    assert "client-id" in lookups


async def test_failed_commit_changes_nothing_and_the_writer_goes_on(
    make_writer: MakeWriter, data_dir: Path
) -> None:
    writer = make_writer()
    await writer.append([ev("a")])
    before = (writer.pending_rows, writer.pending_bytes)
    # An assigned id skips the dedupe look-up, so a (contrived) collision reaches the UNIQUE
    # constraint and fails the whole transaction.
    with pytest.raises(StorageFailure):
        await writer.append([ev("b"), ev("a", assigned=True)])
    assert rows_in(data_dir) == [(1, "a")]  # "b" was rolled back too
    assert (writer.pending_rows, writer.pending_bytes) == before
    [outcome] = await writer.append([ev("b")])
    assert accepted(outcome).duplicate is False


# -- caps ----------------------------------------------------------------------------------------


async def test_row_cap_refuses_the_whole_request(make_writer: MakeWriter, data_dir: Path) -> None:
    writer = make_writer(WalLimits(max_rows=3, max_bytes=1 << 30, dedupe_window_s=60))
    await writer.append([ev("a"), ev("b")])
    with pytest.raises(WalFull) as info:
        await writer.append([ev("c"), ev("d")])
    assert info.value.retry_after > 0
    assert [r[1] for r in rows_in(data_dir)] == ["a", "b"]  # not even "c"
    assert writer.pending_rows == 2
    [outcome] = await writer.append([ev("c")])  # exactly at the cap is fine
    assert accepted(outcome).sequence == 3
    with pytest.raises(WalFull):
        await writer.append([ev("d")])
    # A slice leaves the log whole: "a" and "b" came in one commit.
    await retire(writer, {"orders": 1}, ("a", 0, 0))
    with pytest.raises(WalFull):
        await writer.append([ev("d")])
    await retire(writer, {"orders": 2}, ("b", 0, 1))
    assert accepted((await writer.append([ev("d")]))[0]).sequence == 4  # room again


async def test_byte_cap_refuses_the_whole_request(make_writer: MakeWriter, data_dir: Path) -> None:
    one = ev("a", payload=b"x" * 90, key=b"0123456789")  # 100 bytes
    assert one.size == 100
    writer = make_writer(WalLimits(max_rows=1000, max_bytes=250, dedupe_window_s=60))
    await writer.append([one, ev("b", payload=b"x" * 90, key=b"0123456789")])
    with pytest.raises(WalFull):
        await writer.append(
            [ev("c", payload=b"x" * 5, key=None), ev("d", payload=b"x" * 46, key=None)]
        )
    assert [r[1] for r in rows_in(data_dir)] == ["a", "b"]
    assert writer.pending_bytes == 200
    [outcome] = await writer.append([ev("c", payload=b"x" * 50, key=None)])  # exactly 250
    assert accepted(outcome).sequence == 3
    assert writer.pending_bytes == 250


# -- retiring ------------------------------------------------------------------------------------


async def test_retire_removes_rows_and_remembers_positions(
    make_writer: MakeWriter, data_dir: Path
) -> None:
    writer = make_writer()
    events = [ev("a", payload=b"1"), ev("b", payload=b"22"), ev("c", topic="t2", payload=b"333")]
    await writer.append(events)
    await retire(
        writer,
        {"orders": 1, "t2": 3},
        ("a", 2, 40),
        ("c", 0, 7),
    )
    assert rows_in(data_dir) == [(2, "b")]
    # "a" and "b" share a slice, which retires whole once "b" is settled too.
    assert writer.pending_rows == 2
    assert writer.pending_bytes == events[0].size + events[1].size
    assert delivered_in(data_dir) == {"a": (1, 2, 40), "c": (3, 0, 7)}

    # A later duplicate is answered with the stored position and sequence; nothing is written.
    [dup] = await writer.append([ev("a", payload=b"1")])
    assert accepted(dup) == Accepted("a", 1, True, T, KafkaPosition(2, 40), delivered=True)
    assert writer.pending_rows == 2
    # Other content under a delivered id is still a conflict.
    [conflict] = await writer.append([ev("c", topic="t2", payload=b"different")])
    assert isinstance(conflict, Rejected)
    assert isinstance(conflict.error, EventIdConflict)

    # A repeated delivery report of a retired row changes nothing.
    await retire(writer, {"t2": 3}, ("c", 0, 7))
    assert (writer.pending_rows, writer.pending_bytes) == (2, events[0].size + events[1].size)
    await retire(writer, {"orders": 2}, ("b", 2, 41))
    assert (writer.pending_rows, writer.pending_bytes, rows_in(data_dir)) == (0, 0, [])


async def test_zero_dedupe_window_keeps_no_ids(make_writer: MakeWriter, data_dir: Path) -> None:
    writer = make_writer(WalLimits(max_rows=100, max_bytes=1 << 20, dedupe_window_s=0))
    await writer.append([ev("a")])
    await retire(writer, {"orders": 1}, ("a", 0, 1))
    assert delivered_in(data_dir) == {}
    [again] = await writer.append([ev("a")])
    assert accepted(again) == Accepted("a", 2, False, T)


async def test_old_delivered_ids_are_pruned(make_writer: MakeWriter, data_dir: Path) -> None:
    now = [1_000.0]
    writer = make_writer(
        WalLimits(max_rows=100, max_bytes=1 << 20, dedupe_window_s=100), wall_clock=lambda: now[0]
    )
    await writer.append([ev("a")])
    await retire(writer, {"orders": 1}, ("a", 0, 5))
    now[0] = 1_090.0  # inside the window, and a prune runs (last one was 90 s ago)
    await writer.append([ev("x1")])
    assert "a" in delivered_in(data_dir)
    [dup] = await writer.append([ev("a")])
    assert accepted(dup).position == KafkaPosition(0, 5)

    now[0] = 1_200.0  # "a" was delivered 200 s ago, the window is 100 s
    await writer.append([ev("x2")])  # any commit prunes
    assert "a" not in delivered_in(data_dir)
    [fresh] = await writer.append([ev("a")])
    assert accepted(fresh).duplicate is False
    assert accepted(fresh).sequence > 1


# -- lifecycle ---------------------------------------------------------------------------------


async def test_append_after_close_is_shutting_down(make_writer: MakeWriter) -> None:
    writer = make_writer()
    writer.close()
    with pytest.raises(ShuttingDown):
        await writer.append([ev("a")])


async def test_retire_after_close_fails_fast(make_writer: MakeWriter) -> None:
    writer = make_writer()
    await writer.append([ev("a")])
    writer.close()
    future = writer.retire(Settlement({"orders": 1}, [("a", 0, 0)], []))
    with pytest.raises(ShuttingDown):
        future.result(timeout=0.5)


async def test_a_failing_on_commit_callback_does_not_hang_appends(
    make_writer: MakeWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashes: list[object] = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)

    def on_commit(topics: dict[str, int]) -> None:
        raise RuntimeError("callback failed")

    writer = make_writer(on_commit=on_commit)
    try:
        await asyncio.wait_for(writer.append([ev("a")]), 1.0)
        await asyncio.wait_for(writer.append([ev("b")]), 1.0)
    finally:
        writer.close()


async def test_close_finishes_queued_work(make_writer: MakeWriter) -> None:
    writer = make_writer()
    pending = [asyncio.ensure_future(writer.append([ev(f"q{i}")])) for i in range(20)]
    await asyncio.sleep(0)  # every append is queued
    await asyncio.to_thread(writer.close)
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(r, list) for r in results), results


async def test_reopen_keeps_pending_rows_and_never_reuses_sequences(
    make_writer: MakeWriter, data_dir: Path
) -> None:
    writer = make_writer()
    await writer.append([ev("a"), ev("b", payload=b"bb")])
    await writer.append([ev("c")])
    await writer.append([ev("x", topic="t2", payload=b"xx")])
    delivered = [(i, 0, n) for n, i in enumerate("abc")]
    await retire(writer, {"orders": 3}, *delivered)  # up to the highest "orders" sequence
    writer.close()

    reopened = make_writer()
    assert reopened.pending_rows == 1
    assert reopened.pending_bytes == ev("x", topic="t2", payload=b"xx").size
    assert rows_in(data_dir) == [(4, "x")]
    [outcome] = await reopened.append([ev("d")])
    assert accepted(outcome).sequence == 5  # AUTOINCREMENT never hands a number out twice
    [dup] = await reopened.append([ev("b", payload=b"bb")])
    # Dedupe survives a restart, with where Kafka stored the event.
    assert accepted(dup) == Accepted("b", 2, True, T, KafkaPosition(0, 1), delivered=True)
    [pending] = await reopened.append([ev("x", topic="t2", payload=b"xx")])
    assert accepted(pending) == Accepted("x", 4, True, T)


async def test_on_commit_gets_the_highest_sequence_per_topic(make_writer: MakeWriter) -> None:
    calls: list[dict[str, int]] = []
    writer = make_writer(on_commit=calls.append)
    await writer.append(
        [ev("a1", topic="t1"), ev("b1", topic="t2"), ev("a2", topic="t1"), ev("c1", topic="t3")]
    )
    # One slice per topic, its sequences consecutive: t1's two events come first.
    assert calls == [{"t1": 2, "t2": 3, "t3": 4}]
    await writer.append([ev("a1", topic="t1")])  # only a duplicate: nothing new to forward
    await retire(writer, {"t1": 1}, ("a1", 0, 0))
    assert len(calls) == 1
    await writer.append([ev("b2", topic="t2")])
    assert calls[-1] == {"t2": 5}


# -- storage errors ------------------------------------------------------------------------------


def real_sqlite_full(tmp_path: Path) -> sqlite3.Error:
    """A genuine SQLITE_FULL from SQLite (max_page_count is per connection, so this cannot
    be imposed on the writer's own connection from outside; it is used for the mapping only)."""
    conn = sqlite3.connect(tmp_path / "full.sqlite3")
    try:
        conn.execute("CREATE TABLE t (x BLOB)")
        conn.execute("PRAGMA max_page_count = 3")
        with pytest.raises(sqlite3.Error) as info:
            conn.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
        return info.value
    finally:
        conn.close()


def test_sqlite_full_maps_to_disk_full(tmp_path: Path) -> None:
    exc = real_sqlite_full(tmp_path)
    assert exc.sqlite_errorcode == SQLITE_FULL
    error = storage_error(exc)
    assert isinstance(error, DiskFull)
    assert error.retry_after > 0


def test_other_sqlite_errors_map_to_storage_failure() -> None:
    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorcode = 10  # SQLITE_IOERR
    error = storage_error(exc)
    assert isinstance(error, StorageFailure)
    assert not isinstance(error, DiskFull)
    assert "disk I/O error" in str(error)
