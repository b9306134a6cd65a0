"""The per-call cost of the operating signals' hooks on the hot paths, in-process (no Ferry, no
Kafka): what one publish request, one dispatch and one forwarder wave pay for metrics and
trace context. `python tools/signals_overhead.py` prints ns per call; no thresholds."""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

from sidecar.forward.counters import ForwarderCounters
from sidecar.observability.metrics import PublishMetrics
from sidecar.observability.spans import Tracing

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#: What grpc.aio hands a servicer as invocation metadata for a typical client call.
PLAIN_METADATA = (("user-agent", "grpc-python/1.85.1 grpc-c/50.0.0 (linux; chttp2)"),)
TRACED_METADATA = (*PLAIN_METADATA, ("traceparent", PARENT), ("tracestate", "vendor=abc"))


def per_call_ns(work: Callable[[], object], number: int = 200_000) -> float:
    best = min(timeit.repeat(work, number=number, repeat=5))
    return best / number * 1e9


def main() -> None:
    metrics = PublishMetrics()
    counters = ForwarderCounters()
    started = time.perf_counter()
    empty = (lambda: None, "empty call (baseline of the timing loop)")
    tracing = Tracing()  # no OTEL_EXPORTER_OTLP_ENDPOINT: propagation only

    def answered() -> None:
        metrics.answered("durable", 100, (), started)

    def refused() -> None:
        metrics.refused("durable", 1, "INVALID_ARGUMENT", started)

    def wave() -> None:
        counters.sent_events += 500

    def flush_count() -> None:
        sum([0, 0])  # the per-dispatch sum of flushed batches (two streams)

    cases = [
        empty,
        (answered, "PublishMetrics.answered: one request answered OK (any batch size)"),
        (refused, "PublishMetrics.refused: one request refused"),
        (lambda: tracing.call("m", PLAIN_METADATA, {}).end(), "trace: a call without context"),
        (lambda: tracing.call("m", TRACED_METADATA, {}).end(), "trace: a call with traceparent"),
        (lambda: tracing.exporting, "trace: the per-Deliveries-message check (not exporting)"),
        (wave, "forwarder: counting one wave"),
        (flush_count, "subscription: counting one dispatch's deliveries"),
    ]
    for work, what in cases:
        print(f"{per_call_ns(work):8.0f} ns  {what}")


if __name__ == "__main__":
    main()
