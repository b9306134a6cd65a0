"""The confluent-kafka producer with the settings at-least-once delivery requires.

Idempotence, acks=all and an unlimited message timeout are not optional: Ferry
refuses to build a producer without them. Idempotence makes librdkafka's own
retries neither duplicate nor reorder records within a partition, and with no
message timeout a send fails only for a reason that fails every later send of
its partition too (a refusal of the whole batch, a fatal error). A finite
timeout would let the older records of a partition time out while newer ones
got through, and their resend would land after them: per-key order would break.
Ferry's forwarder keeps the row in its log meanwhile, so nothing waits in
memory that a crash could lose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from sidecar.errors import ConfigError
from sidecar.kafka.ports import PRODUCER_MESSAGE_MAX_BYTES, ProducerPort
from sidecar.observability.kafka_logs import KafkaClientLog

REQUIRED = {"enable.idempotence": "true", "acks": "all", "message.timeout.ms": "0"}
#: Values equivalent to the required ones, and librdkafka's other names for the required keys.
_EQUIVALENT = {"enable.idempotence": {"true"}, "acks": {"all", "-1"}, "message.timeout.ms": {"0"}}
_ALIASES = {"request.required.acks": "acks", "delivery.timeout.ms": "message.timeout.ms"}


def producer_config(bootstrap: str, extra: Mapping[str, str]) -> dict[str, Any]:
    """Build the producer settings; user extras may add (e.g. SASL) but not weaken."""
    for key, value in extra.items():
        required = _ALIASES.get(key, key)
        if required in REQUIRED and str(value).strip().lower() not in _EQUIVALENT[required]:
            raise ConfigError(
                f"kafka option {key}={value} would weaken delivery; "
                f"the producer needs {required}={REQUIRED[required]}"
            )
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 2,
        "message.max.bytes": PRODUCER_MESSAGE_MAX_BYTES,
        "queue.buffering.max.messages": 200_000,
        "topic.metadata.propagation.max.ms": 10_000,
        "compression.type": "lz4",
        "client.id": "ferry-forwarder",
        **extra,
        **REQUIRED,
    }
    for key, value in REQUIRED.items():
        if str(config.get(key)).lower() != value:
            raise ConfigError(f"the producer needs {key}={value}")
    return config


def producer_factory(
    bootstrap: str, extra: Mapping[str, str]
) -> Callable[[Callable[[Any], None]], ProducerPort]:
    """A factory the forwarder calls at start and again after a fatal producer error.

    librdkafka's log lines and error reports go to the JSON log (rate-limited, see
    sidecar/observability/kafka_logs.py) before `error_cb` sees the error; they are delivered
    by the producer's poll(), which the forwarder calls in every round.
    """
    config = producer_config(bootstrap, extra)

    def make(error_cb: Callable[[Any], None]) -> ProducerPort:
        logs = KafkaClientLog("producer", config)

        def on_error(err: Any) -> None:
            logs.on_error(err)
            error_cb(err)

        producer: ProducerPort = Producer({**config, "error_cb": on_error, "logger": logs.logger})
        return producer

    return make


#: Refusals that no resend changes: the record is too large for its topic, the topic's policy
#: refuses it, or this client may not write the topic. Anything else may pass on a resend.
_REFUSED_FOR_GOOD = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.POLICY_VIOLATION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
})  # fmt: skip


def refused_for_good(error: Any) -> bool:
    """Whether a delivery error, or an exception from produce(), is a permanent refusal."""
    if isinstance(error, KafkaException) and error.args:
        error = error.args[0]
    code = error.code() if isinstance(error, KafkaError) else None
    return code in _REFUSED_FOR_GOOD
