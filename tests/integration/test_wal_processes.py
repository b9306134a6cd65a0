"""The log shared between processes: Ferry writes it while other processes read it (the
forwarder process, `ferry` commands, tests), and none of them may make a commit vanish."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sidecar.wal.store import DB_NAME, connect

_READ_AND_CLOSE = (
    "import sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1])\n"
    "print(conn.execute('SELECT COUNT(*) FROM probe').fetchone()[0])\n"
    "conn.close()\n"
)


def _count_from_another_process(data_dir: Path) -> int:
    """Opens, reads and closes the log in a process of its own, as the forwarder does."""
    done = subprocess.run(
        [sys.executable, "-c", _READ_AND_CLOSE, str(data_dir / DB_NAME)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return int(done.stdout)


def test_a_reader_closing_in_another_process_never_unlinks_the_writers_wal(
    tmp_path: Path,
) -> None:
    writer = connect(tmp_path)
    try:
        writer.execute("CREATE TABLE probe (n INTEGER)")
        writer.execute("INSERT INTO probe VALUES (1)")
        # Every other connection of Ferry's process goes through connect() too: it must leave
        # the writer's locks in place.
        connect(tmp_path, readonly=True).close()
        assert _count_from_another_process(tmp_path) == 1
        assert (tmp_path / f"{DB_NAME}-wal").exists(), "the writer's -wal file was deleted"
        writer.execute("INSERT INTO probe VALUES (2)")
        assert _count_from_another_process(tmp_path) == 2, "a commit went to an unlinked file"
    finally:
        writer.close()
