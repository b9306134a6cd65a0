"""The subscribe side: Kafka records handed to subscribers under leases, at least once.

Re-exported here is its pure core (`leases`, `acktracker`, `ackcodec`, `redelivery`): plain,
single-threaded Python driven by an injected clock, which never imports Kafka, gRPC or asyncio,
never blocks and never spawns anything. The modules that do I/O call into it and act on what it
returns; importing this package must stay free of them.
"""

from sidecar.subscribe.ackcodec import decode as decode_acks
from sidecar.subscribe.ackcodec import encode as encode_acks
from sidecar.subscribe.acktracker import PartitionAckTracker
from sidecar.subscribe.leases import (
    AckOutcome,
    DeliveryKey,
    KeyAlreadyLeased,
    Lease,
    LeaseTable,
    TopicPartition,
)
from sidecar.subscribe.redelivery import Redelivery, RedeliveryQueue

__all__ = [
    "AckOutcome",
    "DeliveryKey",
    "KeyAlreadyLeased",
    "Lease",
    "LeaseTable",
    "PartitionAckTracker",
    "Redelivery",
    "RedeliveryQueue",
    "TopicPartition",
    "decode_acks",
    "encode_acks",
]
