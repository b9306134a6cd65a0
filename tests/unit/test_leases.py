"""LeaseTable: one holder per record, deadlines on the monotonic clock, honest ack outcomes."""

from __future__ import annotations

import itertools
import time

import pytest

from sidecar.clock import ManualClock, SystemClock
from sidecar.subscribe.leases import (
    AckIdSource,
    AckOutcome,
    DeliveryKey,
    KeyAlreadyLeased,
    LeaseTable,
    new_ack_id,
)

A = DeliveryKey("orders", 0, 10)
B = DeliveryKey("orders", 0, 11)
C = DeliveryKey("orders", 1, 10)
D = DeliveryKey("payments", 0, 10)
URL_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def make_table(clock: ManualClock, retired_capacity: int = 100_000) -> LeaseTable:
    ids = (f"ack-{n}" for n in itertools.count())
    return LeaseTable(clock, ack_id_factory=lambda: next(ids), retired_capacity=retired_capacity)


def test_manual_clock_moves_only_forward() -> None:
    clock = ManualClock(start=5.0)
    assert clock.monotonic() == 5.0
    clock.advance(1.5)
    assert clock.monotonic() == 6.5
    clock.set(10.0)
    assert clock.monotonic() == 10.0
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-0.1)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.set(9.0)
    assert clock.monotonic() == 10.0


def test_system_clock_is_monotonic_time() -> None:
    before = time.monotonic()
    reading = SystemClock().monotonic()
    assert before <= reading <= time.monotonic()


def test_default_ack_ids_are_unguessable_tokens() -> None:
    source = AckIdSource()
    ids = {source() for _ in range(5_000)}  # several draws from the operating system
    assert len(ids) == 5_000
    assert all(len(ack_id) == 20 for ack_id in ids)  # 15 random bytes each
    assert all(set(ack_id) <= URL_SAFE for ack_id in ids)
    assert new_ack_id() not in ids
    table = LeaseTable(ManualClock())  # its own source
    assert table.grant(A, 1, 30.0, 1).ack_id not in ids


def test_ack_many_answers_in_order_with_the_leases_it_ended() -> None:
    clock = ManualClock()
    table = make_table(clock)
    first = table.grant(A, 1, 30.0, 1)
    second = table.grant(B, 1, 5.0, 1)
    table.ack(first.ack_id)
    third = table.grant(C, 1, 30.0, 1)
    clock.advance(5.0)
    assert table.ack_many([third.ack_id, first.ack_id, second.ack_id, "forged", third.ack_id]) == [
        (third.ack_id, AckOutcome.APPLIED, third),
        (first.ack_id, AckOutcome.ALREADY_ACKED, None),
        (second.ack_id, AckOutcome.EXPIRED, None),
        ("forged", AckOutcome.UNKNOWN, None),
        (third.ack_id, AckOutcome.ALREADY_ACKED, None),
    ]
    assert [lease.key for lease in table.expire()] == [B]
    assert len(table) == 0


def test_grant_sets_the_deadline_from_now() -> None:
    clock = ManualClock(start=100.0)
    table = make_table(clock)
    lease = table.grant(A, stream_id=7, duration=30.0, attempt=2)
    assert (lease.ack_id, lease.key, lease.stream_id, lease.attempt) == ("ack-0", A, 7, 2)
    assert lease.deadline == 130.0
    assert table.get("ack-0") == lease
    assert len(table) == 1
    assert table.outstanding(7) == 1
    assert table.next_deadline() == 130.0


def test_bad_grants_are_rejected() -> None:
    table = make_table(ManualClock())
    with pytest.raises(ValueError, match="positive"):
        table.grant(A, 1, 0.0, 1)
    with pytest.raises(ValueError, match="count from 1"):
        table.grant(A, 1, 1.0, 0)
    assert len(table) == 0


