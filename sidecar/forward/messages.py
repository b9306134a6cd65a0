"""What Ferry and its forwarder process say to each other over their pipe.

Ferry (the parent) holds the log's only writing connection; the forwarder process reads the
log and talks to Kafka. Downward goes only what the log committed and the order to stop;
upward goes what Kafka answered and how the forwarder is doing. Each message is a small frozen
dataclass pickled by `multiprocessing.connection`; the bulk of the traffic (deliveries) is
plain tuples, which pickle cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sidecar.forward.counters import ForwarderCounters, ForwarderStatus
from sidecar.model import DeliveredEvent, Settlement

# -- Ferry → forwarder process ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Committed:
    """The log committed rows: the highest sequence per topic."""

    topic_max: dict[str, int]


@dataclass(frozen=True, slots=True)
class Stop:
    """Drain for up to `grace_s`, report the last settlements, then exit."""

    grace_s: float


# -- forwarder process → Ferry ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settle:
    """Retire what Kafka answered (the log's `retire`)."""

    settlement: Settlement


@dataclass(frozen=True, slots=True)
class RetireNow:
    """Commit the queued retirements without waiting for an append (the log's `retire_now`)."""


@dataclass(frozen=True, slots=True)
class Deliveries:
    """Events Kafka acknowledged, for the publishers that wait for it (ACK_LEVEL_KAFKA)."""

    events: list[DeliveredEvent]


@dataclass(frozen=True, slots=True)
class Report:
    """The forwarder's state, for health, metrics and GetStatus (sent a few times a second)."""

    status: ForwarderStatus
    counters: ForwarderCounters


@dataclass(frozen=True, slots=True)
class Stopped:
    """The drain is over; nothing follows."""


Down = Committed | Stop
Up = Settle | RetireNow | Deliveries | Report | Stopped


@dataclass(frozen=True, slots=True)
class ForwarderConfig:
    """What a forwarder process is started with (pickled to it: the Kafka options hold
    secrets, which must not appear on a command line or in the environment)."""

    data_dir: Path
    kafka_bootstrap: str
    kafka_options: dict[str, str]
    max_in_flight: int
    max_backoff_s: float
    log_level: str
    #: At start, how long to look in Kafka for rows sent but not retired (0: never look).
    resend_check_s: float = field(kw_only=True)
    #: The Ferry process: a kill point hit here kills it too (sidecar/failpoints.py).
    parent_pid: int
    #: Arm $FERRY_FAILPOINTS in this process: set by the supervisor for the first start only
    #: (sidecar/failpoints.py).
    arm_failpoints: bool = False
