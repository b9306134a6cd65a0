"""What one consume() call returned: records turned into `FetchedRecord`s, errors logged.

Runs on the consumer thread, once per message: the record conversion is on the hot path of
every subscription.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError

from sidecar.kafka.ports import FetchedRecord, headers_size

# Every log line of a subscription's consumer carries one logger name, whichever part logs it.
log = structlog.get_logger("sidecar.kafka.consumer")


def to_record(message: Any) -> FetchedRecord | None:
    """The record a consumed message carries; None for an error (see `report_errors`)."""
    if message.error() is not None:
        return None
    timestamp_type, timestamp = message.timestamp()
    key, value, headers = message.key(), message.value(), message.headers()
    size = (len(value) if value else 0) + (len(key) if key else 0)
    if headers:
        headers = tuple(headers)
        size += headers_size(headers)
    else:
        headers = ()
    # tuple.__new__ skips the named tuple's Python-level __new__: one record per message.
    return _new_tuple(
        FetchedRecord,
        (
            message.topic(),
            message.partition(),
            message.offset(),
            key,
            value,
            headers,
            timestamp,
            timestamp_type,
            size,
        ),
    )


_new_tuple = tuple.__new__


def report_errors(messages: Sequence[Any], group: str) -> bool:
    """Log the errors among `messages`; whether one says the committed offsets of the
    assignment could not be fetched (what the watchdog needs to know)."""
    offsets_unfetched = False
    for message in messages:
        error = message.error()
        if error is None or error.code() == KafkaError._PARTITION_EOF:
            continue
        log.warning("consume_error", group=group, error=str(error))
        # On the consume path NOT_COORDINATOR comes from the committed-offset fetch of an
        # assignment (commit errors go to the commit callback).
        if error.code() == KafkaError.NOT_COORDINATOR:
            offsets_unfetched = True
    return offsets_unfetched