def test_a_record_has_one_holder_at_a_time() -> None:
    table = make_table(ManualClock())
    first = table.grant(A, 1, 30.0, 1)
    with pytest.raises(KeyAlreadyLeased):
        table.grant(A, 2, 30.0, 1)
    table.grant(B, 2, 30.0, 1)
    assert table.ack(first.ack_id) is AckOutcome.APPLIED
    assert table.grant(A, 2, 30.0, 2).stream_id == 2


def test_repeated_ack_id_from_the_factory_is_refused() -> None:
    table = LeaseTable(ManualClock(), ack_id_factory=lambda: "same")
    table.grant(A, 1, 30.0, 1)
    with pytest.raises(RuntimeError, match="repeated"):
        table.grant(B, 1, 30.0, 1)
    table.ack("same")
    with pytest.raises(RuntimeError, match="repeated"):
        table.grant(B, 1, 30.0, 1)


def test_ack_then_ack_again_is_already_acked() -> None:
    table = make_table(ManualClock())
    lease = table.grant(A, 1, 30.0, 1)
    assert table.ack(lease.ack_id) is AckOutcome.APPLIED
    assert table.ack(lease.ack_id) is AckOutcome.ALREADY_ACKED
    assert table.nack(lease.ack_id) is AckOutcome.ALREADY_ACKED
    assert table.extend(lease.ack_id, 5.0) == (AckOutcome.ALREADY_ACKED, None)
    assert table.get(lease.ack_id) is None
    assert len(table) == 0
    assert table.outstanding(1) == 0


def test_never_issued_ack_id_is_unknown() -> None:
    table = make_table(ManualClock())
    table.grant(A, 1, 30.0, 1)
    assert table.ack("forged") is AckOutcome.UNKNOWN
    assert table.nack("forged") is AckOutcome.UNKNOWN
    assert table.extend("forged", 5.0) == (AckOutcome.UNKNOWN, None)
    assert len(table) == 1


def test_late_ack_is_expired_even_before_expire_runs() -> None:
    clock = ManualClock()
    table = make_table(clock)
    lease = table.grant(A, 1, 30.0, 1)
    clock.advance(30.0)
    assert table.ack(lease.ack_id) is AckOutcome.EXPIRED
    assert table.nack(lease.ack_id) is AckOutcome.EXPIRED
    assert table.extend(lease.ack_id, 30.0) == (AckOutcome.EXPIRED, None)
    # Still in the table, so expire() hands it out for redelivery.
    assert len(table) == 1
    assert table.expire() == [lease]
    assert table.ack(lease.ack_id) is AckOutcome.EXPIRED
    assert len(table) == 0


def test_ack_just_before_the_deadline_applies() -> None:
    clock = ManualClock()
    table = make_table(clock)
    lease = table.grant(A, 1, 30.0, 1)
    clock.advance(29.999)
    assert table.ack(lease.ack_id) is AckOutcome.APPLIED
    clock.advance(1.0)
    assert table.expire() == []


def test_nack_ends_the_lease_and_later_acks_are_expired() -> None:
    table = make_table(ManualClock())
    lease = table.grant(A, 1, 30.0, 1)
    assert table.nack(lease.ack_id) is AckOutcome.APPLIED
    assert table.ack(lease.ack_id) is AckOutcome.EXPIRED
    assert table.nack(lease.ack_id) is AckOutcome.EXPIRED
    assert len(table) == 0
    assert table.grant(A, 1, 30.0, 2).attempt == 2


def test_extend_moves_the_deadline_from_now() -> None:
    clock = ManualClock()
    table = make_table(clock)
    lease = table.grant(A, 1, 10.0, 1)
    clock.advance(8.0)
    assert table.extend(lease.ack_id, 10.0) == (AckOutcome.APPLIED, 18.0)
    assert table.next_deadline() == 18.0
    clock.advance(5.0)  # past the original deadline
    assert table.expire() == []
    assert table.ack(lease.ack_id) is AckOutcome.APPLIED


