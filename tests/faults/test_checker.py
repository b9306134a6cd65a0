"""The checker on hand-made histories: no Kafka, no Ferry."""

from __future__ import annotations

from collections import Counter

import pytest

from chaos.checker import check, published_order, recovery_stats
from chaos.history import FAIL, OK, UNKNOWN, Attempt, History, Op, SubView
from sidecar.model import EVENT_ID_HEADER
from testkit.delivery import order_violations
from testkit.kafka_read import KafkaRecord

pytestmark = pytest.mark.faults
T = "topic-a"


def op(event_id: str, key: str, seq: int, *outcomes: str) -> Op:
    o = Op(event_id, T, key, seq, f"payload-{event_id}".encode())
    o.attempts = [Attempt(x, "OK" if x == OK else "UNAVAILABLE", 0.0, 1.0) for x in outcomes]
    return o


def rec(o: Op, offset: int, partition: int = 0, **change: object) -> KafkaRecord:
    """A record of `o`; `event_id=None` leaves the event id header out."""
    fields: dict[str, object] = {
        "topic": o.topic, "partition": partition, "offset": offset, "key": o.key.encode(),
        "value": o.payload, "event_id": o.event_id,
    }  # fmt: skip
    fields.update(change)
    event_id = fields.pop("event_id")
    fields["headers"] = {EVENT_ID_HEADER: str(event_id).encode()} if event_id is not None else {}
    return KafkaRecord(**fields)  # type: ignore[arg-type]


def acked(*ops: Op, redeliver: int = 0) -> SubView:
    view = SubView()
    for o in ops:
        view.delivered[o.event_id] += 1 + redeliver
        view.ack_confirmed.add(o.event_id)
    return view


def test_clean_run_passes_with_no_duplicates() -> None:
    ops = [op("a1", "a", 1, OK), op("a2", "a", 2, OK), op("b1", "b", 1, OK)]
    kafka = [rec(ops[0], 0), rec(ops[1], 1), rec(ops[2], 0, partition=1)]
    v = check(ops, kafka, {"s": acked(*ops)}, 0, ["s"])
    assert v.passed, v.problems()
    assert (v.ok, v.lost, v.duplicates, v.kafka_records) == (3, 0, 0, 3)


def test_outcome_of_an_event_is_ok_if_any_attempt_was_ok() -> None:
    assert op("x", "k", 1, UNKNOWN, OK).outcome == OK
    assert op("x", "k", 1, FAIL, UNKNOWN).outcome == UNKNOWN
    assert op("x", "k", 1, FAIL, FAIL).outcome == FAIL
    assert op("x", "k", 1).outcome == UNKNOWN  # never answered at all


def test_ok_event_missing_from_kafka_is_lost() -> None:
    ops = [op("a1", "a", 1, OK), op("a2", "a", 2, OK)]
    v = check(ops, [rec(ops[0], 0)], {"s": acked(*ops)}, 0, ["s"])
    assert not v.passed
    assert v.kafka_lost == ["a2"]
    assert v.lost == 1


def test_unknown_and_failed_events_may_be_missing() -> None:
    ops = [op("a1", "a", 1, OK), op("a2", "a", 2, UNKNOWN), op("a3", "a", 3, FAIL)]
    v = check(ops, [rec(ops[0], 0)], {"s": acked(ops[0])}, 0, ["s"])
    assert v.passed, v.problems()
    assert (v.ok, v.unknown, v.failed) == (1, 1, 1)


def test_unknown_event_present_is_fine_and_counted() -> None:
    ops = [op("a1", "a", 1, UNKNOWN)]
    v = check(ops, [rec(ops[0], 0)], {"s": acked(*ops)}, 0, ["s"])
    assert v.passed
    assert v.unknown_present == 1


def test_failed_event_present_in_kafka_or_subscription_is_a_violation() -> None:
    ops = [op("a1", "a", 1, FAIL), op("b1", "b", 1, FAIL)]
    v = check(ops, [rec(ops[0], 0)], {"s": acked(ops[1])}, 0, ["s"])
    assert not v.passed
    assert v.failed_present == ["a1", "b1"]


def test_record_never_published_is_a_phantom() -> None:
    ops = [op("a1", "a", 1, OK)]
    stray = KafkaRecord(T, 0, 5, b"z", b"zzz", {EVENT_ID_HEADER: b"never-published"})
    no_header = KafkaRecord(T, 0, 6, None, b"raw", {})
    view = acked(*ops)
    view.delivered["ghost"] += 1
    v = check(ops, [rec(ops[0], 0), stray, no_header], {"s": view}, 0, ["s"])
    assert not v.passed
    assert v.phantoms == ["never-published", f"{T}/0/6 (no event id)", "ghost (via s)"]


def test_changed_payload_or_key_is_corruption() -> None:
    ops = [op("a1", "a", 1, OK), op("a2", "a", 2, OK)]
    kafka = [rec(ops[0], 0, value=b"other"), rec(ops[1], 1, key=b"b")]
    v = check(ops, kafka, {"s": acked(*ops)}, 0, ["s"])
    assert v.corrupted == ["a1@0/0", "a2@0/1"]
    assert not v.passed


def test_duplicates_are_counted_not_failed() -> None:
    ops = [op("a1", "a", 1, OK), op("a2", "a", 2, OK)]
    kafka = [rec(ops[0], 0), rec(ops[1], 1), rec(ops[0], 2), rec(ops[1], 3)]
    v = check(ops, kafka, {"s": acked(*ops, redeliver=2)}, 0, ["s"])
    assert v.passed, v.problems()
    assert v.kafka_duplicates == 2
    assert v.sub_redeliveries == {"s": 4}
    assert v.duplicates == 6


