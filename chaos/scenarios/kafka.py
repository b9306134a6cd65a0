"""Kafka faults: broker kill -9 + restart, broker SIGSTOP past the request timeout, Kafka down
when Ferry starts (1 broker), and a partition leader killed in a 3-broker KRaft cluster."""

from __future__ import annotations

import random
import time

from chaos.harness import Env, Run, ScenarioResult, log
from chaos.observe import KafkaCluster, ensure_up, off_main

PAUSE_S = 7.0  # > the forwarder's 5 s probe: Ferry must notice the hang and ride it out


def _node(env: Env) -> int:
    return env.kafka.nodes[0].node_id


def broker_kill(env: Env) -> ScenarioResult:
    """SIGKILL the only broker under load; publishes go on into the log; restart it."""
    rounds = 5 if env.full else 1
    run = Run(env, "kafka-kill").start()
    try:
        for i in range(rounds):
            time.sleep(3)
            fault = run.history.fault("broker kill -9", f"#{i + 1}")
            env.kafka.kill(_node(env))
            time.sleep(random.uniform(2, 10) if env.full else 5)
            off_main(env.kafka.restart, _node(env))
            run.heal(fault)
        time.sleep(2)
        return run.finish()
    finally:
        ensure_up(env.kafka)


def broker_pause(env: Env) -> ScenarioResult:
    """SIGSTOP the broker for longer than the producer's message timeout, then SIGCONT.

    In CI the consumer session timeout (15 s) outlasts the pause, so only the producer side
    times out. Full runs keep 6 s: the pause also expires the subscriptions' group sessions,
    which exercises the rejoin path (where librdkafka consumers were seen to get stuck, see
    docs/reliability.md)."""
    rounds = 5 if env.full else 1
    flags = () if env.full else ("--consumer-session-timeout-ms", "15000")
    run = Run(env, "kafka-pause", ferry_args=flags).start()
    try:
        for i in range(rounds):
            time.sleep(3)
            fault = run.history.fault("broker SIGSTOP", f"#{i + 1} for {PAUSE_S}s")
            env.kafka.pause(_node(env))
            time.sleep(PAUSE_S)
            env.kafka.resume(_node(env))
            run.heal(fault)
        time.sleep(2)
        return run.finish()
    finally:
        ensure_up(env.kafka)


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
            run.extra.setdefault("pending_before_kafka", []).append(_pending(run))
            off_main(env.kafka.restart, _node(env))
            run.heal(fault)
        time.sleep(2)
        return run.finish()
    finally:
        ensure_up(env.kafka)


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


def _pending(run: Run) -> int:
    from chaos.observe import wal_pending

    return wal_pending(run.ferry.data_dir)
