"""The secured suite's log check (testkit.log_secrets) finds a leaked secret and refuses to
pass without looking."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testkit.certs import CertificateAuthority
from testkit.log_secrets import SecretLog

DEBUG_LINE = '{"event": "call_accepted", "level": "debug"}\n'


@dataclass
class _Process:
    log_path: Path
    args: list[str] = field(default_factory=list)
    running: bool = False

    def alive(self) -> bool:
        return self.running


def test_a_clean_debug_log_passes_and_debug_is_turned_on(tmp_path: Path) -> None:
    log = SecretLog()
    process = log.watch(_Process(tmp_path / "ferry.log"))
    assert process.args == ["--log-level", "debug"]
    assert log.watch(_Process(tmp_path / "b.log", ["--log-level", "info"])).args[-1] == "info"
    log.add("token-0123456789abcdef")
    process.log_path.write_text(DEBUG_LINE)
    (tmp_path / "b.log").write_text(DEBUG_LINE)
    log.assert_clean()


@pytest.mark.parametrize(
    "leak",
    ["Bearer token-0123456789abcdef", "password=hunter2-but-longer", "-----BEGIN PRIVATE KEY-----"],
)
def test_a_leak_fails(tmp_path: Path, leak: str) -> None:
    log = SecretLog()
    process = log.watch(_Process(tmp_path / "ferry.log"))
    log.add("token-0123456789abcdef")
    password = tmp_path / "password"
    password.write_text("hunter2-but-longer\n")
    log.add_file(password)
    process.log_path.write_text(DEBUG_LINE + f'{{"event": "x", "detail": "{leak}"}}\n')
    with pytest.raises(AssertionError):
        log.assert_clean()


def test_a_line_of_a_private_key_is_a_leak(tmp_path: Path) -> None:
    key_pem = CertificateAuthority.create("CA").issue_server().key_pem
    log = SecretLog()
    process = log.watch(_Process(tmp_path / "ferry.log"))
    log.add_pem_key(key_pem)
    body_line = key_pem.decode().splitlines()[1]
    process.log_path.write_text(DEBUG_LINE + f'{{"event": "x", "key": "{body_line}"}}\n')
    with pytest.raises(AssertionError, match="secrets"):
        log.assert_clean()


def test_it_cannot_pass_without_looking(tmp_path: Path) -> None:
    nothing_watched = SecretLog()
    nothing_watched.add("token-0123456789abcdef")
    with pytest.raises(AssertionError, match="no Ferry was watched"):
        nothing_watched.assert_clean()
    no_secret = SecretLog()
    no_secret.watch(_Process(tmp_path / "ferry.log")).log_path.write_text(DEBUG_LINE)
    with pytest.raises(AssertionError, match="no secret"):
        no_secret.assert_clean()
    no_debug = SecretLog()
    no_debug.add("token-0123456789abcdef")
    no_debug.watch(_Process(tmp_path / "info.log")).log_path.write_text('{"level": "info"}\n')
    with pytest.raises(AssertionError, match="no debug lines"):
        no_debug.assert_clean()
