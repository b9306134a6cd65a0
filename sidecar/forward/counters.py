"""What the forwarder shows beside its health: running totals and each lane's state, for the
metrics (read at scrape time) and the admin view.

Counted per wave or per failure, never per event: the forwarder thread adds, and readers on
other threads only read (an int, or a dict copied whole, is consistent under the GIL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

#: The error code in a librdkafka error's text: KafkaError{code=_MSG_TIMED_OUT,val=-192,...}.
_CODE = re.compile(r"code=([A-Za-z0-9_]+)")
OTHER = "other"


def error_kind(error: str) -> str:
    """The Kafka error code an error's text names (`_MSG_TIMED_OUT`, `UNKNOWN_TOPIC_OR_PART`,
    ...), or "other": a small, fixed set of values, fit for a metric label."""
    match = _CODE.search(error)
    return match.group(1) if match else OTHER


@dataclass(slots=True)
class ForwarderCounters:
    """Events handed to the producer, events found in Kafka at start, lane restarts after a
    failure, failures by kind, and forwarder processes started after one died (counted by
    Ferry's supervisor)."""

    sent_events: int = 0
    #: Events a previous run sent that the check at start found in Kafka: not sent again.
    found_in_kafka: int = 0
    lane_restarts: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    process_restarts: int = 0

    def failed(self, error: str) -> None:
        kind = error_kind(error)
        self.errors[kind] = self.errors.get(kind, 0) + 1


class _Lane(Protocol):
    topic: str
    in_flight: int
    failed: bool
    failures: int
    retry_at: float
    last_error: str


@dataclass(frozen=True, slots=True)
class LaneStatus:
    """One topic's lane: what it has in flight, and whether it backs off after a failure."""

    topic: str
    in_flight: int
    backing_off: bool
    failures: int
    retry_in_s: float
    last_error: str

    @classmethod
    def of(cls, lane: _Lane, now: float) -> LaneStatus:
        """`lane` as of `now` (the forwarder's clock)."""
        retry_in = max(0.0, lane.retry_at - now) if lane.failed else 0.0
        return cls(
            lane.topic, lane.in_flight, lane.failed, lane.failures, retry_in, lane.last_error
        )


@dataclass(frozen=True, slots=True)
class ForwarderStatus:
    """A snapshot for health, metrics and the admin view."""

    kafka_reachable: bool
    in_flight: int
    delivered_total: int
    resent_total: int
    parked_total: int
    failing_topics: dict[str, str]
    lanes: tuple[LaneStatus, ...] = ()
