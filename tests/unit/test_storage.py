"""The data directory is refused when another user owns it or group/others may write to it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.storage import check_data_dir
from sidecar.wal.store import DB_NAME, lock_directory

OTHER_UID = 65534  # nobody


def test_a_missing_directory_is_fine(tmp_path: Path) -> None:
    check_data_dir(tmp_path / "wal")


def test_a_private_directory_is_fine(tmp_path: Path) -> None:
    data = tmp_path / "wal"
    data.mkdir(mode=0o700)
    (data / DB_NAME).write_bytes(b"")
    os.chmod(data / DB_NAME, 0o600)
    check_data_dir(data)
    os.chmod(data, 0o755)  # readable by others: not good for privacy, but nobody can write
    check_data_dir(data)


def test_the_log_creates_a_directory_that_passes(tmp_path: Path) -> None:
    data = tmp_path / "wal"
    lock_directory(data).close()
    check_data_dir(data)


@pytest.mark.parametrize("mode", [0o770, 0o777, 0o702, 0o2775])
def test_a_directory_writable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    data = tmp_path / "wal"
    data.mkdir()
    os.chmod(data, mode)
    with pytest.raises(ConfigError, match="writable by its group or others") as info:
        check_data_dir(data)
    assert str(data) in str(info.value)


def test_a_log_file_writable_by_others_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "wal"
    data.mkdir(mode=0o700)
    (data / f"{DB_NAME}-wal").write_bytes(b"")
    os.chmod(data / f"{DB_NAME}-wal", 0o666)
    with pytest.raises(ConfigError, match=f"{DB_NAME}-wal"):
        check_data_dir(data)


def test_a_file_is_not_a_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "wal"
    data.write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        check_data_dir(data)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "wal"
    data.mkdir(mode=0o700)
    os.chown(data, OTHER_UID, -1)
    with pytest.raises(ConfigError, match="owned by uid 65534") as info:
        check_data_dir(data)
    assert str(data) in str(info.value)


def test_another_owner_is_seen_without_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "wal"
    data.mkdir(mode=0o700)
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(data).st_uid + 1)
    with pytest.raises(ConfigError, match="not by Ferry's uid"):
        check_data_dir(data)
