"""Who holds which delivered record, until when, and what an ack id means once the lease is over.

This module owns the lease lifecycle: grant, ack, nack, extend, expiry, a closed stream's leases
and a revoked partition's leases. It must never decide what happens to a record after its lease
ends (redelivery timing, dead-lettering, commits): the ending calls return the leases, and the
caller hands them to the redelivery queue and the ack trackers. It reads time only from the
injected clock and never blocks.

A lease is over at its deadline even if `expire()` has not run yet: an ack that arrives late is
answered EXPIRED, because the record is about to be delivered again to someone else. The lease
stays in the table until `expire()` collects it, so the caller never misses a record to redeliver.
"""

from __future__ import annotations

import heapq
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import Enum
from typing import NamedTuple, TypeVar

from sidecar.clock import Clock

TopicPartition = tuple[str, int]
DEFAULT_RETIRED_CAPACITY = 100_000
_Group = TypeVar("_Group", int, TopicPartition)


class DeliveryKey(NamedTuple):
    """Identifies one Kafka record, whichever delivery attempt of it is leased."""

    topic: str
    partition: int
    offset: int

    @property
    def topic_partition(self) -> TopicPartition:
        return (self.topic, self.partition)


class AckOutcome(Enum):
    """What an ack, nack or extension did; mirrors ferry.v1.AckIdStatus."""

    APPLIED = "applied"  # the lease was live and the request took effect
    ALREADY_ACKED = "already_acked"  # acked before with this ack id; not an error
    EXPIRED = "expired"  # the lease ended (deadline, nack, stream closed); redelivery follows
    UNKNOWN = "unknown"  # never issued here, or retired too long ago to remember
    REVOKED = "revoked"  # the partition moved to another consumer; it redelivers there


@dataclass(frozen=True, slots=True)
class Lease:
    """One delivery attempt of a record, held by one stream until `deadline` (monotonic)."""

    ack_id: str
    key: DeliveryKey
    stream_id: int
    attempt: int
    deadline: float


class KeyAlreadyLeased(RuntimeError):
    """A record was granted while another lease on it is still in the table: a dispatcher bug."""


def new_ack_id() -> str:
    """An opaque, unguessable ack id, so one client cannot ack another client's records."""
    return secrets.token_urlsafe(16)


