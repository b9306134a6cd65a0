"""Thread supervision and thread failpoints (no processes: tests/integration/test_lifecycle.py
runs real ones)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from sidecar import failpoints, lifecycle
from sidecar.lifecycle import ThreadDeaths, supervised

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.fixture
def deaths() -> Iterator[list[tuple[str, BaseException]]]:
    reported: list[tuple[str, BaseException]] = []
    lifecycle.on_thread_death(lambda name, exc: reported.append((name, exc)))
    yield reported
    lifecycle.on_thread_death(None)


def _run_thread(target: Any) -> None:
    thread = threading.Thread(target=target)
    thread.start()
    thread.join(5)


def test_a_supervised_thread_that_returns_is_no_death(
    deaths: list[tuple[str, BaseException]],
) -> None:
    ran: list[bool] = []
    _run_thread(supervised("worker", lambda: ran.append(True)))
    assert ran == [True]
    assert deaths == []


def test_a_supervised_thread_that_raises_is_logged_once_and_reported(
    deaths: list[tuple[str, BaseException]],
) -> None:
    boom = RuntimeError("boom")

    def run() -> None:
        raise boom

    with capture_logs() as logs:
        _run_thread(supervised("worker", run))
    assert deaths == [("worker", boom)]
    [entry] = [e for e in logs if e["event"] == "thread_died"]
    assert entry["thread"] == "worker"
    assert entry["log_level"] == "error"
    assert entry["exc_info"] is True  # rendered as the traceback in the same JSON line
    assert "boom" in entry["error"]


def test_without_a_handler_a_death_is_only_logged() -> None:
    lifecycle.on_thread_death(None)

    def run() -> None:
        raise RuntimeError("boom")

    with capture_logs() as logs:
        _run_thread(supervised("worker", run))
    assert [e["event"] for e in logs] == ["thread_died"]


async def test_thread_deaths_set_the_stop_event_from_another_thread() -> None:
    stop = asyncio.Event()
    deaths = ThreadDeaths(asyncio.get_running_loop(), stop)
    _run_thread(lambda: deaths.report("forwarder", RuntimeError("x")))
    await asyncio.wait_for(stop.wait(), 2)
    assert deaths.threads == ["forwarder"]


def test_thread_deaths_after_the_loop_closed_do_not_raise() -> None:
    loop = asyncio.new_event_loop()
    deaths = ThreadDeaths(loop, asyncio.Event())
    loop.close()
    deaths.report("forwarder", RuntimeError("x"))
    assert deaths.threads == ["forwarder"]


# -- thread failpoints ---------------------------------------------------------------------


@pytest.fixture
def armed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    kills: list[int] = []
    monkeypatch.setattr(failpoints.os, "kill", lambda pid, sig: kills.append(sig))
    monkeypatch.setenv(failpoints.ENV, "forwarder.crash=2,consumer.crash=1")
    failpoints.arm_from_env()
    yield
    monkeypatch.delenv(failpoints.ENV)
    failpoints.arm_from_env()
    assert kills == [], "a thread point must never kill the process"


@pytest.mark.usefixtures("armed")
def test_a_thread_point_raises_on_its_count_then_is_disarmed() -> None:
    failpoints.hit("forwarder.crash")
    with pytest.raises(failpoints.InjectedCrash, match=r"forwarder\.crash"):
        failpoints.hit("forwarder.crash")
    for _ in range(3):
        failpoints.hit("forwarder.crash")  # disarmed
    with pytest.raises(failpoints.InjectedCrash):
        failpoints.hit("consumer.crash")
    failpoints.hit("consumer.crash")


def test_every_thread_point_is_a_known_point_and_documented() -> None:
    assert sorted(failpoints.THREAD_POINTS) == ["consumer.crash", "forwarder.crash", "wal.crash"]
    for name in failpoints.POINTS:
        assert f"`{name}`" in README, name
