"""Every line Ferry writes is one JSON object, on stdout.

Where each kind of output goes:

- structlog calls (`structlog.get_logger(__name__)`, context bound per call) and stdlib
  `logging` records (grpc's Python loggers, asyncio, anything else) end in the same single
  root handler, which renders them with structlog's `ProcessorFormatter`. One handler means
  one lock: lines written from different threads never interleave. Ferry owns the root
  logger: `configure_logging` replaces its handlers, so nothing is written twice.
- Exceptions become an `exception` field: a list of dicts (type, value, frames) without local
  variables, since locals may hold revealed secrets (the Kafka client config, for one).
- Uncaught exceptions of the main thread (`sys.excepthook`), of other threads
  (`threading.excepthook`), exceptions Python can only ignore (`sys.unraisablehook`) and
  `warnings` are logged here; asyncio's through `asyncio_exception_handler`, which the CLI
  installs on its loop.
- librdkafka's own log lines and error reports: sidecar/observability/kafka_logs.py.
- Whatever native code writes to file descriptor 2 (gRPC's C core): sidecar/observability/stderr.py.

Never log settings without `Settings.describe()`: it masks secrets. As a last resort,
`register_secrets` makes every rendered line mask the revealed values of sensitive Kafka
options (passwords, client secrets, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, TextIO

import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.tracebacks import ExceptionDictTransformer

#: Option names whose values are secrets: sasl.password, ssl.key.password,
#: ssl.keystore.password, sasl.oauthbearer.client.secret, sasl.oauthbearer.config (may hold
#: credentials), ssl.key.pem (a private key), basic.auth.user.info, JAAS configs.
SENSITIVE_KEY = re.compile(
    r"password|secret|credential|jaas|oauthbearer\.config|key\.pem|user\.info", re.IGNORECASE
)
MASK = "***"
# Shorter values are not masked inside rendered lines: replacing every occurrence of, say,
# "ab" would garble unrelated text (and could cut through JSON syntax).
MIN_MASKED_LEN = 4

_secrets: set[str] = set()
_timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
_exceptions = structlog.processors.ExceptionRenderer(
    ExceptionDictTransformer(show_locals=False, use_rich=False)
)
log = structlog.get_logger(__name__)


def sensitive_values(options: Mapping[str, Any]) -> list[str]:
    """The values of the options whose name says they are secret."""
    return [v for k, v in options.items() if isinstance(v, str) and v and SENSITIVE_KEY.search(k)]


def register_secrets(values: Iterable[str]) -> None:
    """Mask these values in every line rendered after this call."""
    _secrets.update(v for v in values if len(v) >= MIN_MASKED_LEN)


def mask_secrets(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with every registered (or given) secret, raw or JSON-escaped, replaced by ***."""
    for secret in _secrets if secrets is None else secrets:
        if len(secret) < MIN_MASKED_LEN:
            continue
        text = text.replace(secret, MASK)
        escaped = json.dumps(secret)[1:-1]
        if escaped != secret:
            text = text.replace(escaped, MASK)
    return text


class JsonFormatter(ProcessorFormatter):
    """Renders any LogRecord, from structlog or plain logging, as one JSON line."""

    def __init__(self) -> None:
        super().__init__(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                _timestamper,
            ],
            processors=[
                ProcessorFormatter.remove_processors_meta,
                _exceptions,
                structlog.processors.JSONRenderer(),
            ],
        )

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class JsonLineHandler(logging.StreamHandler[TextIO]):
    """Writes each record as one line; a record it cannot render is reported as JSON too."""

    def handleError(self, record: logging.LogRecord) -> None:
        # logging's default prints a traceback to stderr; here the line must stay JSON.
        with contextlib.suppress(Exception):
            line = json.dumps(
                {
                    "event": "log_record_not_rendered",
                    "logger": record.name,
                    "record_level": record.levelname.lower(),
                    "error": repr(sys.exc_info()[1]),
                    "level": "error",
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            )
            self.stream.write(line + self.terminator)
            self.flush()


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines at `level` on `stream` (stdout) for everything Python logs or raises."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    handler = JsonLineHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _timestamper,
            ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception
    sys.unraisablehook = _log_unraisable
    warnings.showwarning = _log_warning


def asyncio_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's report of an error nobody awaited (a failed callback, a lost task) as JSON."""
    exception = context.get("exception")
    details = {k: _safe_repr(v) for k, v in context.items() if k not in {"message", "exception"}}
    log.error(
        "asyncio_error",
        message=str(context.get("message", "")),
        exc_info=exception if isinstance(exception, BaseException) else None,
        **details,
    )


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    log.critical("uncaught_exception", exc_info=(exc_type, exc, tb))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # threading's own hook ignores it too
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    thread = args.thread.name if args.thread is not None else None
    log.error("thread_crashed", thread=thread, exc_info=exc_info)


def _log_unraisable(args: sys.UnraisableHookArgs) -> None:
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    log.error(
        "unraisable_exception",
        message=args.err_msg or "Exception ignored in",
        object=_safe_repr(args.object),
        exc_info=exc_info,
    )


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    log.warning(
        "python_warning",
        category=category.__name__,
        message=str(message),
        filename=filename,
        lineno=lineno,
    )


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the report
        return f"<unrepresentable {type(value).__name__}: {exc!r}>"
