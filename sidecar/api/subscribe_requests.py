"""Subscriber requests, validated: every client-input check of the Subscriber service.

Pure functions; each error is an InvalidArgument naming its field.
"""

from __future__ import annotations

from collections.abc import Sequence

from sidecar._gen.ferry.v1 import subscriber_pb2 as pb
from sidecar.errors import InvalidArgument
from sidecar.subscribe.leases import ACK_ID_LENGTH
from sidecar.subscribe.stream import StreamOptions
from sidecar.subscribe.subscription import SubscriptionSettings
from sidecar.validation import check_subscription, check_topic, duration_seconds

DEFAULT_LEASE_S = 30.0
MIN_LEASE_S, MAX_LEASE_S = 1.0, 600.0
DEFAULT_MAX_EVENTS, MAX_MAX_EVENTS = 1000, 100_000
DEFAULT_MAX_BYTES, MAX_MAX_BYTES = 64 * 1024 * 1024, 1024 * 1024 * 1024
DEFAULT_MIN_BACKOFF_S, DEFAULT_MAX_BACKOFF_S, MAX_BACKOFF_S = 0.1, 10.0, 3600.0
MAX_TOPICS = 100
MAX_ACK_IDS = 10_000
MAX_NACK_DELAY_S = 3600.0

_ORDERS = (pb.DELIVERY_ORDER_UNSPECIFIED, pb.DELIVERY_ORDER_UNORDERED, pb.DELIVERY_ORDER_PER_KEY)
_STARTS = (pb.START_POSITION_UNSPECIFIED, pb.START_POSITION_EARLIEST, pb.START_POSITION_LATEST)


def parse_open(
    message: pb.OpenSubscription, allowlist: frozenset[str] = frozenset()
) -> tuple[SubscriptionSettings, StreamOptions]:
    """Validate OpenSubscription; every error names its field. Topics and the dead-letter
    topic must be inside `allowlist` (when it is not empty)."""
    name = check_subscription(message.subscription, "open.subscription")
    if not message.topics or len(message.topics) > MAX_TOPICS:
        raise InvalidArgument("open.topics", f"must list 1-{MAX_TOPICS} topics")
    seen: set[str] = set()
    for i, topic in enumerate(message.topics):
        check_topic(topic, f"open.topics[{i}]", allowlist)
        if topic in seen:
            raise InvalidArgument(f"open.topics[{i}]", f"repeats topic {topic!r}")
        seen.add(topic)
    topics = tuple(sorted(seen))
    lease = DEFAULT_LEASE_S
    if message.HasField("lease_duration"):
        lease = duration_seconds(
            message.lease_duration, "open.lease_duration", MIN_LEASE_S, MAX_LEASE_S
        )
    max_events = message.max_outstanding_events or DEFAULT_MAX_EVENTS
    if not 0 < max_events <= MAX_MAX_EVENTS:
        raise InvalidArgument("open.max_outstanding_events", f"must be 1-{MAX_MAX_EVENTS}")
    max_bytes = message.max_outstanding_bytes or DEFAULT_MAX_BYTES
    if not 0 < max_bytes <= MAX_MAX_BYTES:
        raise InvalidArgument("open.max_outstanding_bytes", f"must be 1-{MAX_MAX_BYTES} (1 GiB)")
    attempts, dlq = message.max_delivery_attempts, message.dead_letter_topic
    if attempts < 0 or attempts == 1:
        raise InvalidArgument("open.max_delivery_attempts", "must be 0 (unlimited) or at least 2")
    if attempts and not dlq:
        raise InvalidArgument(
            "open.dead_letter_topic", "is required when max_delivery_attempts is set"
        )
    if dlq:
        check_topic(dlq, "open.dead_letter_topic", allowlist)
        if dlq in seen:
            raise InvalidArgument("open.dead_letter_topic", "must not be a subscribed topic")
    if message.start_position not in _STARTS:
        raise InvalidArgument("open.start_position", f"unknown value {message.start_position}")
    if message.delivery_order not in _ORDERS:
        raise InvalidArgument("open.delivery_order", f"unknown value {message.delivery_order}")
    low, high = DEFAULT_MIN_BACKOFF_S, DEFAULT_MAX_BACKOFF_S
    if message.HasField("min_redelivery_backoff"):
        low = duration_seconds(
            message.min_redelivery_backoff, "open.min_redelivery_backoff", 0.0, MAX_BACKOFF_S
        )
    if message.HasField("max_redelivery_backoff"):
        high = duration_seconds(
            message.max_redelivery_backoff, "open.max_redelivery_backoff", 0.0, MAX_BACKOFF_S
        )
    if low > high:
        raise InvalidArgument(
            "open.min_redelivery_backoff",
            f"must be at most max_redelivery_backoff ({high:g}s; {DEFAULT_MAX_BACKOFF_S:g}s "
            "when not set)",
        )
    settings = SubscriptionSettings(
        name,
        topics,
        attempts,
        dlq,
        message.start_position == pb.START_POSITION_LATEST,
        per_key_order=message.delivery_order == pb.DELIVERY_ORDER_PER_KEY,
        min_redelivery_backoff=low,
        max_redelivery_backoff=high,
    )
    return settings, StreamOptions(lease, max_events, max_bytes)


def ack_ids(ids: Sequence[str], field: str) -> list[str]:
    if not ids or len(ids) > MAX_ACK_IDS:
        raise InvalidArgument(field, f"must hold 1-{MAX_ACK_IDS} ack ids")
    # Results echo the ids: bounding them bounds every AckResults message.
    if max(map(len, ids)) > ACK_ID_LENGTH:
        index = next(i for i, ack_id in enumerate(ids) if len(ack_id) > ACK_ID_LENGTH)
        raise InvalidArgument(
            f"{field}[{index}]", f"is longer than Ferry's ack ids ({ACK_ID_LENGTH} characters)"
        )
    return list(ids)


def nack_delay(request: pb.NackIds | pb.NackRequest, field: str) -> float | None:
    """The requested redelivery delay; None (unset) means the subscription's backoff."""
    if not request.HasField("redelivery_delay"):
        return None
    return duration_seconds(request.redelivery_delay, field, 0.0, MAX_NACK_DELAY_S)
