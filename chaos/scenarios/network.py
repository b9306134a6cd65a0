"""Network faults between Ferry and Kafka through toxiproxy (127.0.0.1 only).

A 1-broker cluster of its own advertises the proxy's address, so every client connection
(Ferry's producer and consumers, the checker's reader) goes through the proxy; replication
and the controller do not. Toxics: latency, a bandwidth limit, connection resets, a black
hole (the timeout toxic with timeout 0 drops everything and never closes, for longer than
the producer's message timeout), and the proxy disabled (connections refused).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from chaos import toxiproxy
from chaos.harness import Env, Run, ScenarioResult, log, result_for_skip
from testkit.kafka_cluster import KafkaCluster
from testkit.kafka_restore import off_main
from testkit.ports import stable_free_port

P = "kafka"


def _toxics(tp: toxiproxy.Toxiproxy) -> list[tuple[str, float, Callable[[], None]]]:
    def both(name: str, kind: str, **attrs: object) -> Callable[[], None]:
        def apply() -> None:
            tp.add(P, f"{name}-down", kind, "downstream", **attrs)
            tp.add(P, f"{name}-up", kind, "upstream", **attrs)

        return apply

    return [
        ("latency 300±100 ms", 6.0, both("latency", "latency", latency=300, jitter=100)),
        ("bandwidth 32 KB/s", 6.0, both("bandwidth", "bandwidth", rate=32)),
        ("connection resets", 5.0, both("reset", "reset_peer", timeout=200)),
        ("black hole", 8.0, both("blackhole", "timeout", timeout=0)),
        ("proxy disabled", 5.0, lambda: tp.enable(P, False)),
    ]


def _clear(tp: toxiproxy.Toxiproxy) -> None:
    tp.enable(P, True)
    for name in ("latency", "bandwidth", "reset", "blackhole"):
        for side in ("down", "up"):
            tp.remove(P, f"{name}-{side}")


def network(env: Env) -> ScenarioResult:
    exe = toxiproxy.install()
    if exe is None:
        return result_for_skip(
            "network", env, "toxiproxy-server is not installed and could not be installed "
            "(tools/install_go_tools.sh toxiproxy-server needs Go)")  # fmt: skip
    base = env.scratch("network")
    tp = toxiproxy.Toxiproxy(exe, base / "toxiproxy.log")
    cluster = KafkaCluster(base / "kafka", brokers=1, heap="384m")
    try:
        node = cluster.nodes[0]
        proxied = tp.proxy(P, stable_free_port({node.port}), node.address)
        node.advertised = proxied
        off_main(cluster.start, 120)
        run = Run(env, "network", bootstrap=proxied).start()
        rounds = 3 if env.full else 1
        for r in range(rounds):
            for what, seconds, apply in _toxics(tp):
                time.sleep(3)
                hold = seconds * (random.uniform(1, 3) if env.full else 1)
                fault = run.history.fault(what, f"round {r + 1}, {hold:.0f}s")
                apply()
                time.sleep(hold)
                _clear(tp)
                run.heal(fault)
                log(f"network: {what} healed, recovery {fault.recovered_s}")
        time.sleep(2)
        return run.finish()
    finally:
        cluster.stop()
        tp.stop()
