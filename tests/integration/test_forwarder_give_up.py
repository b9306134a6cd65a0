"""Ferry gives up on a forwarder process that crashes again and again, each soon after its
start: the supervisor's link thread dies of ForwarderGaveUp, which Ferry's thread supervision
turns into a drain and EXIT_INTERNAL_ERROR (sidecar/forward/restarts.py).

Real forwarder processes, started by the real supervisor: each one's forwarder thread dies at
once because the log it must read does not exist."""

from __future__ import annotations

import concurrent.futures
import os
import threading
from pathlib import Path

from sidecar.forward.channels import CommittedRows
from sidecar.forward.messages import ForwarderConfig
from sidecar.forward.restarts import MAX_CRASHES
from sidecar.forward.supervisor import ForwarderGaveUp, ForwarderProcess
from sidecar.lifecycle import on_thread_death
from sidecar.model import Settlement


class _NothingToRetire:
    def retire(self, settlement: Settlement) -> concurrent.futures.Future[None]:
        raise AssertionError(f"a forwarder without a log settled {settlement}")

    def retire_now(self) -> None:
        raise AssertionError("a forwarder without a log asked to retire")


def test_ferry_gives_up_on_a_forwarder_process_that_keeps_crashing(tmp_path: Path) -> None:
    deaths: list[tuple[str, BaseException]] = []
    died = threading.Event()

    def record(name: str, exc: BaseException) -> None:
        deaths.append((name, exc))
        died.set()

    config = ForwarderConfig(
        tmp_path / "no-log-here",
        "127.0.0.1:9",
        {},
        max_in_flight=10,
        max_backoff_s=1.0,
        log_level="error",
        parent_pid=os.getpid(),
        resend_check_s=0.0,
    )
    forwarder = ForwarderProcess(
        config, CommittedRows(), _NothingToRetire(), on_delivered=lambda _events: None
    )
    on_thread_death(record)
    try:
        forwarder.start()
        assert died.wait(60), "the supervisor never gave up"
        forwarder.stop(0.0)
    finally:
        on_thread_death(None)
    assert len(deaths) == 1, deaths
    name, exc = deaths[0]
    assert name == "forwarder-link"
    assert isinstance(exc, ForwarderGaveUp)
    # The first process and its restarts, each of which crashed: no further one was started.
    assert forwarder.restarts == MAX_CRASHES - 1
    assert forwarder.counters.process_restarts == MAX_CRASHES - 1
    assert not forwarder.status().kafka_reachable
