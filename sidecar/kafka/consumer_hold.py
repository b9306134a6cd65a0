"""Whether the consumer thread takes records while the subscription holds all it may.

While held, the thread takes no records: it waits on its commands, and librdkafka keeps its
prefetch (and stops fetching once `queued.max.messages.kbytes` is queued), so taking again costs
no re-fetch. Callbacks (rebalances, statistics) are served only by consume(), and librdkafka
leaves the group of a consumer that does not consume within `max.poll.interval.ms`: a hold
longer than HOLD_BEFORE_PAUSE_S pauses the partitions (dropping their prefetch) and consumes
again to serve callbacks. Runs on the consumer thread only.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

import structlog
from confluent_kafka import Consumer, TopicPartition

from sidecar.kafka.ports import TopicPartitionKey

# Every log line of a subscription's consumer carries one logger name, whichever part logs it.
log = structlog.get_logger("sidecar.kafka.consumer")

# A hold this long pauses the partitions: rebalance callbacks wait at most this long, and a fast
# subscriber (whose holds last milliseconds) never loses librdkafka's prefetch.
HOLD_BEFORE_PAUSE_S = 0.5


class FetchHold:
    """The subscription's hold on records, and whether it has paused the owned partitions."""

    def __init__(self, group: str) -> None:
        self._group = group
        self._holding = False
        self._held_since = 0.0
        self._fetch_paused = False

    @property
    def holding(self) -> bool:
        return self._holding

    def consuming(self, consumer: Consumer, owned: Collection[TopicPartitionKey]) -> bool:
        """Whether to consume now: not while a hold is young; a hold grown old pauses first."""
        if not self._holding or self._fetch_paused:
            return True
        held_s = time.monotonic() - self._held_since
        if held_s < HOLD_BEFORE_PAUSE_S:
            return False
        self._set_paused(consumer, list(owned), paused=True)
        log.info("partitions_paused", group=self._group, held_s=round(held_s, 2))
        return True

    def hold(self, consumer: Consumer, holding: bool, owned: Collection[TopicPartitionKey]) -> None:
        if holding == self._holding:
            return
        self._holding = holding
        if holding:
            self._held_since = time.monotonic()
        elif self._fetch_paused:
            self._set_paused(consumer, list(owned), paused=False)
            log.info("partitions_resumed", group=self._group)

    def settle_assigned(
        self,
        consumer: Consumer,
        partitions: Sequence[TopicPartitionKey],
        owned: Collection[TopicPartitionKey],
    ) -> None:
        # librdkafka keeps a partition paused across revoke and re-assign: say explicitly what
        # every newly assigned partition does.
        still_owned = [p for p in partitions if p in owned]  # not revoked meanwhile
        self._set_paused(consumer, still_owned, paused=self._fetch_paused)

    def replaced(self) -> None:
        """A new consumer took over: nothing of it is paused, and a hold counts from now."""
        self._fetch_paused = False
        self._held_since = time.monotonic()

    def _set_paused(
        self, consumer: Consumer, partitions: Sequence[TopicPartitionKey], *, paused: bool
    ) -> None:
        self._fetch_paused = paused
        if partitions:
            parts = [TopicPartition(t, p) for t, p in partitions]
            if paused:
                consumer.pause(parts)
            else:
                consumer.resume(parts)
