"""Thread supervision, the shutdown budget and its bounded steps, thread failpoints, and the
registry's parallel, bounded shutdown (no processes: tests/integration/test_lifecycle.py runs
real ones)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from sidecar import failpoints, lifecycle
from sidecar.clock import SystemClock
from sidecar.lifecycle import ShutdownBudget, ThreadDeaths, run_blocking, supervised
from sidecar.subscribe.registry import SubscriptionRegistry
from sidecar.subscribe.stream import StreamOptions
from sidecar.subscribe.subscription import SubscriptionSettings
from testkit.subscription_fakes import IdleConsumer, no_dead_letters

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


def test_the_default_budget_is_below_kubernetes_grace_period() -> None:
    budget = ShutdownBudget.for_grace(10.0)
    assert budget.forwarder_s == 10.0 + lifecycle.FORWARDER_STOP_S
    assert budget.total_s == 10.0 + 16.0
    assert budget.total_s < lifecycle.KUBERNETES_GRACE_S
    parts = (budget.consumers_s, budget.forwarder_s, budget.rpc_s, budget.wal_s, budget.slack_s)
    assert sum(parts) == budget.total_s


def test_the_budget_is_documented_as_it_is() -> None:
    assert "`--drain-grace-s` + 16 s" in README
    assert f"{ShutdownBudget.for_grace(10.0).total_s:.0f} s by default" in README


async def test_run_blocking_reports_a_step_that_finished() -> None:
    ran: list[str] = []
    assert await run_blocking(lambda: ran.append(threading.current_thread().name), 2, "step")
    assert ran == ["step"]


async def test_run_blocking_stops_waiting_at_the_timeout() -> None:
    release = threading.Event()
    started = time.monotonic()
    assert not await run_blocking(release.wait, 0.2, "stuck")
    assert time.monotonic() - started < 1.0
    [stuck] = [t for t in threading.enumerate() if t.name == "stuck"]
    assert stuck.daemon, "an abandoned step must not hold up the process's exit"
    release.set()
    stuck.join(2)


async def test_run_blocking_raises_the_step_s_exception() -> None:
    def fail() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await run_blocking(fail, 2, "step")


def test_the_deadline_exits_once_the_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    exited = threading.Event()

    def fake_exit(code: int) -> None:
        exits.append(code)
        exited.set()

    monkeypatch.setattr(lifecycle.os, "_exit", fake_exit)
    with capture_logs() as logs:
        lifecycle.arm_deadline(0.05)
        assert exited.wait(2)
    assert exits == [lifecycle.EXIT_INTERNAL_ERROR]
    assert logs[0]["event"] == "shutdown_budget_exceeded"


def test_the_deadline_can_be_disarmed(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr(lifecycle.os, "_exit", exits.append)
    lifecycle.arm_deadline(0.1).cancel()
    time.sleep(0.3)
    assert exits == []


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


# -- the registry's shutdown ------------------------------------------------------------------


class FakeConsumer(IdleConsumer):
    """A consumer whose stop (commit, leave the group) takes `stop_s`, or hangs until released."""

    def __init__(self, stop_s: float, release: threading.Event | None = None) -> None:
        self.stop_s = stop_s
        self.release = release
        self.stopped = threading.Event()

    def stop(self) -> None:
        if self.release is not None:
            self.release.wait()
        time.sleep(self.stop_s)
        self.stopped.set()


def _registry(consumers: list[FakeConsumer], make: Any, linger_s: float = 30.0) -> Any:
    def factory(settings: Any, sink: Any) -> FakeConsumer:
        consumer = make(settings.name)
        consumers.append(consumer)
        return consumer

    return SubscriptionRegistry(
        factory, no_dead_letters, SystemClock(), max_streams=100, linger_s=linger_s
    )


def _settings(name: str) -> SubscriptionSettings:
    return SubscriptionSettings(name, ("topic",), 0, "", False)


OPTIONS = StreamOptions(30.0, 100, 1 << 20)


async def test_shutdown_stops_every_consumer_in_parallel() -> None:
    consumers: list[FakeConsumer] = []
    registry = _registry(consumers, lambda name: FakeConsumer(0.5))
    for i in range(20):
        await registry.open_stream(_settings(f"sub-{i}"), OPTIONS)
    started = time.monotonic()
    await registry.shutdown(5.0)
    took = time.monotonic() - started
    assert all(c.stopped.is_set() for c in consumers)
    assert took < 2.0, f"20 consumers taking 0.5 s each stopped in {took:.1f} s: not in parallel"
    assert registry.statuses() == {}


async def test_shutdown_leaves_a_hung_consumer_behind_at_the_timeout() -> None:
    consumers: list[FakeConsumer] = []
    release = threading.Event()
    registry = _registry(
        consumers, lambda name: FakeConsumer(0.0, release if name == "hung" else None)
    )
    await registry.open_stream(_settings("hung"), OPTIONS)
    await registry.open_stream(_settings("fine"), OPTIONS)
    started = time.monotonic()
    with capture_logs() as logs:
        # Long enough for the fine consumer's stop thread to run on a loaded machine.
        await registry.shutdown(2.0)
    took = time.monotonic() - started
    release.set()
    assert took < 4.0  # the hung one is left behind at the timeout, not waited for
    assert consumers[1].stopped.is_set()
    abandoned = [e for e in logs if e["event"] == "consumer_close_abandoned"]
    assert [e["subscription"] for e in abandoned] == ["hung"]


async def test_shutdown_waits_for_a_stop_a_linger_began() -> None:
    consumers: list[FakeConsumer] = []
    registry = _registry(consumers, lambda name: FakeConsumer(0.5), linger_s=0.01)
    subscription, stream = await registry.open_stream(_settings("sub"), OPTIONS)
    registry.close_stream(subscription, stream)
    await asyncio.sleep(0.1)  # the linger ran out: its stop is under way
    assert not consumers[0].stopped.is_set()
    await registry.shutdown(5.0)
    assert consumers[0].stopped.is_set()
    assert registry.statuses() == {}
