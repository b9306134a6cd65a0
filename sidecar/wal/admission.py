"""What the log admits: the cap on pending events and bytes, and each topic's share of it.

A topic whose events do not reach Kafka (missing, forbidden, refused) keeps its rows in the
log. Without a share it would fill the whole cap and stop every other topic; with one, it
fills only its share and is refused alone (TOPIC_SHARE_FULL) while the others keep flowing.
Pure bookkeeping: no I/O, no threads; the writer owns the one `Usage` and a copy per commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sidecar.errors import ResourceExhausted, TopicShareFull, WalFull
from sidecar.model import OutgoingEvent

RETRY_AFTER_S = 1.0


@dataclass(slots=True)
class Usage:
    """Pending events and bytes, in all and per topic ([rows, bytes])."""

    rows: int = 0
    size: int = 0
    topics: dict[str, list[int]] = field(default_factory=dict)

    def copy(self) -> Usage:
        return Usage(self.rows, self.size, {t: list(u) for t, u in self.topics.items()})

    def add(self, topic: str, size: int, rows: int = 1) -> None:
        self.rows += rows
        self.size += size
        usage = self.topics.get(topic)
        if usage is None:
            self.topics[topic] = [rows, size]
        else:
            usage[0] += rows
            usage[1] += size

    def remove(self, topic: str, size: int, rows: int = 1) -> None:
        self.rows -= rows
        self.size -= size
        usage = self.topics.get(topic)
        if usage is not None:
            usage[0] -= rows
            usage[1] -= size
            if usage[0] <= 0:
                del self.topics[topic]


@dataclass(frozen=True, slots=True)
class Admission:
    """The log's cap (events, bytes) and the fraction of it one topic may hold."""

    max_rows: int
    max_bytes: int
    topic_share: float = 1.0

    @property
    def share_rows(self) -> int:
        return max(1, int(self.max_rows * self.topic_share))

    @property
    def share_bytes(self) -> int:
        return max(1, int(self.max_bytes * self.topic_share))

    def refusal(self, usage: Usage, events: Sequence[OutgoingEvent]) -> ResourceExhausted | None:
        """Why `events` (all new) may not be added to `usage`; None when they fit."""
        rows, size = usage.rows + len(events), usage.size + sum(e.size for e in events)
        if rows > self.max_rows or size > self.max_bytes:
            return WalFull(
                f"the write-ahead log is at its cap ({usage.rows} events, {usage.size} bytes "
                "pending); retry once Kafka has caught up",
                retry_after=RETRY_AFTER_S,
            )
        if rows <= self.share_rows and size <= self.share_bytes:
            return None  # no topic can be over its share: the common case costs nothing more
        added: dict[str, list[int]] = {}
        for event in events:
            topic_added = added.setdefault(event.topic, [0, 0])
            topic_added[0] += 1
            topic_added[1] += event.size
        for topic, (new_rows, new_size) in added.items():
            held_rows, held_size = usage.topics.get(topic, (0, 0))
            if held_rows + new_rows > self.share_rows or held_size + new_size > self.share_bytes:
                return TopicShareFull(
                    f"topic {topic!r} holds its whole share of the write-ahead log "
                    f"({held_rows} events, {held_size} bytes pending): its events are not "
                    "reaching Kafka; other topics are still accepted",
                    retry_after=RETRY_AFTER_S,
                )
        return None
