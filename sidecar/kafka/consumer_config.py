"""The librdkafka configuration of a subscription's consumer.

Auto-commit and auto offset store are off, whatever the operator's extra settings say: only
offsets the subscription hands over are committed. Statistics are on, because the consumer
thread reads the group state (for its watchdog) and the committed lag from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STATISTICS_INTERVAL_MS = 1000


def consumer_config(
    bootstrap: str,
    group: str,
    start_latest: bool,
    extra: Mapping[str, str],
    session_timeout_ms: int = 10_000,
) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": f"ferry-{group}",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(100, session_timeout_ms // 10),
        "queued.max.messages.kbytes": 16 * 1024,
        "fetch.max.bytes": 16 * 1024 * 1024,
        # The watchdog reads the group state from the statistics.
        "statistics.interval.ms": STATISTICS_INTERVAL_MS,
        **extra,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "latest" if start_latest else "earliest",
        "enable.partition.eof": False,
    }
