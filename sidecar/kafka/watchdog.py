"""When a subscription's Kafka consumer has fallen out of its group for good and must be replaced.

librdkafka 2.16 can lose its group session (the broker paused or unreachable for longer than
`session.timeout.ms`) and then never rejoin: the consumer reports its partitions lost, then waits
in `query-coord` forever with a request stuck in the coordinator connection's out-queue
(librdkafka issue #2944), while a new consumer in the same group is assigned at once. Nothing in
the client reports this as an error, so Ferry watches for it.

This module owns the decision only. The consumer thread feeds it what it sees (rebalances,
records, the group state from librdkafka's statistics) and asks it, now and then, whether to close
the consumer and open a new one. It never touches Kafka, reads time only from the injected clock
and never blocks.

The rule: a consumer that subscribers are waiting on, that owns no partitions, and that showed
no sign of life in its group for `stall_after_s` is stuck. Signs of life are a rebalance callback,
fetched records, and a statistics report saying the consumer is a settled member of its group
(state `up`, join state `steady`): the last one keeps a member that legitimately owns nothing
(more members than partitions) from being replaced, which would make the whole group rebalance
again. Being connected to the coordinator is not enough: stuck consumers were seen both in
`query-coord` and in `up`/`wait-join`, their JoinGroup request never sent. The price is that a
rebalance lasting longer than the limit (a member slow to rejoin) has this member replaced; it
rejoins at once, and the backoff below keeps that from repeating quickly.
A consumer that owns partitions is replaced only when librdkafka reported that it could not
fetch the committed offsets of its assignment (a request-level error, such as NOT_COORDINATOR
from a coordinator that just moved): those partitions never start fetching and the request is
never retried (librdkafka issue #5586), while the member looks settled in its group. A new
consumer queries the offsets afresh. Otherwise, when its session ends, librdkafka reports the
partitions lost, and the rule applies from there. Replacements back off (doubling, up to
`max_stall_after_s`) until a new consumer shows life, so a Kafka that is really down is not met
with a new consumer every few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.clock import Clock

SETTLED = ("up", "steady")


@dataclass(frozen=True, slots=True)
class Stall:
    """Why the watchdog wants the consumer replaced, for the log."""

    stalled_s: float  # since the last sign of life
    group_state: str  # librdkafka's cgrp state/join_state, or "unknown" without statistics
    replacements_in_a_row: int  # earlier replacements since the last sign of life
    reason: str = "no partitions and no sign of life in the group"


OFFSETS_UNFETCHED = "committed offsets not fetched: its partitions never start fetching"


class ConsumerWatchdog:
    """Signs of life of one consumer (and its successors), and the replacement decision."""

    def __init__(self, clock: Clock, stall_after_s: float, max_stall_after_s: float) -> None:
        if stall_after_s <= 0 or max_stall_after_s < stall_after_s:
            raise ValueError(
                f"need 0 < stall_after_s <= max_stall_after_s, got {stall_after_s}, "
                f"{max_stall_after_s}"
            )
        self._clock = clock
        self._stall_after_s = stall_after_s
        self._max_stall_after_s = max_stall_after_s
        self._limit_s = stall_after_s
        self._last_life = clock.monotonic()
        self._assigned = 0
        self._group_state = "unknown"
        self._in_a_row = 0
        #: When the committed offsets of the current assignment could not be fetched (None: fine).
        self._offsets_unfetched_at: float | None = None

    @property
    def limit_s(self) -> float:
        """How long the current consumer may go without a sign of life while owning nothing."""
        return self._limit_s

    def rebalanced(self, assigned: int) -> None:
        """A rebalance callback ran; the consumer now owns `assigned` partitions."""
        self._assigned = assigned
        self._offsets_unfetched_at = None  # a new assignment queries its offsets again
        self._alive()

    def offsets_unfetched(self) -> None:
        """librdkafka could not fetch the committed offsets of the assignment (request-level)."""
        if self._assigned and self._offsets_unfetched_at is None:
            self._offsets_unfetched_at = self._clock.monotonic()

    def fetched(self) -> None:
        """Records arrived."""
        self._alive()

    def group_reported(self, state: str, join_state: str) -> None:
        """librdkafka's statistics reported the consumer group state."""
        self._group_state = f"{state}/{join_state}"
        if (state, join_state) == SETTLED:
            self._alive()

    def check(self, wanted: bool) -> Stall | None:
        """A `Stall` if the consumer should be replaced now; `wanted`: subscribers are waiting."""
        if not wanted:
            return None
        if self._assigned:
            return self._check_offsets()
        stalled = self._clock.monotonic() - self._last_life
        if stalled < self._limit_s:
            return None
        return Stall(stalled, self._group_state, self._in_a_row)

    def _check_offsets(self) -> Stall | None:
        if self._offsets_unfetched_at is None:
            return None
        waited = self._clock.monotonic() - self._offsets_unfetched_at
        if waited < self._limit_s:
            return None
        return Stall(waited, self._group_state, self._in_a_row, OFFSETS_UNFETCHED)

    def replaced(self) -> None:
        """A new consumer took over: it starts owning nothing, and gets a longer limit."""
        self._in_a_row += 1
        self._limit_s = min(self._limit_s * 2, self._max_stall_after_s)
        self._last_life = self._clock.monotonic()
        self._assigned = 0
        self._offsets_unfetched_at = None
        self._group_state = "unknown"

    def _alive(self) -> None:
        self._last_life = self._clock.monotonic()
        self._in_a_row = 0
        self._limit_s = self._stall_after_s
