"""LeaseTable, PartitionAckTracker, RedeliveryQueue and the ack codec, driven together.

A small dispatcher written here fetches records from a simulated log, leases them to streams,
and reacts to acks, nacks, extensions, expiry, closed streams and partition moves the way the
real one must. A plain model predicts every outcome; the invariants are the at-least-once
promises: the commit never passes an unacked record, a record has at most one live lease,
nothing fetched and unacked is ever forgotten, and a late ack is never applied.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sidecar.clock import ManualClock
from sidecar.subscribe.ackcodec import DEFAULT_MAX_LENGTH, decode, encode
from sidecar.subscribe.acktracker import PartitionAckTracker
from sidecar.subscribe.leases import AckOutcome, DeliveryKey, LeaseTable, TopicPartition
from sidecar.subscribe.redelivery import RedeliveryQueue

PARTITIONS: list[TopicPartition] = [("orders", 0), ("orders", 1)]
STREAMS = [1, 2, 3]

streams = st.sampled_from(STREAMS)
durations = st.sampled_from([10.0, 2.5, 1.0, 0.5])  # first is likeliest: mostly long leases
pauses = st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0, 12.0])


@dataclass
class ModelLease:
    key: DeliveryKey
    stream: int
    attempt: int
    deadline: float
    ended_as: AckOutcome | None = None  # None while the lease is in the table


@dataclass
class ModelPartition:
    """The simulated Kafka log of one partition plus what the model knows about it."""

    log: list[int] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)  # ever acked, across reassignments
    committed: int | None = None
    metadata: str = ""
    tracker: PartitionAckTracker | None = None  # None while revoked
    fetch_index: int = 0
    tracked: list[int] = field(default_factory=list)  # since the last assignment
    awaiting: set[int] = field(default_factory=set)  # delivered, not acked, this assignment
    settled: set[int] = field(default_factory=set)  # tracked and acked (or skipped), ditto
    restored: set[int] = field(default_factory=set)  # acks from the metadata, not fetched yet


class SubscribeModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        ids = (f"ack-{n}" for n in itertools.count())
        self.table = LeaseTable(self.clock, ack_id_factory=lambda: next(ids))
        self.queue = RedeliveryQueue(self.clock)
        self.partitions = {tp: ModelPartition() for tp in PARTITIONS}
        self.open_streams: set[int] = set()
        self.leases: dict[str, ModelLease] = {}
        self.queued: dict[DeliveryKey, tuple[float, int]] = {}

    # -- the model dispatcher --------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.monotonic()

    def assign(self, tp: TopicPartition) -> None:
        part = self.partitions[tp]
        restored = decode(part.metadata, part.committed) if part.committed is not None else set()
        assert restored <= part.acked, "metadata claims acks nobody made"
        part.tracker = PartitionAckTracker(part.committed, restored)
        start = part.committed or 0
        part.fetch_index = next((i for i, o in enumerate(part.log) if o >= start), len(part.log))
        part.tracked, part.awaiting, part.settled, part.restored = [], set(), set(), set(restored)

    def grant(self, key: DeliveryKey, stream: int, duration: float, attempt: int) -> None:
        lease = self.table.grant(key, stream, duration, attempt)
        assert (lease.key, lease.stream_id, lease.attempt) == (key, stream, attempt)
        assert lease.deadline == self.now() + duration
        assert lease.ack_id not in self.leases
        self.leases[lease.ack_id] = ModelLease(key, stream, attempt, lease.deadline)

    def redeliver(self, key: DeliveryKey, attempt: int, ready_at: float) -> None:
        self.queue.schedule(key, attempt, ready_at)
        self.queued[key] = (ready_at, attempt)

    def fetch_one(self, tp: TopicPartition, gap: int, stream: int, duration: float) -> None:
        part = self.partitions[tp]
        assert part.tracker is not None
        if part.fetch_index == len(part.log):
            first = part.committed or 0
            part.log.append((part.log[-1] + 1 if part.log else first) + gap)
        offset = part.log[part.fetch_index]
        part.fetch_index += 1
        skip = part.tracker.should_skip(offset)
        assert skip is (offset in part.restored)
        assert part.tracker.track(offset) is not skip
        part.tracked.append(offset)
        part.restored = {o for o in part.restored if o > offset}
        if skip:
            assert offset in part.acked, "an unprocessed record was skipped"
            part.settled.add(offset)
            return
        part.awaiting.add(offset)
        key = DeliveryKey(*tp, offset)
        if stream in self.open_streams:
            self.grant(key, stream, duration, attempt=1)
        else:
            self.redeliver(key, 1, self.now())

    def dispatch(self, stream: int, limit: int, duration: float) -> None:
        ready = sorted((at, key) for key, (at, _) in self.queued.items() if at <= self.now())
        popped = self.queue.pop_ready(limit)
        assert [r.key for r in popped] == [key for _, key in ready[:limit]]
        for key, attempt in popped:
            assert self.queued.pop(key)[1] == attempt
            self.grant(key, stream, duration, attempt)

    def expected_outcome(self, ack_id: str) -> AckOutcome:
        lease = self.leases.get(ack_id)
        if lease is None:
            return AckOutcome.UNKNOWN
        if lease.ended_as is not None:
            return lease.ended_as
        return AckOutcome.EXPIRED if self.now() >= lease.deadline else AckOutcome.APPLIED

    def ack_one(self, ack_id: str) -> AckOutcome:
        expected = self.expected_outcome(ack_id)
        live = self.table.get(ack_id)
        outcome = self.table.ack(ack_id)
        assert outcome is expected
        assert (live is not None) is (outcome is AckOutcome.APPLIED)
        if live is not None:
            part = self.partitions[live.key.topic_partition]
            assert part.tracker is not None
            assert part.tracker.ack(live.key.offset)
            part.awaiting.remove(live.key.offset)
            part.settled.add(live.key.offset)
            part.acked.add(live.key.offset)
            self.leases[ack_id].ended_as = AckOutcome.ALREADY_ACKED
        return outcome

    def reap(self) -> None:
        due = [(m.deadline, i) for i, m in self.leases.items() if m.ended_as is None]
        expected = [i for deadline, i in sorted(due) if deadline <= self.now()]
        expired = self.table.expire()
        assert [lease.ack_id for lease in expired] == expected
        for lease in expired:
            self.leases[lease.ack_id].ended_as = AckOutcome.EXPIRED
            self.redeliver(lease.key, lease.attempt + 1, self.now())

    def live_ids(self, where: TopicPartition | None = None, stream: int | None = None) -> list[str]:
        """Ack ids of leases still in the table (even past their deadline), in record order."""
        live = [
            (m.key, i)
            for i, m in self.leases.items()
            if m.ended_as is None
            and where in (None, m.key.topic_partition)
            and stream in (None, m.stream)
        ]
        return [i for _, i in sorted(live)]

    def acks_above_commit(self, tp: TopicPartition) -> frozenset[int]:
        tracker = self.partitions[tp].tracker
        return tracker.sparse_acks() if tracker is not None else frozenset()

    # -- rules ----------------------------------------------------------------------------------

    @initialize(
        starts=st.lists(st.none() | st.integers(0, 50), min_size=2, max_size=2),
        count=st.integers(2, 6),
        duration=durations,
    )
    def start(self, starts: list[int | None], count: int, duration: float) -> None:
        self.open_streams = {1, 2}
        for tp, committed in zip(PARTITIONS, starts, strict=True):
            self.partitions[tp].committed = committed
            self.assign(tp)
            for n in range(count):
                self.fetch_one(tp, n % 2, STREAMS[n % 3], duration)

    @precondition(lambda self: any(p.tracker is not None for p in self.partitions.values()))
    @rule(
        data=st.data(),
        count=st.integers(1, 4),
        gap=st.sampled_from([0, 0, 1, 4]),
        duration=durations,
    )
    def fetch(self, data: st.DataObject, count: int, gap: int, duration: float) -> None:
        assigned = [tp for tp, p in self.partitions.items() if p.tracker is not None]
        tp = data.draw(st.sampled_from(assigned))
        stream = data.draw(streams)  # a closed stream sends the records to the queue
        for _ in range(count):
            self.fetch_one(tp, gap, stream, duration)

    @rule(stream=streams, reopen=st.sampled_from([True, False]))
    def close_stream(self, stream: int, reopen: bool) -> None:
        """A stream ends (client gone, cancelled); maybe a new one opens under its id."""
        self.open_streams.discard(stream)
        expected = self.live_ids(stream=stream)
        released = self.table.release_stream(stream)
        assert [lease.ack_id for lease in released] == expected
        for lease in released:
            self.leases[lease.ack_id].ended_as = AckOutcome.EXPIRED
            self.redeliver(lease.key, lease.attempt + 1, self.now())
        if reopen:
            self.open_streams.add(stream)

    @precondition(lambda self: bool(self.open_streams) and len(self.queue) > 0)
    @rule(data=st.data(), limit=st.integers(0, 4), duration=durations)
    def deliver_ready(self, data: st.DataObject, limit: int, duration: float) -> None:
        self.dispatch(data.draw(st.sampled_from(sorted(self.open_streams))), limit, duration)

    def pick_ack_id(self, data: st.DataObject) -> str:
        """Mostly ack ids in the table, often one past its deadline, sometimes ended or forged."""
        in_table = self.live_ids()
        overdue = [i for i in in_table if self.leases[i].deadline <= self.now()]
        ended = sorted(set(self.leases) - set(in_table))
        kind = data.draw(st.sampled_from(["newest", "oldest", "overdue", "ended", "forged"]))
        # Hypothesis favours the first element, so "newest" is what makes acks arrive out of order.
        choices = {
            "newest": in_table[::-1],
            "oldest": in_table,
            "overdue": overdue,
            "ended": ended,
        }.get(kind) or in_table[::-1]
        if kind == "forged" or not choices:
            return data.draw(st.text(max_size=8))
        return data.draw(st.sampled_from(choices))

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        self.ack_one(self.pick_ack_id(data))

    @precondition(lambda self: any(len(self.live_ids(where=tp)) >= 2 for tp in PARTITIONS))
    @rule(data=st.data())
    def ack_behind_a_slow_record(self, data: st.DataObject) -> None:
        """Later records of a partition are acked while its oldest lease is still out."""
        busy = [tp for tp in PARTITIONS if len(self.live_ids(where=tp)) >= 2]
        for ack_id in self.live_ids(where=data.draw(st.sampled_from(busy)))[1:]:
            self.ack_one(ack_id)

    @rule(data=st.data(), delay=st.sampled_from([0.0, 0.5, 5.0]))
    def nack(self, data: st.DataObject, delay: float) -> None:
        ack_id = self.pick_ack_id(data)
        expected = self.expected_outcome(ack_id)
        live = self.table.get(ack_id)
        assert self.table.nack(ack_id) is expected
        if live is not None:
            self.leases[ack_id].ended_as = AckOutcome.EXPIRED
            self.redeliver(live.key, live.attempt + 1, self.now() + delay)

    @rule(data=st.data(), duration=durations)
    def extend(self, data: st.DataObject, duration: float) -> None:
        ack_id = self.pick_ack_id(data)
        expected = self.expected_outcome(ack_id)
        outcome, deadline = self.table.extend(ack_id, duration)
        assert outcome is expected
        if outcome is AckOutcome.APPLIED:
            assert deadline == self.now() + duration
            self.leases[ack_id].deadline = deadline
        else:
            assert deadline is None

    @precondition(lambda self: len(self.table) > 0)
    @rule(data=st.data(), action=st.sampled_from(["ack", "nack", "extend"]))
    def answer_at_the_deadline(self, data: st.DataObject, action: str) -> None:
        """The client answers exactly when the lease runs out: too late, whatever it says."""
        ack_id = data.draw(st.sampled_from(self.live_ids()))
        self.clock.set(max(self.now(), self.leases[ack_id].deadline))
        if action == "ack":
            assert self.ack_one(ack_id) is AckOutcome.EXPIRED
        elif action == "nack":
            assert self.table.nack(ack_id) is AckOutcome.EXPIRED
        else:
            assert self.table.extend(ack_id, 10.0) == (AckOutcome.EXPIRED, None)

    @rule(seconds=pauses, collect_expired=st.booleans())
    def let_time_pass(self, seconds: float, collect_expired: bool) -> None:
        self.clock.advance(seconds)
        if collect_expired:
            self.reap()

    @precondition(lambda self: any(p.tracker is not None for p in self.partitions.values()))
    @rule(
        data=st.data(),
        max_length=st.sampled_from([20, 40, DEFAULT_MAX_LENGTH]),
        comes_back=st.booleans(),
    )
    def revoke(self, data: st.DataObject, max_length: int, comes_back: bool) -> None:
        """The partition moves away, with its commit; maybe it is assigned back at once."""
        # Partitions holding acks above the commit first (the likeliest pick): their metadata is
        # what the restart path needs.
        assigned = sorted(
            (tp for tp, p in self.partitions.items() if p.tracker is not None),
            key=lambda tp: not self.acks_above_commit(tp),
        )
        tp = data.draw(st.sampled_from(assigned))
        part = self.partitions[tp]
        assert part.tracker is not None
        expected = self.live_ids(where=tp)
        revoked = self.table.revoke_partitions({tp})
        assert [lease.ack_id for lease in revoked] == expected
        for lease in revoked:
            self.leases[lease.ack_id].ended_as = AckOutcome.REVOKED
        dropped = self.queue.drop_partitions({tp})
        assert {r.key for r in dropped} == {k for k in self.queued if k.topic_partition == tp}
        for redelivery in dropped:
            del self.queued[redelivery.key]
        committed = part.tracker.committable()
        if committed is not None:
            part.committed = committed
            sparse = part.tracker.sparse_acks()
            part.metadata = encode(sparse, committed, max_length)
            kept = decode(part.metadata, committed)
            assert kept == sparse if max_length == DEFAULT_MAX_LENGTH else kept <= sparse
        part.tracker, part.awaiting = None, set()
        if comes_back:
            self.assign(tp)

    @precondition(lambda self: any(p.tracker is None for p in self.partitions.values()))
    @rule(data=st.data())
    def reassign(self, data: st.DataObject) -> None:
        revoked = [tp for tp, p in self.partitions.items() if p.tracker is None]
        self.assign(data.draw(st.sampled_from(revoked)))

    @precondition(lambda self: len(self.table) + len(self.queue) >= 3)
    @rule()
    def drain(self) -> None:
        """Reassign, fetch the whole log, then let every lease and delay run out while acking."""
        self.open_streams.add(STREAMS[0])
        for tp, part in self.partitions.items():
            if part.tracker is None:
                self.assign(tp)
            while part.fetch_index < len(part.log):
                self.fetch_one(tp, 0, STREAMS[0], 1.0)
        for _ in range(10):
            if not self.table and not self.queue:
                break
            pending = [self.table.next_deadline(), self.queue.next_ready_at(), self.now()]
            self.clock.set(max(t for t in pending if t is not None))
            self.reap()
            self.dispatch(STREAMS[0], len(self.queue), 1.0)
            for ack_id in self.live_ids():
                assert self.ack_one(ack_id) is AckOutcome.APPLIED
        assert not self.table
        assert not self.queue
        for part in self.partitions.values():
            assert part.tracker is not None
            expected = part.tracked[-1] + 1 if part.tracked else part.committed
            assert part.tracker.committable() == expected
            assert part.tracker.outstanding() == 0
            assert set(part.log) <= part.acked, "a record was never acked"

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def commit_never_passes_an_unacked_record(self) -> None:
        for part in self.partitions.values():
            if part.tracker is None:
                continue
            committable = part.tracker.committable()
            if part.awaiting:
                assert committable == min(part.awaiting)
            else:
                assert committable == (part.tracked[-1] + 1 if part.tracked else part.committed)
            if committable is not None:
                assert all(o in part.acked for o in part.log if o < committable)
            above = {o for o in part.settled if committable is not None and o >= committable}
            assert part.tracker.sparse_acks() == above | part.restored
            assert part.tracker.sparse_acks() <= part.acked
            assert part.tracker.outstanding() == len(part.awaiting)

    @invariant()
    def every_awaiting_record_is_leased_or_queued_never_both(self) -> None:
        leased = Counter(self.leases[i].key for i in self.live_ids())
        assert all(count == 1 for count in leased.values()), "two live leases on one record"
        assert not set(leased) & set(self.queued)
        awaiting = {
            DeliveryKey(*tp, offset)
            for tp, part in self.partitions.items()
            for offset in part.awaiting
        }
        assert set(leased) | set(self.queued) == awaiting
        assert all(key in self.queue for key in self.queued)

    @invariant()
    def table_and_queue_agree_with_the_model(self) -> None:
        live = self.live_ids()
        assert len(self.table) == len(live)
        assert len(self.queue) == len(self.queued)
        for stream in STREAMS:
            assert self.table.outstanding(stream) == len(self.live_ids(stream=stream))
        deadlines = [self.leases[i].deadline for i in live]
        assert self.table.next_deadline() == (min(deadlines) if deadlines else None)
        ready_times = [at for at, _ in self.queued.values()]
        assert self.queue.next_ready_at() == (min(ready_times) if ready_times else None)


SubscribeModel.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    # The explain phase traces every line while shrinking, which turns seconds into minutes here.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)
test_subscribe_model = SubscribeModel.TestCase
