"""librdkafka's log lines and error reports as JSON: one line per condition per interval.

Every confluent-kafka client Ferry creates gets a `KafkaClientLog`: its `logger` goes into
the client's config and its `on_error` reports the client's errors (`error_cb`).

How the lines travel: given a `logger`, confluent-kafka turns on librdkafka's `log.queue`
and forwards the log to the client's main queue: librdkafka does not print `%3|...|FAIL|`
lines to stderr from its own threads, and, like error reports, the lines are delivered by
the client's poll() (consume() for a consumer, also flush()) on the polling thread. So every
client must be polled regularly, idle or not: the forwarder polls its producer in every
round, a consumer thread consumes without pause, and an AdminClient would need poll() calls
of its own. A client that is not polled keeps its lines in memory and delivers them late.
Lines librdkafka queues after a client's last poll (while it is being destroyed) are dropped
with it, never printed as text. The `debug` option (kafka_options) floods the queue, and
librdkafka serves queued log lines until the queue is empty without checking the poll's
timeout (librdkafka issue #5325): with `debug` on, the forwarder's poll(0) and a consumer's
consume() can take far longer than asked. Turn it on briefly, to troubleshoot.

A line becomes: event="librdkafka", client (producer or consumer), group (consumers),
instance (librdkafka's name of the handle, e.g. ferry-forwarder#producer-1), fac, severity
(the syslog number librdkafka prints: 3 error, 4 warning, 6 info, 7 debug; notices show as
6), thread, message, and repeated=N when N identical lines were dropped before it. An error
report becomes event="kafka_error" with client, group, code, error and fatal; one that means
Kafka refuses Ferry's credentials, certificates or permissions (sidecar/kafka/auth_failures.py)
becomes event="kafka_auth_failed", at error level, with its kind and a hint as well, and is a
condition apart from librdkafka's log line of the same text.

A distinct condition is one client (its kind and group) and what librdkafka says, without
the thread prefix and without librdkafka's own ", N identical error(s) suppressed", with
volatile numbers (durations, counts) normalised to N (`repeats.volatile_to_n`). Facility and
severity are left out: they are how librdkafka files a message, not another failure, and
librdkafka reports a failed connection twice with the same text (a FAIL log line and a
_TRANSPORT error report), which is thus one condition and one line. Fatal errors are never
suppressed; nor are debug lines, which exist only when the `debug` option asks for them.

Secrets: librdkafka prints its configuration only with debug=conf, and redacts sensitive
properties itself. As a second guard, `name = value` lines of sensitive options and the
client's own sensitive values are masked here.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

from sidecar.kafka.auth_failures import auth_failure
from sidecar.observability.logging import MASK, SENSITIVE_KEY, mask_secrets, sensitive_values
from sidecar.observability.repeats import RepeatLimiter, volatile_to_n

log = structlog.get_logger(__name__)

#: Conditions of every Kafka client of this process (a replaced client continues its
#: predecessor's conditions).
REPEATS = RepeatLimiter()

_THREAD = re.compile(r"^\[thrd:(?P<thread>[^\]]*)\]:\s*")
_SUPPRESSED = re.compile(r",? ?\d+ identical error\(s\) suppressed")
_CONFIG_LINE = re.compile(r"^(?P<name>\s*[\w.]+\s*=\s*)(?P<value>.+)$")
_REDACTED = "[redacted]"
_SYSLOG = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}


class KafkaClientLog:
    """The log of one confluent-kafka client: `logger` for its config, `on_error` for error_cb."""

    def __init__(
        self,
        client: str,
        config: Mapping[str, Any],
        *,
        group: str | None = None,
        limiter: RepeatLimiter | None = None,
    ) -> None:
        self._fields: dict[str, str] = {"client": client}
        if group is not None:
            self._fields["group"] = group
        self._key = tuple(self._fields.values())
        self._secrets = sensitive_values(config)
        self._limiter = REPEATS if limiter is None else limiter
        # A Logger of its own, outside logging's registry: it goes away with the client, and
        # its records reach only the bridge (no parent to propagate to).
        self.logger = logging.Logger(f"librdkafka.{client}")
        self.logger.setLevel(logging.getLogger().getEffectiveLevel())
        self.logger.addHandler(_Bridge(self))

    def line(self, levelno: int, fac: str, instance: str, text: str) -> None:
        """One librdkafka log line (`text` as librdkafka wrote it, thread prefix included)."""
        found = _THREAD.match(text)
        thread = found["thread"] if found else None
        message = self._mask(text[found.end() :] if found else text)
        repeated = 0
        if levelno > logging.DEBUG:
            admitted = self._limiter.admit(self._condition(message))
            if admitted is None:
                return
            repeated = admitted
        log.log(
            levelno,
            "librdkafka",
            **self._fields,
            instance=instance,
            fac=fac,
            severity=_SYSLOG.get(levelno, 7),
            thread=thread,
            message=message,
            **({"repeated": repeated} if repeated else {}),
        )

    def on_error(self, err: Any) -> None:
        """An error report (confluent-kafka's error_cb). Never raises: it runs inside poll()."""
        try:
            self._report(err)
        except Exception as exc:
            log.error("kafka_error_not_logged", error=repr(exc))

    def _report(self, err: Any) -> None:
        text = self._mask(_error_text(err))
        fatal = bool(err.fatal())
        refused = auth_failure(err)
        repeated = 0
        if not fatal:
            # A refusal is a condition of its own: librdkafka's FAIL line of the same text must
            # not swallow the kafka_auth_failed line an operator (or an alert) looks for.
            condition = self._condition(text)
            if refused is not None:
                condition = ("kafka_auth_failed", *condition)
            admitted = self._limiter.admit(condition)
            if admitted is None:
                return
            repeated = admitted
        details = {"kind": refused.kind, "hint": refused.hint} if refused is not None else {}
        log.log(
            logging.ERROR if fatal or refused is not None else logging.WARNING,
            "kafka_error" if refused is None else "kafka_auth_failed",
            **self._fields,
            code=str(err.name()),
            error=text,
            fatal=fatal,
            **details,
            **({"repeated": repeated} if repeated else {}),
        )

    def _condition(self, message: str) -> tuple[str, ...]:
        return (*self._key, volatile_to_n(_SUPPRESSED.sub("", message)))

    def _mask(self, message: str) -> str:
        config_line = _CONFIG_LINE.match(message)
        if (
            config_line is not None
            and SENSITIVE_KEY.search(config_line["name"])
            and config_line["value"].strip() != _REDACTED
        ):
            message = config_line["name"] + MASK
        return mask_secrets(message, self._secrets) if self._secrets else message


class _Bridge(logging.Handler):
    """confluent-kafka calls logger.log(level, "%s [%s] %s", fac, instance, text)."""

    def __init__(self, client_log: KafkaClientLog) -> None:
        super().__init__()
        self._client_log = client_log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            args = record.args
            if isinstance(args, tuple) and len(args) == 3:
                fac, instance, text = (str(a) for a in args)
            else:
                fac, instance, text = "", "", record.getMessage()
            self._client_log.line(record.levelno, fac, instance, text)
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # Runs inside the client's poll(): raising would stop the polling thread, and
        # logging's default would print a traceback to stderr.
        with contextlib.suppress(Exception):
            log.error("librdkafka_line_lost", error=repr(sys.exc_info()[1]))


def _error_text(err: Any) -> str:
    text = getattr(err, "str", None)
    return str(text()) if callable(text) else str(err)
