"""Kafka faults: broker kill -9 + restart, broker SIGSTOP for seconds, Kafka down
when Ferry starts (1 broker), and a partition leader killed in a 3-broker KRaft cluster."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from chaos.harness import Env, Run, ScenarioResult, log
from testkit.kafka_cluster import KafkaCluster
from testkit.kafka_restore import ensure_running, off_main

PAUSE_S = 7.0  # > the forwarder's 5 s probe: Ferry must notice the hang and ride it out


def _node(env: Env) -> int:
    return env.kafka.nodes[0].node_id


def broker_kill(env: Env) -> ScenarioResult:
    """SIGKILL the only broker under load; publishes go on into the log; restart it."""
    node = _node(env)
    run = Run(env, "kafka-kill").start()
    return _broker_rounds(
        env, run, "broker kill -9", "",
        stop=lambda: env.kafka.kill(node),
        hold_s=lambda: random.uniform(2, 10) if env.full else 5,
        start=lambda: off_main(env.kafka.restart, node),
    )  # fmt: skip


def broker_pause(env: Env) -> ScenarioResult:
    """SIGSTOP the broker for seconds under load, then SIGCONT: sends hang (they never time out)
    and must all land, in order, once it answers again.

    In CI the consumer session timeout (15 s) outlasts the pause. Full runs keep 6 s: the pause
    also expires the subscriptions' group sessions, which exercises the rejoin path (where
    librdkafka consumers got stuck until the watchdog replaced them, see docs/reliability.md)."""
    node = _node(env)
    flags = () if env.full else ("--consumer-session-timeout-ms", "15000")
    run = Run(env, "kafka-pause", ferry_args=flags).start()
    return _broker_rounds(
        env, run, "broker SIGSTOP", f" for {PAUSE_S}s",
        stop=lambda: env.kafka.pause(node),
        hold_s=lambda: PAUSE_S,
        start=lambda: env.kafka.resume(node),
    )  # fmt: skip


def _broker_rounds(
    env: Env,
    run: Run,
    kind: str,
    detail: str,
    *,
    stop: Callable[[], object],
    hold_s: Callable[[], float],
    start: Callable[[], object],
) -> ScenarioResult:
    """Rounds (5 full, 1 in CI) of: load for 3 s, `stop` the broker, wait `hold_s()`, `start`
    it, measure the recovery; then the checks. The broker runs again whatever happened."""
    try:
        for i in range(5 if env.full else 1):
            time.sleep(3)
            fault = run.history.fault(kind, f"#{i + 1}{detail}")
            stop()
            time.sleep(hold_s())
            start()
            run.heal(fault)
        time.sleep(2)
        return run.finish()
    finally:
        ensure_running(env.kafka)


def kafka_down_at_start(env: Env) -> ScenarioResult:
    """Ferry starts while Kafka is down; publishes are accepted; Kafka comes back; all drains."""
    rounds = 3 if env.full else 1
    run = Run(env, "kafka-down-at-start")
    run.start(ferry=False, load=False)  # the topic exists before Kafka goes away
    try:
        for i in range(rounds):
            fault = run.history.fault("kafka down at ferry start", f"#{i + 1}")
            if i:
                run.terminate()
            env.kafka.stop(_node(env))
            run.start_ferry()
            if i == 0:
                run.start_load()
            time.sleep(8)
            run.check_alive()
            run.extra.setdefault("pending_before_kafka", []).append(run.ferry.pending_rows())
            off_main(env.kafka.restart, _node(env))
            run.heal(fault)
        time.sleep(2)
        return run.finish()
    finally:
        ensure_running(env.kafka)


def leader_kill(env: Env) -> ScenarioResult:
    """3 brokers (RF 3, min.insync.replicas 2, no unclean election): kill the leader of a
    partition under load; measure the fail-over (first ACK_LEVEL_KAFKA ok); restart it."""
    rounds = 5 if env.full else 1
    t0 = time.monotonic()
    cluster = KafkaCluster(env.scratch("kafka3"), brokers=3, heap="384m")
    off_main(cluster.start, 150)
    log(f"leader-kill: 3-broker cluster ready in {time.monotonic() - t0:.0f}s")
    try:
        run = Run(env, "leader-kill", bootstrap=cluster.bootstrap, replication=3)
        run.start()
        run.extra["cluster_start_s"] = round(time.monotonic() - t0, 1)
        for i in range(rounds):
            time.sleep(4)
            leader = cluster.leader_of(run.topic, i % run.partitions)
            fault = run.history.fault("partition leader kill -9", f"#{i + 1} node {leader}")
            cluster.kill(leader)
            run.heal(fault)  # fail-over: acks=all needs 2 in-sync replicas, 2 are left
            time.sleep(3)
            off_main(cluster.restart, leader)
        time.sleep(2)
        return run.finish()
    finally:
        cluster.stop()
