"""When a subscription stops and starts taking records from its consumer: bounds on what it holds.

Pure logic: the subscription reports how much it holds, how many events its
streams may have outstanding and how fast they take records; this says
whether to hold (take no more records) or take again. It never talks to
Kafka and reads no clock.

What a subscription may hold (leased or waiting) is sized by the streams'
pace: what they may have outstanding plus what they take in HOLD_S seconds at
the observed delivery rate, at least HELD_PER_OUTSTANDING times what they may
have outstanding (and at least MIN_HELD), at most the sidecar's record cap;
and by bytes: the records' key, value and header bytes plus
RECORD_OVERHEAD_BYTES each (the Python objects, tracker and queue entries of
a held record) stay under the sidecar's byte cap. Taking resumes once half
of both bounds is left.

Holding costs librdkafka nothing: its prefetch stays queued (bounded by
`queued.max.messages.kbytes`) and the records flow again the moment the
consumer thread takes them. Only a hold that lasts makes the consumer pause
its partitions, which drops the prefetch (sidecar/kafka/consumer_hold.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MIN_HELD = 1_000
HELD_PER_OUTSTANDING = 2
HOLD_S = 0.25
RELEASE_FRACTION = 2
# Measured with 100-byte records: a held record's tuple, DeliveryKey, dict, deque and tracker
# entries take ~500 bytes beyond its key and value.
RECORD_OVERHEAD_BYTES = 512
RATE_WINDOW_S = 0.5


@dataclass(frozen=True, slots=True)
class Limits:
    """Sidecar-wide bounds for one subscription."""

    max_held_records: int = 100_000
    max_held_bytes: int = 64 * 1024 * 1024


class Move(enum.Enum):
    HOLD = "hold"
    TAKE = "take"


class FlowControl:
    """Holds past the held bounds, takes again once half of them is left."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self.holding = False

    def max_held(self, outstanding: int, rate: float) -> int:
        """How many records may be held for streams with `outstanding` taking `rate` per second."""
        paced = outstanding + int(rate * HOLD_S)  # leased ones count as held
        wanted = max(HELD_PER_OUTSTANDING * outstanding, paced, MIN_HELD)
        return min(wanted, self._limits.max_held_records)

    def decide(
        self, held_records: int, held_bytes: int, outstanding: int, rate: float = 0.0
    ) -> Move | None:
        """The move to make now, if any.

        `held_bytes`: the held records' key, value and header bytes; `outstanding`: what the
        streams may have out; `rate`: records per second the streams took lately.
        """
        max_records = self.max_held(outstanding, rate)
        max_bytes = self._limits.max_held_bytes
        weight = held_bytes + held_records * RECORD_OVERHEAD_BYTES
        if not self.holding:
            if held_records >= max_records or weight >= max_bytes:
                self.holding = True
                return Move.HOLD
            return None
        if (
            held_records <= max_records // RELEASE_FRACTION
            and weight <= max_bytes // RELEASE_FRACTION
        ):
            self.holding = False
            return Move.TAKE
        return None


class DeliveryRate:
    """Records per second a subscription's streams take, over windows of RATE_WINDOW_S or more."""

    def __init__(self) -> None:
        self.per_s = 0.0
        self._since: float | None = None
        self._base = 0

    def observe(self, now: float, delivered_total: int) -> float:
        """Fold in the running delivery count at `now`; the current rate."""
        since = self._since
        if since is None:
            self._since, self._base = now, delivered_total
            return self.per_s
        elapsed = now - since
        if elapsed >= RATE_WINDOW_S:
            sample = (delivered_total - self._base) / elapsed
            # A fall shows at once (the bound shrinks with the pace); a rise is averaged in.
            self.per_s = sample if sample < self.per_s else (self.per_s + sample) / 2
            self._since, self._base = now, delivered_total
        return self.per_s
