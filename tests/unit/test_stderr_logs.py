"""What is written to stderr (gRPC's C core) becomes JSON lines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from sidecar.clock import ManualClock
from sidecar.observability.repeats import RepeatLimiter
from sidecar.observability.stderr import StderrToJson, log_stderr_line


def test_stderr_lines_are_classified() -> None:
    limiter = RepeatLimiter(30.0, ManualClock())
    grpc_line = (
        "E1204 17:24:18.947319   15660 add_port.cc:83] Failed to add port to server: "
        "Address already in use"
    )
    with capture_logs() as logs:
        log_stderr_line(grpc_line, limiter)
        log_stderr_line(grpc_line.replace("15660", "15661"), limiter)  # another thread id
        log_stderr_line(
            "%4|1796404852.693|TERMINATE|rdkafka#producer-1| [thrd:app]: 2 messages in queue",
            limiter,
        )
        log_stderr_line("WARNING: All log messages before absl::InitializeLog()", limiter)
    assert logs == [
        {
            "event": "grpc_core",
            "log_level": "error",
            "source": "add_port.cc:83",
            "message": "Failed to add port to server: Address already in use",
        },
        {
            "event": "librdkafka",
            "log_level": "warning",
            "fac": "TERMINATE",
            "instance": "rdkafka#producer-1",
            "severity": 4,
            "message": "[thrd:app]: 2 messages in queue",
        },
        {
            "event": "stderr",
            "log_level": "warning",
            "message": "WARNING: All log messages before absl::InitializeLog()",
        },
    ]


@pytest.fixture
def spare_fd() -> Iterator[int]:
    fd = os.open(os.devnull, os.O_WRONLY)
    yield fd
    os.close(fd)


def test_what_is_written_to_the_captured_descriptor_is_logged_line_by_line(spare_fd: int) -> None:
    capture = StderrToJson(RepeatLimiter(30.0, ManualClock()), fd=spare_fd).start()
    with capture_logs() as logs:
        os.write(spare_fd, b"first line\nsecond ")
        os.write(spare_fd, b"line\n\n")
        capture.drain()
        os.write(spare_fd, b"\xff not utf-8\n")
        capture.drain()
    messages: list[Any] = [e["message"] for e in logs]
    assert messages == ["first line", "second line", "\ufffd not utf-8"]
