"""The listen address: unix socket settings, and what Ferry does with a file at the socket path."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.api.listener import remove_stale_socket
from sidecar.config import load_settings
from sidecar.errors import ConfigError


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # A short path: a unix socket address holds at most 107 bytes.
    with tempfile.TemporaryDirectory(prefix="ferry-") as name:
        yield Path(name)


def test_unix_listen_settings() -> None:
    s = load_settings(listen="unix:///run/ferry/ferry.sock")
    assert s.listen_socket == Path("/run/ferry/ferry.sock")
    assert s.listen_host == ""
    assert s.socket_mode == 0o600
    relative = load_settings(listen="unix:ferry.sock", listen_socket_mode="660")
    assert relative.listen_socket == Path("ferry.sock")
    assert relative.socket_mode == 0o660
    assert relative.listen_socket_mode == "0660"
    assert load_settings(listen="127.0.0.1:1").listen_socket is None


def test_socket_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_LISTEN", "unix:///tmp/f.sock")
    monkeypatch.setenv("FERRY_LISTEN_SOCKET_MODE", "0o640")
    assert load_settings().socket_mode == 0o640


@pytest.mark.parametrize("mode", ["rw", "0800", "1777", "-1", ""])
def test_bad_socket_mode_is_refused(mode: str) -> None:
    with pytest.raises(ConfigError, match="listen_socket_mode"):
        load_settings(listen_socket_mode=mode)


@pytest.mark.parametrize(
    "listen", ["unix:", "unix://host/ferry.sock", "unix:///run/ferry/", "unix:///" + "a" * 120]
)
def test_malformed_socket_target_is_refused(listen: str) -> None:
    with pytest.raises(ConfigError, match="listen"):
        load_settings(listen=listen)


def test_missing_socket_path_is_fine(sock_dir: Path) -> None:
    remove_stale_socket(sock_dir / "ferry.sock")


def test_stale_socket_file_is_removed(sock_dir: Path) -> None:
    path = sock_dir / "ferry.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening: connections are refused
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    remove_stale_socket(path)
    assert not path.exists()


def test_live_socket_is_refused_and_kept(sock_dir: Path) -> None:
    path = sock_dir / "ferry.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen(1)
        with pytest.raises(ConfigError, match="another process serves on"):
            remove_stale_socket(path)
    assert path.exists()


def test_a_regular_file_is_never_removed(sock_dir: Path) -> None:
    path = sock_dir / "ferry.sock"
    path.write_text("precious")
    with pytest.raises(ConfigError, match="not a socket"):
        remove_stale_socket(path)
    assert path.read_text() == "precious"


def test_missing_directory_is_refused(sock_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        remove_stale_socket(sock_dir / "nowhere" / "ferry.sock")
