"""Crash points: parsing, counting, and the kill (os.kill is replaced: a unit test kills no
process; tests/faults crash real Ferry processes at these points)."""

from __future__ import annotations

import os
import signal

import pytest

from sidecar import failpoints
from sidecar.errors import ConfigError


def test_parse_names_and_counts() -> None:
    assert failpoints.parse("") == {}
    assert failpoints.parse("wal.after_commit=3, forwarder.after_ack") == {
        "wal.after_commit": 3,
        "forwarder.after_ack": 1,
    }


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("nowhere=1", "unknown point 'nowhere'"),
        ("wal.after_commit=0", "hit count >= 1"),
        ("wal.after_commit=x", "hit count >= 1"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        failpoints.parse(text)


def test_unarmed_points_do_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(failpoints.ENV, raising=False)
    failpoints.arm_from_env()
    for name in failpoints.POINTS:
        failpoints.hit(name)  # still alive


def test_the_armed_hit_kills_the_process_and_not_before(monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(failpoints.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setenv(failpoints.ENV, "forwarder.after_ack=3")
    failpoints.arm_from_env()
    try:
        for _ in range(2):
            failpoints.hit("wal.after_commit")  # not armed: never counts
            failpoints.hit("forwarder.after_ack")
        assert kills == []
        failpoints.hit("forwarder.after_ack")
        assert kills == [(os.getpid(), signal.SIGKILL)]
    finally:
        monkeypatch.delenv(failpoints.ENV)
        failpoints.arm_from_env()
