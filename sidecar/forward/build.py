"""The forwarder a `ForwarderConfig` describes, wired to the real Kafka clients.

The one place that puts the Kafka adapters (sidecar/kafka/) into a `Forwarder`: used by the
forwarder process (child.py) and by the thread mode (placement.py) alike.
"""

from __future__ import annotations

from collections.abc import Callable

from sidecar.forward.channels import CommittedRows, Retirements
from sidecar.forward.forwarder import Forwarder
from sidecar.forward.messages import ForwarderConfig
from sidecar.forward.resend_check import ResendCheck
from sidecar.kafka.find_sent import KafkaSentFinder
from sidecar.kafka.producer import producer_factory
from sidecar.model import DeliveredEvent


def configured_forwarder(
    config: ForwarderConfig,
    committed: CommittedRows,
    retirements: Retirements,
    on_delivered: Callable[[list[DeliveredEvent]], None],
) -> Forwarder:
    """The forwarder `config` describes, not started yet."""
    resend_check = None
    if config.resend_check_s > 0:
        resend_check = ResendCheck(
            KafkaSentFinder(config.kafka_bootstrap, config.kafka_options),
            timeout_s=config.resend_check_s,
            # Sent rows are at the head of each lane, and a run has at most this many in flight.
            limit=config.max_in_flight,
        )
    return Forwarder(
        config.data_dir,
        committed,
        retirements,
        producer_factory(config.kafka_bootstrap, config.kafka_options),
        max_in_flight=config.max_in_flight,
        max_backoff_s=config.max_backoff_s,
        on_delivered=on_delivered,
        resend_check=resend_check,
    )
