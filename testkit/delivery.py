"""What Kafka holds, checked against what was published: the per-key order of first
occurrences (`order_violations`) and, for tests, `Delivery` (contents, duplicates, gaps)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar.model import EVENT_ID_HEADER
from testkit.kafka_read import KafkaRecord
from testkit.publishing import event_headers


def order_violations(
    records: Iterable[KafkaRecord], published: Mapping[str, Sequence[str]]
) -> list[str]:
    """Keys whose events' first occurrences in Kafka do not follow their publish order.

    `published` maps a key's name to its event ids in publish order; a record counts under
    the key its event id was published with, and events never seen are not gaps. Each
    partition is read in offset order; a key whose first occurrences span partitions is a
    violation too (one key, one partition). Messages name the key and the events' 1-based
    positions in its publish order ("seq")."""
    key_of: dict[str, tuple[str, int]] = {}
    for key, event_ids in published.items():
        for seq, event_id in enumerate(event_ids, start=1):
            key_of[event_id] = (key, seq)
    first: dict[str, list[tuple[int, int]]] = {}  # key -> (partition, seq) of first occurrences
    seen: set[str] = set()
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        found = record.event_id
        if found is None or found not in key_of or found in seen:
            continue
        seen.add(found)
        key, seq = key_of[found]
        first.setdefault(key, []).append((record.partition, seq))
    bad = []
    for key, items in first.items():
        partitions = {p for p, _ in items}
        if len(partitions) > 1:
            bad.append(f"{key}: spread over partitions {sorted(partitions)}")
            continue
        for (_, prev), (_, nxt) in itertools.pairwise(items):
            if nxt <= prev:
                bad.append(f"{key}: seq {nxt} after seq {prev}")
                break
    return bad


@dataclass
class Delivery:
    """Records read back from Kafka, by event id, to check against what was published."""

    records: list[KafkaRecord]
    by_id: dict[str, list[KafkaRecord]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for record in self.records:
            event_id = record.event_id
            assert event_id is not None, f"a record without {EVENT_ID_HEADER}: {record}"
            self.by_id.setdefault(event_id, []).append(record)

    @property
    def duplicates(self) -> int:
        return len(self.records) - len(self.by_id)

    def missing(self, event_ids: Iterable[str]) -> list[str]:
        return [e for e in event_ids if e not in self.by_id]

    def assert_contents(self, expected: Mapping[str, pb.Event]) -> None:
        """Every expected event is there, each copy with its key, payload and headers."""
        missing = self.missing(expected)
        assert not missing, f"{len(missing)} acked events missing from Kafka, e.g. {missing[:5]}"
        for event_id, ev in expected.items():
            for record in self.by_id[event_id]:
                assert record.key == (ev.key if ev.HasField("key") else None), event_id
                assert record.value == (ev.payload if ev.HasField("payload") else None), event_id
                assert record.user_headers == event_headers(ev), event_id

    def order_violations(self, published: Mapping[bytes, Sequence[str]]) -> list[str]:
        """`order_violations` of these records; `published` maps each key to its event ids
        in publish order."""
        return order_violations(
            self.records, {key.decode(errors="replace"): ids for key, ids in published.items()}
        )
