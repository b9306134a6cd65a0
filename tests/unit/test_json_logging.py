"""Ferry's JSON lines: stdlib records, exceptions, uncaught errors and warnings render as one
JSON line each; secrets are masked."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import warnings

import pytest
from structlog.testing import capture_logs

from sidecar.observability import logging as logging_module
from sidecar.observability.logging import (
    JsonFormatter,
    JsonLineHandler,
    asyncio_exception_handler,
    mask_secrets,
    sensitive_values,
)


def _record_with_exception() -> logging.LogRecord:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "grpc._cython.cygrpc",
        logging.ERROR,
        __file__,
        1,
        "Unexpected [%s] raised by servicer method [%s]",
        ("DecodeError", "/ferry.v1.Publisher/Publish"),
        exc_info,
    )


def test_a_stdlib_record_with_an_exception_is_one_json_line() -> None:
    line = JsonFormatter().format(_record_with_exception())
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["event"] == (
        "Unexpected [DecodeError] raised by servicer method [/ferry.v1.Publisher/Publish]"
    )
    assert entry["level"] == "error"
    assert entry["logger"] == "grpc._cython.cygrpc"
    assert entry["timestamp"].endswith("Z")
    [exception] = entry["exception"]
    assert exception["exc_type"] == "ValueError"
    assert exception["exc_value"] == "bad\nvalue"
    assert exception["frames"][-1]["name"] == "_record_with_exception"
    assert all("locals" not in frame for frame in exception["frames"])  # may hold secrets


def test_the_handler_writes_one_line_per_record_and_reports_unrenderable_ones_as_json() -> None:
    out = io.StringIO()
    handler = JsonLineHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.handle(_record_with_exception())
    broken = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("many",), None)
    handler.handle(broken)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    assert first["exception"][0]["exc_type"] == "ValueError"
    assert second["event"] == "log_record_not_rendered"
    assert second["logger"] == "x"


def test_registered_secrets_are_masked_in_every_rendered_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logging_module, "_secrets", set())
    options = {"sasl.password": 'pa"ss\\word', "sasl.username": "ferry", "acks": "all"}
    logging_module.register_secrets(sensitive_values(options))
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "auth failed for %s", ('pa"ss\\word',), None
    )
    line = JsonFormatter().format(record)
    assert "word" not in line
    assert json.loads(line)["event"] == "auth failed for ***"


def test_mask_leaves_short_values_alone() -> None:
    assert mask_secrets("a token abc", ["abc"]) == "a token abc"
    assert mask_secrets("password hunter2!", ["hunter2!"]) == "password ***"


def test_asyncio_errors_carry_the_exception_and_context() -> None:
    with capture_logs() as logs:
        asyncio_exception_handler(
            None,  # type: ignore[arg-type]
            {"message": "Task exception was never retrieved", "exception": KeyError("k")},
        )
    [entry] = logs
    assert entry["event"] == "asyncio_error"
    assert entry["message"] == "Task exception was never retrieved"
    assert isinstance(entry["exc_info"], KeyError)


def test_a_crashing_thread_is_logged_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threading, "excepthook", logging_module._log_thread_exception)

    def crash() -> None:
        raise RuntimeError("boom")

    with capture_logs() as logs:
        thread = threading.Thread(target=crash, name="doomed")
        thread.start()
        thread.join()
    [entry] = logs
    assert entry["event"] == "thread_crashed"
    assert entry["thread"] == "doomed"
    assert entry["exc_info"][1].args == ("boom",)


def test_warnings_are_logged_as_json() -> None:
    with capture_logs() as logs, warnings.catch_warnings():  # restores showwarning
        warnings.simplefilter("always")
        warnings.showwarning = logging_module._log_warning
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
    [entry] = logs
    assert entry["event"] == "python_warning"
    assert entry["category"] == "DeprecationWarning"
    assert entry["message"] == "old API"
