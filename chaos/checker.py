"""The checker: pure functions from a history and what Kafka and the subscribers saw to a verdict.

Properties checked (`Verdict.ok` holds when all do):

- every ok event is in Kafka (``kafka_lost``) and was acked through every subscription
  (``sub_lost``; an ack that was sent but whose result never came back counts, as
  ``sub_ambiguous``: the stream died with it, the sidecar may have applied it; an ack
  answered EXPIRED does not count: the record must come again);
- nothing appears in Kafka or in a subscription that was never published (``phantoms``), a
  record's key and value are the ones published (``corrupted``), and no event answered with a
  definite error appears anywhere (``failed_present``);
- per key, the first occurrences in Kafka follow the publish sequence (``order_violations``);
- the write-ahead log ends empty (``wal_pending``).

Duplicates (Kafka copies beyond the first, redeliveries to subscribers) are counted, not
failed: at-least-once allows them; fault-free scenarios assert that they are zero.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from chaos.history import FAIL, OK, UNKNOWN, Op, SubView
from testkit.delivery import order_violations
from testkit.kafka_read import KafkaRecord

SAMPLE = 10  # ids shown per problem in messages


@dataclass
class Verdict:
    """Counts and the offending ids (samples) of one run."""

    published: int = 0
    ok: int = 0
    failed: int = 0
    unknown: int = 0
    kafka_records: int = 0
    kafka_lost: list[str] = field(default_factory=list)
    kafka_duplicates: int = 0
    unknown_present: int = 0
    phantoms: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    failed_present: list[str] = field(default_factory=list)
    order_violations: list[str] = field(default_factory=list)
    sub_lost: dict[str, list[str]] = field(default_factory=dict)
    sub_ambiguous: dict[str, int] = field(default_factory=dict)
    sub_redeliveries: dict[str, int] = field(default_factory=dict)
    wal_pending: int = 0

    @property
    def lost(self) -> int:
        """Ok events missing from Kafka or from some subscription (each event counted once)."""
        missing = set(self.kafka_lost)
        for ids in self.sub_lost.values():
            missing.update(ids)
        return len(missing)

    @property
    def duplicates(self) -> int:
        return self.kafka_duplicates + sum(self.sub_redeliveries.values())

    @property
    def passed(self) -> bool:
        return not (
            self.lost or self.phantoms or self.corrupted or self.failed_present
            or self.order_violations or self.wal_pending
        )  # fmt: skip

    def problems(self) -> list[str]:
        """Human-readable failures, empty when `passed`."""
        out = []
        if self.kafka_lost:
            out.append(f"{len(self.kafka_lost)} ok events missing from Kafka: "
                       f"{self.kafka_lost[:SAMPLE]}")  # fmt: skip
        for sub, ids in self.sub_lost.items():
            if ids:
                out.append(f"{len(ids)} ok events never acked through {sub}: {ids[:SAMPLE]}")
        for name, ids in (("phantom", self.phantoms), ("corrupted", self.corrupted),
                          ("failed-yet-present", self.failed_present),
                          ("per-key order violations", self.order_violations)):  # fmt: skip
            if ids:
                out.append(f"{len(ids)} {name}: {ids[:SAMPLE]}")
        if self.wal_pending:
            out.append(f"the write-ahead log still holds {self.wal_pending} events")
        return out

    def summary(self) -> dict[str, object]:
        return {
            "published": self.published, "ok": self.ok, "fail": self.failed,
            "unknown": self.unknown, "kafka_records": self.kafka_records, "lost": self.lost,
            "kafka_lost": len(self.kafka_lost),
            "sub_lost": {k: len(v) for k, v in self.sub_lost.items()},
            "kafka_duplicates": self.kafka_duplicates,
            "sub_redeliveries": dict(self.sub_redeliveries),
            "sub_ambiguous": dict(self.sub_ambiguous), "unknown_present": self.unknown_present,
            "phantoms": len(self.phantoms), "corrupted": len(self.corrupted),
            "failed_present": len(self.failed_present),
            "order_violations": len(self.order_violations), "wal_pending": self.wal_pending,
            "passed": self.passed,
        }  # fmt: skip


def check(
    ops: Iterable[Op],
    kafka: Sequence[KafkaRecord],
    subs: Mapping[str, SubView],
    wal_pending: int,
    subscriptions: Iterable[str] = (),
) -> Verdict:
    """Judge one run. `subscriptions` names every subscription that must have seen each ok
    event (a name absent from `subs` saw nothing)."""
    by_id = {op.event_id: op for op in ops}
    verdict = Verdict(published=len(by_id), wal_pending=wal_pending)
    outcomes = Counter(op.outcome for op in by_id.values())
    verdict.ok, verdict.failed, verdict.unknown = outcomes[OK], outcomes[FAIL], outcomes[UNKNOWN]
    ok_ids = [op.event_id for op in by_id.values() if op.outcome == OK]

    verdict.kafka_records = len(kafka)
    copies = Counter(r.event_id for r in kafka if r.event_id is not None)
    verdict.kafka_duplicates = sum(n - 1 for n in copies.values())
    verdict.kafka_lost = [e for e in ok_ids if e not in copies]
    verdict.unknown_present = sum(1 for e in copies if e in by_id and by_id[e].outcome == UNKNOWN)
    failed_seen: set[str] = set()
    for record in kafka:
        op = by_id.get(record.event_id or "")
        if op is None:
            verdict.phantoms.append(record.event_id or f"{record.topic}/{record.partition}/"
                                    f"{record.offset} (no event id)")  # fmt: skip
            continue
        if record.value != op.payload or (record.key or b"") != op.key.encode():
            verdict.corrupted.append(f"{op.event_id}@{record.partition}/{record.offset}")
        if op.outcome == FAIL:
            failed_seen.add(op.event_id)
    verdict.order_violations = order_violations(kafka, published_order(by_id.values()))

    names = list(dict.fromkeys([*subscriptions, *subs]))
    for name in names:
        view = subs.get(name, SubView())
        acked = view.ack_confirmed | view.ack_unresolved
        verdict.sub_lost[name] = [e for e in ok_ids if e not in acked]
        verdict.sub_ambiguous[name] = len(
            {e for e in view.ack_unresolved - view.ack_confirmed if e in by_id}
        )
        verdict.sub_redeliveries[name] = sum(n - 1 for n in view.delivered.values())
        for event_id in view.delivered:
            op = by_id.get(event_id)
            if op is None:
                verdict.phantoms.append(f"{event_id} (via {name})")
            elif op.outcome == FAIL:
                failed_seen.add(event_id)
    verdict.failed_present = sorted(failed_seen)
    return verdict


def published_order(ops: Iterable[Op]) -> dict[str, list[str]]:
    """Each key's event ids in publish (sequence) order; a key is named "topic/key"."""
    keys: dict[str, list[Op]] = defaultdict(list)
    for op in sorted(ops, key=lambda o: o.seq):
        keys[f"{op.topic}/{op.key}"].append(op)
    return {key: [op.event_id for op in key_ops] for key, key_ops in keys.items()}


def recovery_stats(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """(median, max) of the recovery times that were measured."""
    times = sorted(v for v in values if v is not None)
    if not times:
        return None, None
    return statistics.median(times), times[-1]