def test_extend_can_shorten_a_lease() -> None:
    clock = ManualClock()
    table = make_table(clock)
    lease = table.grant(A, 1, 60.0, 1)
    assert table.extend(lease.ack_id, 1.0) == (AckOutcome.APPLIED, 1.0)
    clock.advance(1.0)
    expired = table.expire()
    assert [(e.ack_id, e.deadline) for e in expired] == [(lease.ack_id, 1.0)]
    clock.advance(60.0)
    assert table.expire() == []


def test_extend_needs_a_positive_duration() -> None:
    table = make_table(ManualClock())
    lease = table.grant(A, 1, 10.0, 1)
    with pytest.raises(ValueError, match="positive"):
        table.extend(lease.ack_id, 0.0)


def test_expire_returns_passed_leases_earliest_first() -> None:
    clock = ManualClock()
    table = make_table(clock)
    late = table.grant(A, 1, 20.0, 1)
    early = table.grant(B, 2, 10.0, 1)
    kept = table.grant(C, 1, 40.0, 1)
    clock.advance(25.0)
    assert table.expire() == [early, late]
    assert table.expire() == []
    assert len(table) == 1
    assert table.ack(early.ack_id) is AckOutcome.EXPIRED
    assert table.ack(kept.ack_id) is AckOutcome.APPLIED


def test_next_deadline_skips_ended_leases() -> None:
    clock = ManualClock()
    table = make_table(clock)
    first = table.grant(A, 1, 10.0, 1)
    table.grant(B, 1, 20.0, 1)
    table.ack(first.ack_id)
    assert table.next_deadline() == 20.0
    table.release_stream(1)
    assert table.next_deadline() is None


def test_release_stream_returns_only_that_streams_leases() -> None:
    table = make_table(ManualClock())
    a = table.grant(A, 1, 30.0, 1)
    b = table.grant(B, 2, 30.0, 1)
    c = table.grant(C, 1, 30.0, 1)
    assert table.release_stream(1) == [a, c]
    assert table.release_stream(1) == []
    assert table.outstanding(1) == 0
    assert table.outstanding(2) == 1
    assert table.ack(a.ack_id) is AckOutcome.EXPIRED
    assert table.ack(b.ack_id) is AckOutcome.APPLIED
    table.grant(A, 2, 30.0, 2)


def test_revoked_partitions_answer_revoked() -> None:
    table = make_table(ManualClock())
    a = table.grant(A, 1, 30.0, 1)
    b = table.grant(B, 2, 30.0, 1)
    c = table.grant(C, 1, 30.0, 1)
    d = table.grant(D, 2, 30.0, 1)
    assert table.revoke_partitions([("orders", 0), ("payments", 0), ("absent", 3)]) == [a, b, d]
    assert [table.ack(x.ack_id) for x in (a, b, c, d)] == [
        AckOutcome.REVOKED,
        AckOutcome.REVOKED,
        AckOutcome.APPLIED,
        AckOutcome.REVOKED,
    ]
    assert len(table) == 0


def test_oldest_retired_ack_ids_are_forgotten() -> None:
    table = make_table(ManualClock(), retired_capacity=2)
    leases = [table.grant(key, 1, 30.0, 1) for key in (A, B, C)]
    for lease in leases:
        table.ack(lease.ack_id)
    assert table.ack(leases[0].ack_id) is AckOutcome.UNKNOWN
    assert table.ack(leases[1].ack_id) is AckOutcome.ALREADY_ACKED
    assert table.ack(leases[2].ack_id) is AckOutcome.ALREADY_ACKED


def test_deadline_heap_follows_live_leases_not_throughput() -> None:
    table = make_table(ManualClock())
    for offset in range(10_000):
        table.ack(table.grant(DeliveryKey("orders", 0, offset), 1, 30.0, 1).ack_id)
    assert len(table._deadlines) <= 2 * len(table) + 65
