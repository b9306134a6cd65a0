"""The writer keeps the -wal file bounded and never lets a retirement hold up a publish."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sidecar.model import Accepted, OutgoingEvent, Settlement
from sidecar.wal import peek
from sidecar.wal import writer as writer_module
from sidecar.wal.checkpoint import MIN_HARD_BOUND, Checkpointer
from sidecar.wal.store import DB_NAME, connect
from sidecar.wal.writer import WalLimits, WalWriter

LIMITS = WalLimits(max_rows=1_000_000, max_bytes=1 << 40, dedupe_window_s=3600.0)


@pytest.fixture
def writer(data_dir: Path) -> Iterator[WalWriter]:
    w = WalWriter(data_dir, LIMITS)
    yield w
    w.close()


def event(i: int, topic: str = "t", payload: bytes = b"p") -> OutgoingEvent:
    return OutgoingEvent(f"e{i}", topic, None, payload, (), assigned_id=True)


def wal_size(data_dir: Path) -> int:
    path = data_dir / f"{DB_NAME}-wal"
    return path.stat().st_size if path.exists() else 0


async def test_a_reader_in_a_long_read_cannot_grow_the_wal_past_its_bound(
    writer: WalWriter, data_dir: Path
) -> None:
    reader = connect(data_dir, readonly=True)
    reading = threading.Event()

    def hold_a_snapshot() -> None:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM slices").fetchone()
        reading.set()
        time.sleep(1.0)
        reader.execute("COMMIT")

    holder = threading.Thread(target=hold_a_snapshot)
    holder.start()
    reading.wait()
    payload = b"x" * 16_384
    largest_commit = 0
    for i in range(0, 600, 10):  # ~9.8 MB of payloads, more than twice the bound
        before = wal_size(data_dir)
        await writer.append([event(j, payload=payload) for j in range(i, i + 10)])
        largest_commit = max(largest_commit, wal_size(data_dir) - before)
        assert wal_size(data_dir) <= MIN_HARD_BOUND + 2 * largest_commit + 65_536
    holder.join()
    reader.close()
    assert writer.pending_rows == 600


async def test_commits_never_checkpoint_and_the_checkpointer_keeps_the_wal_small(
    writer: WalWriter, data_dir: Path
) -> None:
    wal = writer._wal
    assert writer._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    loop = asyncio.get_running_loop()
    payload = b"x" * 16_384
    for i in range(0, 600, 10):  # ~9.8 MB of payloads: more than twice the hard bound
        ran = wal.checkpointer.checkpoints
        await writer.append([event(j, payload=payload) for j in range(i, i + 10)])
        deadline = loop.time() + 30
        while wal.checkpointer.checkpoints == ran:  # each commit is followed by a checkpoint
            assert loop.time() < deadline, "the checkpointer did not run after a commit"
            await asyncio.sleep(0.005)
    # Checkpointed as it went, the file never reached the bound where commits must wait.
    assert wal.hard_truncations == 0
    assert wal_size(data_dir) < wal.hard


async def test_a_huge_backlog_of_settlements_is_spread_and_publishes_go_first(
    writer: WalWriter, data_dir: Path
) -> None:
    count = 3 * writer_module.RETIRE_ROWS_ALONE + 10
    client_ids = [e._replace(assigned_id=False) for e in map(event, range(count))]
    outcomes = await writer.append(client_ids)
    seqs = [o.sequence for o in outcomes if isinstance(o, Accepted)]
    commits = writer.commits
    # The forwarder reports in settlements of up to a page of client ids each.
    page = 1000
    retired = [
        writer.retire(
            Settlement(
                {"t": seqs[min(i + page, count) - 1]},
                [(f"e{j}", 0, j) for j in range(i, min(i + page, count))],
                [],
            )
        )
        for i in range(0, count, page)
    ]
    [published] = await writer.append([event(count)])
    assert isinstance(published, Accepted)
    await asyncio.wait_for(asyncio.wrap_future(retired[-1]), 10)
    assert all(f.done() for f in retired)
    assert writer.commits - commits >= 4, "settlements this large take several commits"
    assert writer.pending_rows == 1


async def test_retiring_one_of_interleaved_topics_removes_exactly_its_events(
    writer: WalWriter, data_dir: Path
) -> None:
    outcomes = await writer.append([event(i, topic="ab"[i % 2]) for i in range(10)])
    seqs = [o.sequence for o in outcomes if isinstance(o, Accepted)]
    delivered = [(f"e{i}", 0, i) for i in range(1, 10, 2)]
    b_settled = max(s for i, s in enumerate(seqs) if i % 2)
    # Reported twice over (a repeated report changes nothing).
    settlement = Settlement({"b": b_settled}, delivered + delivered[:2], [])
    await asyncio.wait_for(asyncio.wrap_future(writer.retire(settlement)), 5)
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        remembered = conn.execute(
            "SELECT COUNT(*) FROM client_ids WHERE delivered_at IS NOT NULL"
        ).fetchone()[0]
    finally:
        conn.close()
    assert peek.pending_event_ids(data_dir) == [f"e{i}" for i in range(0, 10, 2)]
    assert remembered == 5  # these ids are not in Ferry's format: remembered one by one
    assert writer.pending_rows == 5


@pytest.fixture
async def patient_writer(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[WalWriter]:
    """A writer whose retirements never commit alone on their own timer."""
    monkeypatch.setattr(writer_module, "RETIRE_ALONE_AFTER_S", 30.0)
    writer = WalWriter(data_dir, LIMITS)
    yield writer
    await asyncio.to_thread(writer.close)


async def log_and_retire(writer: WalWriter) -> concurrent.futures.Future[None]:
    """Log one event, then ask for its retirement; the retirement's future."""
    [first] = await writer.append([event(1)])
    assert isinstance(first, Accepted)
    return writer.retire(Settlement({"t": first.sequence}, [], []))


