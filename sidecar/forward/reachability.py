"""Whether Kafka answers the forwarder: from delivery reports, producer errors and probes.

Sends never time out (sidecar/kafka/producer.py), so a Kafka that went away shows up as
silence, not as failed deliveries, and an idle producer reports nothing at all. So whenever
no delivery was reported for a while, a probe asks Kafka for metadata, on a thread of its
own (`kafka-probe`), so that a slow answer never holds up sending.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

from sidecar.kafka.auth_failures import auth_failure
from sidecar.kafka.ports import ProducerPort

log = structlog.get_logger(__name__)

PROBE_EVERY_S = 5.0
PROBE_TIMEOUT_S = 2.0  # while Kafka looks reachable: a slow answer is not an outage
#: Producer errors that mean no broker can be reached at all.
UNREACHABLE_ERRORS = frozenset({"_ALL_BROKERS_DOWN", "_TRANSPORT", "_RESOLVE"})


class KafkaReachability:
    """Kafka's reachability as the forwarder sees it; `reachable` is None until known."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.reachable: bool | None = None
        self._last_delivery = 0.0  # clock() of the last successful delivery report

    def delivered(self) -> None:
        """Kafka acknowledged records just now."""
        self._last_delivery = self._clock()
        self.set(True)

    def producer_error(self, err: Any) -> None:
        """An error the producer reported (its error callback)."""
        name = err.name() if hasattr(err, "name") else str(err)
        refused = auth_failure(err)
        if refused is not None:
            # Kafka refuses Ferry's credentials or certificates: down until fixed and restarted,
            # while a probe or delivery cannot succeed (kafka_auth_failed is logged with it).
            self.set(False, f"{refused.kind} refused ({refused.code})")
        elif name in UNREACHABLE_ERRORS:
            self.set(False, name)

    def set(self, reachable: bool, reason: str = "") -> None:
        if reachable == self.reachable:
            return
        self.reachable = reachable
        if reachable:
            log.info("kafka_reachable")
        else:
            log.warning("kafka_unreachable", reason=reason)

    def probe_until(
        self, stopping: threading.Event, producer: Callable[[], ProducerPort | None]
    ) -> None:
        """Probe whenever no delivery was reported for PROBE_EVERY_S, until `stopping`."""
        while not stopping.wait(PROBE_EVERY_S / 5):
            current = producer()
            if current is None or self._clock() - self._last_delivery < PROBE_EVERY_S:
                continue
            try:
                current.list_topics(timeout=PROBE_TIMEOUT_S if self.reachable else 0.5)
            except Exception as exc:
                self.set(False, str(exc))
            else:
                self.set(True)
            stopping.wait(PROBE_EVERY_S)
