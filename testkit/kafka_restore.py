"""Bringing a local Kafka back after a test or a fault stopped, killed or paused its brokers.

Broker JVMs are (re)started off the main thread (`off_main`): `KafkaCluster` gives a JVM started
from the main thread a parent-death signal, through a preexec_fn where setpriv is missing
(Python code between fork and exec), and in a process that runs gRPC threads such a child
can abort ("Fatal Python error: Aborted" in threading._after_fork). A JVM started from a
helper thread is stopped at interpreter exit instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from testkit.kafka_cluster import KafkaCluster

T = TypeVar("T")


def off_main(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` run on a helper thread; its result, or its exception raised here."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn(*args))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="kafka-control")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def ensure_running(cluster: KafkaCluster) -> None:
    """Every node of `cluster` resumed (SIGCONT) and, where it is not alive, restarted."""
    for node in cluster.nodes:
        cluster.resume(node)
        if not node.alive():
            off_main(cluster.restart, node)


@contextlib.contextmanager
def kafka_restored(cluster: KafkaCluster) -> Iterator[KafkaCluster]:
    """Whatever happens inside, every node of `cluster` runs again afterwards."""
    try:
        yield cluster
    finally:
        ensure_running(cluster)
