"""When a subscription's partitions pause and resume: bounds on the records it holds.

Pure logic: the subscription reports how much it holds and how many events
its streams may have outstanding; this says whether to pause or resume. It
never talks to Kafka and reads no clock.

Records held (leased or waiting) may reach HELD_PER_OUTSTANDING times what the
streams may have outstanding (at least MIN_HELD, at most the sidecar's cap);
the partitions resume once a quarter of that is left. Every pause makes
librdkafka drop the partitions' prefetched records and fetch them again, so
pausing less often saves CPU: with 1000 events outstanding, 2x held and
resuming at half cost ~2.6 us of librdkafka CPU per event, 8x and a quarter
~1.7 us (and the streams stay fed while a resume reaches Kafka).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MIN_HELD = 1_000
HELD_PER_OUTSTANDING = 8
RESUME_FRACTION = 4


@dataclass(frozen=True, slots=True)
class Limits:
    """Sidecar-wide bounds for one subscription."""

    max_held_records: int = 20_000
    max_held_bytes: int = 128 * 1024 * 1024


class Move(enum.Enum):
    PAUSE = "pause"
    RESUME = "resume"


class FlowControl:
    """Pauses past the held bounds, resumes once a quarter of them is left."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self.paused = False

    def decide(self, held_records: int, held_bytes: int, outstanding: int) -> Move | None:
        """The move to make now, if any; `outstanding`: what the streams may have out."""
        limits = self._limits
        max_held = min(max(HELD_PER_OUTSTANDING * outstanding, MIN_HELD), limits.max_held_records)
        if not self.paused:
            if held_records >= max_held or held_bytes >= limits.max_held_bytes:
                self.paused = True
                return Move.PAUSE
            return None
        if (
            held_records <= max_held // RESUME_FRACTION
            and held_bytes <= limits.max_held_bytes // RESUME_FRACTION
        ):
            self.paused = False
            return Move.RESUME
        return None
