"""Publish outcomes as response messages, filled in place (several times cheaper than copies)."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar.api.status import to_failure
from sidecar.model import Accepted, Outcome


def fill_entries(
    entries: RepeatedCompositeFieldContainer[pb.PublishBatchEntry], outcomes: Sequence[Outcome]
) -> None:
    """One entry per outcome, in order: its result, or why it was refused."""
    add_entry = entries.add
    for outcome in outcomes:
        entry = add_entry()
        if isinstance(outcome, Accepted):
            fill_result(entry.result, outcome)
        else:
            entry.error.CopyFrom(to_failure(outcome.error))


def fill_result(result: pb.PublishResult, outcome: Accepted) -> None:
    result.event_id = outcome.event_id
    result.sequence = outcome.sequence
    if outcome.duplicate:
        result.duplicate = True
    if outcome.publish_time_ms:
        stamp = result.publish_time
        stamp.seconds, millis = divmod(outcome.publish_time_ms, 1000)
        stamp.nanos = millis * 1_000_000
    if outcome.position is not None:
        result.kafka_position.partition = outcome.position.partition
        result.kafka_position.offset = outcome.position.offset