def test_order_follows_first_occurrence_so_a_resent_tail_is_fine() -> None:
    a = [op(f"a{i}", "a", i, OK) for i in (1, 2, 3)]
    # a1 a2 a3, then a resend of a2 a3 after a lost ack: the first occurrences are in order
    kafka = [rec(a[0], 0), rec(a[1], 1), rec(a[2], 2), rec(a[1], 3), rec(a[2], 4)]
    assert order_violations(kafka, published_order(a)) == []


def test_order_violation_detected_per_key() -> None:
    a = [op(f"a{i}", "a", i, OK) for i in (1, 2, 3)]
    b = [op(f"b{i}", "b", i, OK) for i in (1, 2)]
    kafka = [rec(a[0], 0), rec(a[2], 1), rec(a[1], 2), rec(b[0], 3), rec(b[1], 4)]
    v = check([*a, *b], kafka, {"s": acked(*a, *b)}, 0, ["s"])
    assert v.order_violations == [f"{T}/a: seq 2 after seq 3"]
    assert not v.passed


def test_gaps_from_unknown_events_are_not_order_violations() -> None:
    a = [op("a1", "a", 1, OK), op("a2", "a", 2, UNKNOWN), op("a3", "a", 3, OK)]
    kafka = [rec(a[0], 0), rec(a[2], 1)]
    assert check(a, kafka, {"s": acked(a[0], a[2])}, 0, ["s"]).passed


def test_key_spread_over_partitions_is_reported() -> None:
    a = [op("a1", "a", 1, OK), op("a2", "a", 2, OK)]
    kafka = [rec(a[0], 0, partition=0), rec(a[1], 0, partition=1)]
    assert order_violations(kafka, published_order(a)) == [f"{T}/a: spread over partitions [0, 1]"]


def test_subscription_that_missed_an_event_loses_it() -> None:
    ops = [op("a1", "a", 1, OK), op("a2", "a", 2, OK)]
    kafka = [rec(ops[0], 0), rec(ops[1], 1)]
    v = check(ops, kafka, {"s1": acked(*ops), "s2": acked(ops[0])}, 0, ["s1", "s2", "s3"])
    assert v.sub_lost == {"s1": [], "s2": ["a2"], "s3": ["a1", "a2"]}
    assert v.lost == 2  # each event once, however many subscriptions missed it
    assert not v.passed


def test_delivered_but_never_acked_is_lost_for_the_subscription() -> None:
    ops = [op("a1", "a", 1, OK)]
    view = SubView(delivered=Counter({"a1": 1}))
    v = check(ops, [rec(ops[0], 0)], {"s": view}, 0, ["s"])
    assert v.sub_lost == {"s": ["a1"]}


def test_ack_sent_without_result_is_ambiguous_not_lost() -> None:
    ops = [op("a1", "a", 1, OK)]
    view = SubView(delivered=Counter({"a1": 1}), ack_unresolved={"a1"})
    v = check(ops, [rec(ops[0], 0)], {"s": view}, 0, ["s"])
    assert v.passed, v.problems()
    assert v.sub_ambiguous == {"s": 1}


def test_ack_answered_expired_does_not_count_as_acked() -> None:
    h = History()
    o = h.begin("a1", T, "a", 1, b"p")
    h.attempt(o, Attempt(OK, "OK", 0, 1))
    h.delivered("s", ["a1"])
    h.ack_sent("s", ["a1"])
    h.ack_result("s", "a1", "EXPIRED")  # never delivered again afterwards: lost
    kafka = [KafkaRecord(T, 0, 0, b"a", b"p", {EVENT_ID_HEADER: b"a1"})]
    v = check(h.ops(), kafka, h.sub_views(), 0, ["s"])
    assert v.sub_lost == {"s": ["a1"]}
    assert v.sub_ambiguous == {"s": 0}


def test_pending_wal_rows_fail_the_run() -> None:
    ops = [op("a1", "a", 1, OK)]
    v = check(ops, [rec(ops[0], 0)], {"s": acked(*ops)}, 3, ["s"])
    assert not v.passed
    assert v.problems() == ["the write-ahead log still holds 3 events"]


def test_history_records_concurrently_and_refuses_a_reused_id() -> None:
    h = History()
    o = h.begin("e1", T, "k", 1, b"p")
    h.attempt(o, Attempt(UNKNOWN, "DEADLINE_EXCEEDED", 0, 1))
    h.attempt(o, Attempt(OK, "OK", 1, 2))
    h.delivered("s", ["e1", "e1"])
    h.ack_sent("s", ["e1"])
    h.ack_result("s", "e1", "EXPIRED")
    h.ack_result("s", "e1", "APPLIED")
    with pytest.raises(ValueError, match="twice"):
        h.begin("e1", T, "k", 2, b"p")
    [snap] = h.ops()
    assert snap.outcome == OK
    assert snap.ok_at == 2
    view = h.sub_views()["s"]
    assert view.delivered["e1"] == 2
    assert view.ack_confirmed == {"e1"}
    assert view.statuses == Counter({"EXPIRED": 1, "APPLIED": 1})
    assert h.error_codes() == Counter({"DEADLINE_EXCEEDED": 1})


def test_recovery_stats() -> None:
    assert recovery_stats([None, 3.0, 1.0, 2.0]) == (2.0, 3.0)
    assert recovery_stats([1.0, 2.0]) == (1.5, 2.0)
    assert recovery_stats([None]) == (None, None)
