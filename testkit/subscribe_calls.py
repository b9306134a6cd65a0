"""The Subscriber API's messages and unary calls, built the way tests need them: ack statuses,
durations, an OpenSubscription, fresh subscription names, and unary Ack, Nack, ExtendLease."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from google.protobuf import duration_pb2

from sidecar._gen.ferry.v1 import subscriber_pb2 as pb
from testkit.ferry_process import FerryProcess

APPLIED = pb.ACK_ID_STATUS_APPLIED
ALREADY_ACKED = pb.ACK_ID_STATUS_ALREADY_ACKED
EXPIRED = pb.ACK_ID_STATUS_EXPIRED
UNKNOWN = pb.ACK_ID_STATUS_UNKNOWN
REVOKED = pb.ACK_ID_STATUS_REVOKED
ACK_CHUNK = 1_000  # ack ids per message; the server takes at most 10,000


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def ack_status(value: int) -> str:
    """An AckIdStatus's name without its prefix ("APPLIED", "EXPIRED", ...)."""
    return pb.AckIdStatus.Name(value).removeprefix("ACK_ID_STATUS_")  # type: ignore[arg-type]


def open_request(
    subscription: str,
    topics: Sequence[str],
    *,
    lease_s: float | None = None,
    max_outstanding: int = 0,
    max_bytes: int = 0,
    max_attempts: int = 0,
    dead_letter_topic: str = "",
    start_position: int = pb.START_POSITION_UNSPECIFIED,
) -> pb.OpenSubscription:
    message = pb.OpenSubscription(
        subscription=subscription,
        topics=list(topics),
        max_outstanding_events=max_outstanding,
        max_outstanding_bytes=max_bytes,
        max_delivery_attempts=max_attempts,
        dead_letter_topic=dead_letter_topic,
        start_position=start_position,  # type: ignore[arg-type]
    )
    if lease_s is not None:
        message.lease_duration.CopyFrom(duration(lease_s))
    return message


#: Ferry's default --group-prefix: subscription `s` is the Kafka consumer group `ferry.s`.
GROUP_PREFIX = "ferry."


def group_of(subscription: str, prefix: str = GROUP_PREFIX) -> str:
    """The Kafka consumer group of a subscription (Ferry started without --group-prefix)."""
    return prefix + subscription


def unique_subscription(prefix: str = "sub") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def unary_ack(ferry: FerryProcess, subscription: str, ack_ids: Sequence[str]) -> list[int]:
    reply = ferry.subscriber().Ack(
        pb.AckRequest(subscription=subscription, ack_ids=list(ack_ids)), timeout=10
    )
    return [r.status for r in reply.results]


def unary_nack(
    ferry: FerryProcess, subscription: str, ack_ids: Sequence[str], delay_s: float | None = None
) -> list[int]:
    request = pb.NackRequest(subscription=subscription, ack_ids=list(ack_ids))
    if delay_s is not None:
        request.redelivery_delay.CopyFrom(duration(delay_s))
    return [r.status for r in ferry.subscriber().Nack(request, timeout=10).results]


def unary_extend(
    ferry: FerryProcess, subscription: str, ack_ids: Sequence[str], lease_s: float
) -> list[pb.AckIdResult]:
    request = pb.ExtendLeaseRequest(
        subscription=subscription, ack_ids=list(ack_ids), lease_duration=duration(lease_s)
    )
    return list(ferry.subscriber().ExtendLease(request, timeout=10).results)
