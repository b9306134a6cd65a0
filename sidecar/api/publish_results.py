"""Publish outcomes as response messages, filled in place (several times cheaper than copies)."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar.api.status import code_name, to_failure
from sidecar.model import Accepted, Outcome


def fill_entries(
    entries: RepeatedCompositeFieldContainer[pb.PublishBatchEntry], outcomes: Sequence[Outcome]
) -> list[str]:
    """One entry per outcome, in order: its result, or why it was refused. Returns the status
    code name of each refused entry (usually none), for the metrics."""
    add_entry = entries.add
    refused: list[str] = []
    for outcome in outcomes:
        entry = add_entry()
        if isinstance(outcome, Accepted):
            fill_result(entry.result, outcome)
        else:
            entry.error.CopyFrom(to_failure(outcome.error))
            refused.append(code_name(outcome.error))
    return refused


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
