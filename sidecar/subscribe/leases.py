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

import base64
import heapq
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from enum import Enum
from typing import NamedTuple

from sidecar.clock import Clock

TopicPartition = tuple[str, int]
DEFAULT_RETIRED_CAPACITY = 100_000


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


class Lease(NamedTuple):
    """One delivery attempt of a record, held by one stream until `deadline` (monotonic).

    A named tuple rather than a frozen dataclass: one is built per delivery, and a tuple is
    several times cheaper to build.
    """

    ack_id: str
    key: DeliveryKey
    stream_id: int
    attempt: int
    deadline: float


class KeyAlreadyLeased(RuntimeError):
    """A record was granted while another lease on it is still in the table: a dispatcher bug."""


ACK_ID_RANDOM_BYTES = 15  # 120 bits: a multiple of 3 bytes, so each id is 20 base64 characters
#: The length of every ack id Ferry issues; a longer one is refused as malformed.
ACK_ID_LENGTH = ACK_ID_RANDOM_BYTES * 4 // 3
_IDS_PER_DRAW = 1024


class AckIdSource:
    """Opaque, unguessable ack ids, so one client cannot ack another client's records.

    Every id is 120 bits from the operating system's CSPRNG, as `secrets.token_urlsafe` would
    give, but drawn and encoded 1024 ids at a time: one `getrandom` call per id cost more than
    the rest of a delivery's lease bookkeeping. Not thread-safe; each loop owns its source.
    """

    def __init__(self) -> None:
        self._pool = ""
        self._next = 0

    def __call__(self) -> str:
        start = self._next
        if start >= len(self._pool):
            raw = os.urandom(ACK_ID_RANDOM_BYTES * _IDS_PER_DRAW)
            self._pool = base64.urlsafe_b64encode(raw).decode("ascii")
            start = 0
        self._next = start + ACK_ID_LENGTH
        return self._pool[start : start + ACK_ID_LENGTH]


new_ack_id = AckIdSource()


# Builds a named tuple without its Python-level __new__, on paths taken once per delivery.
_new_tuple = tuple.__new__


class LeaseTable:
    """The live leases of one subscription, plus a bounded memory of ended ones."""

    def __init__(
        self,
        clock: Clock,
        *,
        ack_id_factory: Callable[[], str] | None = None,
        retired_capacity: int = DEFAULT_RETIRED_CAPACITY,
    ) -> None:
        self._clock = clock
        self._ack_id_factory = ack_id_factory or AckIdSource()
        self._retired_capacity = retired_capacity
        self._leases: dict[str, Lease] = {}
        self._holder: dict[DeliveryKey, str] = {}
        # Per stream, since closing a stream is common; a revoke is rare and scans the leases.
        self._by_stream: dict[int, set[str]] = {}
        # Entries go stale when a lease ends or is extended; they are skipped when popped rather
        # than searched for and removed, which would cost O(n) per ack.
        self._deadlines: list[tuple[float, str]] = []
        # Lets a late ack be told apart from a forged or mistyped one; oldest forgotten first.
        self._retired: OrderedDict[str, AckOutcome] = OrderedDict()

    def __len__(self) -> int:
        return len(self._leases)

    def grant(
        self,
        key: DeliveryKey,
        stream_id: int,
        duration: float,
        attempt: int,
        now: float | None = None,
    ) -> Lease:
        """Lease the record `key` to `stream_id` for `duration` seconds from `now` (default: the
        clock's now; a dispatch passes one reading for all its grants, so that the leases of one
        batch share their deadline)."""
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
        deadline = (self._clock.monotonic() if now is None else now) + duration
        lease = _new_tuple(Lease, (ack_id, key, stream_id, attempt, deadline))  # one per delivery
        self._leases[ack_id] = lease
        self._holder[key] = ack_id
        members = self._by_stream.get(stream_id)
        if members is None:
            members = self._by_stream[stream_id] = set()
        members.add(ack_id)
        heapq.heappush(self._deadlines, (deadline, ack_id))
        self._compact_deadlines()
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

    def ack_many(self, ack_ids: Iterable[str]) -> list[tuple[str, AckOutcome, Lease | None]]:
        """`ack` each id in order; an applied ack comes with the lease it ended."""
        now = self._clock.monotonic()
        leases = self._leases
        results: list[tuple[str, AckOutcome, Lease | None]] = []
        for ack_id in ack_ids:
            lease = leases.get(ack_id)
            if lease is None or now >= lease.deadline:
                results.append((ack_id, self._outcome_of_ended(ack_id), None))
            else:
                self._end(lease, AckOutcome.ALREADY_ACKED)
                results.append((ack_id, AckOutcome.APPLIED, lease))
        return results

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
        extended = lease._replace(deadline=self._clock.monotonic() + duration)
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
        gone = set(partitions)
        revoked = [lease for lease in self._leases.values() if lease.key.topic_partition in gone]
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
        ack_id = lease.ack_id
        del self._leases[ack_id]
        del self._holder[lease.key]
        members = self._by_stream[lease.stream_id]
        members.discard(ack_id)
        if not members:  # streams come and go: do not keep their empty sets
            del self._by_stream[lease.stream_id]
        retired = self._retired
        retired[ack_id] = retire_as
        if len(retired) > self._retired_capacity:
            retired.popitem(last=False)

    def _push_deadline(self, lease: Lease) -> None:
        heapq.heappush(self._deadlines, (lease.deadline, lease.ack_id))
        self._compact_deadlines()

    def _compact_deadlines(self) -> None:
        # Acked leases leave stale entries until their deadline would have passed; rebuild when
        # they dominate so memory follows live leases, not throughput times lease length.
        if len(self._deadlines) > 2 * len(self._leases) + 64:
            self._deadlines = [(live.deadline, live.ack_id) for live in self._leases.values()]
            heapq.heapify(self._deadlines)