class LeaseTable:
    """The live leases of one subscription, plus a bounded memory of ended ones."""

    def __init__(
        self,
        clock: Clock,
        *,
        ack_id_factory: Callable[[], str] = new_ack_id,
        retired_capacity: int = DEFAULT_RETIRED_CAPACITY,
    ) -> None:
        self._clock = clock
        self._ack_id_factory = ack_id_factory
        self._retired_capacity = retired_capacity
        self._leases: dict[str, Lease] = {}
        self._holder: dict[DeliveryKey, str] = {}
        self._by_stream: dict[int, set[str]] = {}
        self._by_partition: dict[TopicPartition, set[str]] = {}
        # Entries go stale when a lease ends or is extended; they are skipped when popped rather
        # than searched for and removed, which would cost O(n) per ack.
        self._deadlines: list[tuple[float, str]] = []
        # Lets a late ack be told apart from a forged or mistyped one; oldest forgotten first.
        self._retired: OrderedDict[str, AckOutcome] = OrderedDict()

    def __len__(self) -> int:
        return len(self._leases)

    def grant(self, key: DeliveryKey, stream_id: int, duration: float, attempt: int) -> Lease:
        """Lease the record `key` to `stream_id` for `duration` seconds."""
        if duration <= 0:
            raise ValueError(f"lease duration must be positive, got {duration}")
        if attempt < 1:
            raise ValueError(f"delivery attempts count from 1, got {attempt}")
        # Messages leave ack ids out: an ack id is a capability and errors end up in logs.
        if key in self._holder:
            raise KeyAlreadyLeased(f"{key} is already leased")
        ack_id = self._ack_id_factory()
        if ack_id in self._leases or ack_id in self._retired:
            raise RuntimeError("the ack id factory repeated an ack id")
        lease = Lease(ack_id, key, stream_id, attempt, self._clock.monotonic() + duration)
        self._leases[ack_id] = lease
        self._holder[key] = ack_id
        self._by_stream.setdefault(stream_id, set()).add(ack_id)
        self._by_partition.setdefault(key.topic_partition, set()).add(ack_id)
        self._push_deadline(lease)
        return lease

    def get(self, ack_id: str) -> Lease | None:
        """The live lease behind `ack_id`, or None if it is over or unknown."""
        lease = self._leases.get(ack_id)
        if lease is None or self._clock.monotonic() >= lease.deadline:
            return None
        return lease

    def ack(self, ack_id: str) -> AckOutcome:
        """End the lease because its record was processed."""
        return self._settle(ack_id, retire_as=AckOutcome.ALREADY_ACKED)

    def nack(self, ack_id: str) -> AckOutcome:
        """End the lease so the record is delivered again; the caller schedules when."""
        return self._settle(ack_id, retire_as=AckOutcome.EXPIRED)

    def extend(self, ack_id: str, duration: float) -> tuple[AckOutcome, float | None]:
        """Move a live lease's deadline to now + `duration`; returns the new deadline if applied."""
        if duration <= 0:
            raise ValueError(f"lease duration must be positive, got {duration}")
        lease = self.get(ack_id)
        if lease is None:
            return self._outcome_of_ended(ack_id), None
        extended = replace(lease, deadline=self._clock.monotonic() + duration)
        self._leases[ack_id] = extended
        self._push_deadline(extended)
        return AckOutcome.APPLIED, extended.deadline

    def expire(self) -> list[Lease]:
        """Remove and return the leases whose deadline has passed, earliest first."""
        now = self._clock.monotonic()
        expired: list[Lease] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, ack_id = heapq.heappop(self._deadlines)
            lease = self._leases.get(ack_id)
            if lease is not None and lease.deadline == deadline:
                self._end(lease, AckOutcome.EXPIRED)
                expired.append(lease)
        return expired

    def release_stream(self, stream_id: int) -> list[Lease]:
        """Remove and return every lease of a stream that closed; their ack ids become EXPIRED."""
        released = self._take(self._by_stream.get(stream_id, set()))
        for lease in released:
            self._end(lease, AckOutcome.EXPIRED)
        return released

    def revoke_partitions(self, partitions: Iterable[TopicPartition]) -> list[Lease]:
        """Remove and return the leases on partitions taken from this sidecar (ack ids: REVOKED)."""
        revoked: list[Lease] = []
        for partition in set(partitions):
            revoked.extend(self._take(self._by_partition.get(partition, set())))
        for lease in revoked:
            self._end(lease, AckOutcome.REVOKED)
        return sorted(revoked, key=lambda lease: lease.key)

    def next_deadline(self) -> float | None:
        """The earliest deadline among leases in the table, for sleeping until `expire()`."""
        while self._deadlines:
            deadline, ack_id = self._deadlines[0]
            lease = self._leases.get(ack_id)
            if lease is not None and lease.deadline == deadline:
                return deadline
            heapq.heappop(self._deadlines)
        return None

    def outstanding(self, stream_id: int) -> int:
        """How many leases `stream_id` holds (including ones past deadline not yet expired)."""
        return len(self._by_stream.get(stream_id, ()))

    def _settle(self, ack_id: str, retire_as: AckOutcome) -> AckOutcome:
        lease = self.get(ack_id)
        if lease is None:
            return self._outcome_of_ended(ack_id)
        self._end(lease, retire_as)
        return AckOutcome.APPLIED

    def _outcome_of_ended(self, ack_id: str) -> AckOutcome:
        if ack_id in self._leases:
            # Past its deadline but not collected yet: expire() will hand it out for redelivery.
            return AckOutcome.EXPIRED
        return self._retired.get(ack_id, AckOutcome.UNKNOWN)

    def _take(self, ack_ids: set[str]) -> list[Lease]:
        return sorted((self._leases[ack_id] for ack_id in ack_ids), key=lambda lease: lease.key)

    def _end(self, lease: Lease, retire_as: AckOutcome) -> None:
        del self._leases[lease.ack_id]
        del self._holder[lease.key]
        _discard_member(self._by_stream, lease.stream_id, lease.ack_id)
        _discard_member(self._by_partition, lease.key.topic_partition, lease.ack_id)
        self._retired[lease.ack_id] = retire_as
        if len(self._retired) > self._retired_capacity:
            self._retired.popitem(last=False)

    def _push_deadline(self, lease: Lease) -> None:
        heapq.heappush(self._deadlines, (lease.deadline, lease.ack_id))
        # Acked leases leave stale entries until their deadline would have passed; rebuild when
        # they dominate so memory follows live leases, not throughput times lease length.
        if len(self._deadlines) > 2 * len(self._leases) + 64:
            self._deadlines = [(live.deadline, live.ack_id) for live in self._leases.values()]
            heapq.heapify(self._deadlines)


def _discard_member(index: dict[_Group, set[str]], group: _Group, ack_id: str) -> None:
    members = index[group]
    members.discard(ack_id)
    # Empty groups are dropped so streams and partitions that come and go do not pile up.
    if not members:
        del index[group]
