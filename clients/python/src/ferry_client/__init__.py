"""Python client for Ferry, the gRPC sidecar for at-least-once publish and subscribe on Kafka."""

from ferry_client._channel import DEFAULT_ADDR, channel_options, ferry_addr
from ferry_client._uuid7 import uuid7
from ferry_client.credentials import TLS, Credentials
from ferry_client.errors import FerryError
from ferry_client.publisher import (
    AckLevel,
    AsyncFerryPublisher,
    Event,
    FerryPublisher,
    KafkaPosition,
    PublishFailure,
    PublishResult,
)
from ferry_client.stream_publisher import FerryStreamPublisher
from ferry_client.subscriber import DeliveryOrder, Message, StartPosition, Subscriber

__all__ = [
    "DEFAULT_ADDR",
    "TLS",
    "AckLevel",
    "AsyncFerryPublisher",
    "Credentials",
    "DeliveryOrder",
    "Event",
    "FerryError",
    "FerryPublisher",
    "FerryStreamPublisher",
    "KafkaPosition",
    "Message",
    "PublishFailure",
    "PublishResult",
    "StartPosition",
    "Subscriber",
    "channel_options",
    "ferry_addr",
    "uuid7",
]
