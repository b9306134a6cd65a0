"""The narrow Kafka interfaces Ferry's logic needs; confluent-kafka satisfies them.

Tests may pass fakes for pure-logic units; delivery claims are proven against
a real broker through the real adapters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

DeliveryCallback = Callable[[Any, Any], None]


class ProducerPort(Protocol):
    """What the forwarder uses of a Kafka producer."""

    def produce(
        self,
        topic: str,
        value: str | bytes | None = ...,
        key: str | bytes | None = ...,
        partition: int = ...,
        callback: DeliveryCallback | None = ...,
        on_delivery: DeliveryCallback | None = ...,
        timestamp: int = ...,
        headers: list[tuple[str, str | bytes | None]] | None = ...,
    ) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...

    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...

    def purge(self, in_queue: bool = ..., in_flight: bool = ..., blocking: bool = ...) -> None: ...


ProducerFactory = Callable[[Callable[[Any], None]], ProducerPort]
