"""A consumer's committed-offset lag, read from librdkafka's statistics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TopicPartitionKey = tuple[str, int]


def committed_lag(stats: Mapping[str, Any], owned: set[TopicPartitionKey]) -> int | None:
    """Records past the committed offsets of the `owned` partitions, from librdkafka's
    statistics (each partition's `consumer_lag`: its end offset minus the committed one, -1
    while either is unknown, as before the group's first commit there); None when no owned
    partition's is known (or nothing is owned)."""
    total, known = 0, False
    topics = stats.get("topics") or {}
    for topic, partition in owned:
        lag = ((topics.get(topic) or {}).get("partitions") or {}).get(str(partition), {})
        value = lag.get("consumer_lag", -1) if isinstance(lag, dict) else -1
        if isinstance(value, int) and value >= 0:
            total += value
            known = True
    return total if known else None
