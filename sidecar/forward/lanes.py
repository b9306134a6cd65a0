"""One topic's sending state in the forwarder: its cursor, what it has in flight, and how far
every event is settled (delivered or parked), which is how far the log may retire.

Owned by the forwarder thread; other threads only read a `LaneStatus` of it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

#: A lane's `known_end` when the highest committed sequence is not known: read to find it.
UNKNOWN_END = 2**63 - 1


@dataclass(slots=True)
class Lane:
    """Per-topic sending state."""

    topic: str
    cursor: int = 0  # highest sequence handed to the producer
    known_end: int = UNKNOWN_END  # highest sequence known to exist (UNKNOWN_END: scan to find)
    in_flight: int = 0
    failed: bool = False
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    high_water: int = 0  # highest sequence ever handed to the producer: below it is a resend
    #: One row per wave, after Kafka refused a wave for good: a refusal of a lone row is that
    #: row's own (a wave of small records can be refused for the size of their batch).
    single: bool = False
    #: Every event up to here is delivered or parked: the log retires up to it.
    settled_to: int = 0
    reported_to: int = 0  # the settled_to last sent to the log
    #: Sequences handed to the producer and not yet settled in order, oldest first, and those
    #: of them that are settled (delivered or parked) behind an older unsettled one.
    sent: deque[int] = field(default_factory=deque)
    settled: set[int] = field(default_factory=set)

    def settle(self, sequence: int) -> None:
        self.settled.add(sequence)
        sent, settled = self.sent, self.settled
        while sent and sent[0] in settled:
            self.settled_to = sent.popleft()
            settled.discard(self.settled_to)

    def skip_found(self, through: int, later: set[int]) -> None:
        """Before the lane's first send: its rows up to `through` are in Kafka already, and so
        are the rows `later`, which wait behind rows that are not (resend_check.py)."""
        if through > self.settled_to:
            self.settled_to = self.cursor = through
        self.settled |= later

    @property
    def has_work(self) -> bool:
        return not self.failed and self.known_end > self.cursor
