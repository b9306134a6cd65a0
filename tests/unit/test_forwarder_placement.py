"""`--forwarder-mode` picks where the forwarder runs; nothing starts until `start()`."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from sidecar.forward.channels import CommittedRows
from sidecar.forward.forwarder import Forwarder
from sidecar.forward.messages import ForwarderConfig
from sidecar.forward.placement import make_forwarder
from sidecar.forward.supervisor import ForwarderProcess
from sidecar.model import Settlement


class FakeRetirements:
    def retire(self, settlement: Settlement) -> concurrent.futures.Future[None]:
        raise AssertionError("nothing runs before start()")

    def retire_now(self) -> None:
        raise AssertionError("nothing runs before start()")


def config(tmp_path: Path) -> ForwarderConfig:
    return ForwarderConfig(
        tmp_path,
        "127.0.0.1:9",
        {},
        max_in_flight=100,
        max_backoff_s=1.0,
        log_level="info",
        parent_pid=1,
        resend_check_s=0.0,
    )


@pytest.mark.parametrize(("mode", "kind"), [("process", ForwarderProcess), ("thread", Forwarder)])
def test_each_mode_makes_its_forwarder(tmp_path: Path, mode: str, kind: type) -> None:
    forwarder = make_forwarder(
        mode, config(tmp_path), CommittedRows(), FakeRetirements(), on_delivered=lambda _: None
    )
    assert isinstance(forwarder, kind)
    assert forwarder.status().in_flight == 0
    assert forwarder.counters.sent_events == 0


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="process or thread"):
        make_forwarder(
            "fork", config(tmp_path), CommittedRows(), FakeRetirements(), on_delivered=print
        )
