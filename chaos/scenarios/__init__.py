"""Every scenario, in the order they run: name -> (function, full-mode only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chaos.harness import Env, ScenarioResult
from chaos.scenarios import (
    badinput,
    clock,
    disk,
    kafka,
    killpoints,
    network,
    process,
    soak,
    subscribers,
)  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Env], ScenarioResult]
    summary: str
    full_only: bool = False


SCENARIOS = [
    Scenario("control", process.control, "no faults; duplicates must be 0"),
    Scenario("kill9", process.kill9, "kill -9 of Ferry at random moments, restart on same dir"),
    Scenario("kill-points", killpoints.kill_points,
             "kill -9 after the log commit, after Kafka's ack, during a redelivery"),
    Scenario("forwarder-kill", process.forwarder_kill,
             "kill -9 of the forwarder process alone; Ferry starts another"),
    Scenario("sigterm", process.sigterm, "SIGTERM drain under load, then restart"),
    Scenario("kafka-kill", kafka.broker_kill, "the broker killed (-9) and restarted"),
    Scenario("kafka-pause", kafka.broker_pause, "the broker SIGSTOPped for seconds under load"),
    Scenario("kafka-down-at-start", kafka.kafka_down_at_start, "Kafka down when Ferry starts"),
    Scenario("leader-kill", kafka.leader_kill, "3 brokers, RF 3, min ISR 2: leader killed"),
    Scenario("disk-full", disk.disk_full, "WAL on a tmpfs filled up under load, then freed"),
    Scenario("subscriber-faults", subscribers.subscriber_faults,
             "crash before ack, late/double/unknown acks, a stream that stops reading"),
    Scenario("bad-input", badinput.bad_input,
             "hypothesis requests, garbage bytes, > 16 MiB, stream flood past --max-streams"),
    Scenario("network", network.network,
             "toxiproxy: latency, bandwidth, resets, black hole, refused"),
    Scenario("clock-jumps", clock.clock_jumps, "libfaketime: wall clock +2 h / -3 h"),
    Scenario("soak", soak.soak, "steady load; RSS and fds flat", full_only=True),
]  # fmt: skip

BY_NAME = {s.name: s for s in SCENARIOS}
