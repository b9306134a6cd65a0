"""What native code writes to stderr, as JSON lines: gRPC's C core above all.

gRPC's C core logs through absl straight to file descriptor 2, in glog's text format
("E1204 17:24:18.947319 15660 add_port.cc:83] Failed to add port to server: ... Address
already in use"); Python's logging never sees these lines. Silencing them
(GRPC_VERBOSITY=NONE) would hide errors that matter: that bind failure reaches Python only
as "Failed to bind to address ...", without the reason. So the CLI keeps gRPC at ERROR
(`quiet_grpc_core`: errors only, no info chatter; an operator may still ask for more with
GRPC_VERBOSITY and GRPC_TRACE) and `StderrToJson` turns file descriptor 2 into a pipe whose
lines a thread logs as JSON:

- gRPC core lines: event="grpc_core", level from the line's letter, source (file:line),
  message;
- librdkafka lines printed by a client without a `logger` (Ferry's clients all have one):
  event="librdkafka", fac, instance, severity, message;
- anything else (a C library, Python's last-resort output): event="stderr", message.

Repeats are rate-limited like librdkafka's (sidecar/observability/repeats.py): a condition is
the kind of line, its source and its message with volatile numbers normalised.

Python's own `sys.stderr` writes to the pipe as well. What a process that dies hard (a
segfault, an abort) leaves in the pipe dies with the reading thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading

import structlog

from sidecar.observability.repeats import RepeatLimiter, volatile_to_n

log = structlog.get_logger(__name__)

#: Read by gRPC's C core when it starts; main() sets them before grpc is even imported.
GRPC_DEFAULTS = {"GRPC_VERBOSITY": "ERROR"}
MAX_LINE = 16 * 1024
_SENTINEL = b"\x00ferry-stderr-drained\x00"
_GLOG = re.compile(
    r"^(?P<letter>[IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ (?P<source>[^\]\s]+)\] ?(?P<message>.*)$"
)
_GLOG_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
_RDKAFKA = re.compile(
    r"^%(?P<severity>\d)\|[\d.]+\|(?P<fac>[^|]*)\|(?P<instance>[^|]*)\|\s*(?P<message>.*)$"
)
_SYSLOG_LEVELS = [logging.CRITICAL] * 3 + [logging.ERROR, logging.WARNING] + [logging.INFO] * 2


def quiet_grpc_core() -> None:
    """gRPC's C core logs errors only, unless the environment says otherwise."""
    for name, value in GRPC_DEFAULTS.items():
        os.environ.setdefault(name, value)


def log_stderr_line(line: str, limiter: RepeatLimiter) -> None:
    """Log one line that was written to stderr."""
    fields: dict[str, object]
    if glog := _GLOG.match(line):
        event, level = "grpc_core", _GLOG_LEVELS[glog["letter"]]
        fields = {"source": glog["source"], "message": glog["message"]}
    elif rdkafka := _RDKAFKA.match(line):
        severity = int(rdkafka["severity"])
        event, level = "librdkafka", _SYSLOG_LEVELS[severity] if severity < 7 else logging.DEBUG
        fields = {
            "fac": rdkafka["fac"],
            "instance": rdkafka["instance"],
            "severity": severity,
            "message": rdkafka["message"],
        }
    else:
        event, level, fields = "stderr", logging.WARNING, {"message": line}
    condition = (event, str(fields.get("source", "")), volatile_to_n(str(fields["message"])))
    repeated = limiter.admit(condition)
    if repeated is None:
        return
    if repeated:
        fields["repeated"] = repeated
    log.log(level, event, **fields)


class StderrToJson:
    """Points file descriptor 2 (or `fd`) at a pipe and logs every line that arrives there."""

    def __init__(self, limiter: RepeatLimiter | None = None, fd: int = 2) -> None:
        self._limiter = RepeatLimiter() if limiter is None else limiter
        self._fd = fd
        self._drained = threading.Event()
        self._drain_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> StderrToJson:
        read_end, write_end = os.pipe()
        os.dup2(write_end, self._fd)
        os.close(write_end)
        self._thread = threading.Thread(
            target=self._read, args=(read_end,), name="stderr-to-json", daemon=True
        )
        self._thread.start()
        return self

    def drain(self, timeout: float = 2.0) -> None:
        """Wait until every line written to stderr so far is logged (e.g. before exiting)."""
        if self._thread is None or not self._thread.is_alive():
            return
        with self._drain_lock:
            self._drained.clear()
            os.write(self._fd, _SENTINEL + b"\n")
            self._drained.wait(timeout)

    def _read(self, fd: int) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except InterruptedError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self._emit(pending)
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._emit(line)
            if len(pending) > MAX_LINE:  # a writer that never ends its line
                self._emit(pending)
                pending = b""

    def _emit(self, raw: bytes) -> None:
        drained = _SENTINEL in raw
        line = raw.replace(_SENTINEL, b"").decode("utf-8", errors="replace").rstrip()
        if line:
            # This thread must go on draining the pipe whatever happens, or writers block.
            with contextlib.suppress(Exception):
                log_stderr_line(line, self._limiter)
        if drained:
            self._drained.set()