async def test_retirements_wait_for_an_append_to_share_its_commit(
    patient_writer: WalWriter,
) -> None:
    writer = patient_writer
    retired = await log_and_retire(writer)
    commits = writer.commits
    await asyncio.sleep(0.2)
    assert not retired.done()
    assert (writer.commits, writer.pending_rows) == (commits, 1)
    await writer.append([event(2)])  # one commit: the append and the retirement
    await asyncio.wait_for(asyncio.wrap_future(retired), 5)
    assert (writer.commits, writer.pending_rows) == (commits + 1, 1)


async def test_retirements_that_arrive_while_others_wait_share_one_commit(
    patient_writer: WalWriter,
) -> None:
    writer = patient_writer
    logged = [await writer.append([event(i)]) for i in range(3)]
    sequences = [r.sequence for [r] in logged if isinstance(r, Accepted)]
    retired = [writer.retire(Settlement({"t": seq}, [], [])) for seq in sequences]
    await asyncio.sleep(0.2)
    commits = writer.commits
    assert not any(f.done() for f in retired)
    await writer.append([event(3)])
    await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, retired)), 5)
    assert (writer.commits, writer.pending_rows) == (commits + 1, 1)


async def test_a_retirement_after_the_backlog_emptied_still_commits_alone(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retirements that find others waiting do not wake the writer; once those committed, the
    # next one must wake it again, or it would wait for an append that may never come.
    monkeypatch.setattr(writer_module, "RETIRE_ALONE_AFTER_S", 0.05)
    writer = WalWriter(data_dir, LIMITS)
    try:
        for i in range(3):
            [logged] = await writer.append([event(i)])
            assert isinstance(logged, Accepted)
            retired = writer.retire(Settlement({"t": logged.sequence}, [], []))
            await asyncio.wait_for(asyncio.wrap_future(retired), 5)
            assert writer.pending_rows == 0
    finally:
        await asyncio.to_thread(writer.close)


async def test_retire_now_commits_retirements_without_an_append(
    patient_writer: WalWriter,
) -> None:
    retired = await log_and_retire(patient_writer)
    patient_writer.retire_now()
    await asyncio.wait_for(asyncio.wrap_future(retired), 10)
    assert patient_writer.pending_rows == 0


async def test_retirements_alone_commit_after_a_short_wait(writer: WalWriter) -> None:
    retired = await log_and_retire(writer)
    await asyncio.wait_for(asyncio.wrap_future(retired), writer_module.RETIRE_ALONE_AFTER_S + 10)
    assert writer.pending_rows == 0


class CloseRightAfterTheWait(threading.Event):
    """A stop event whose first timed wait times out just as close() runs (sets it, then wakes)."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake
        self._closed_once = False

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is None or self._closed_once:
            return super().wait(timeout)
        self._closed_once = True
        self.set()
        self._wake.set()
        return False


def test_a_close_during_the_gathering_wait_still_ends_the_checkpointer(
    writer: WalWriter, data_dir: Path
) -> None:
    checkpointer = Checkpointer(data_dir)
    thread = checkpointer._thread
    checkpointer._stop = CloseRightAfterTheWait(checkpointer._wake)
    try:
        checkpointer.nudge()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the checkpointer missed a close that came as it woke"
    finally:
        checkpointer.close()
