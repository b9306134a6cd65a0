"""Faults of Ferry's processes: none (the control), kill -9 of Ferry, kill -9 of its forwarder
process alone, SIGTERM drain."""

from __future__ import annotations

import os
import random
import signal
import time

from chaos.harness import Env, Run, ScenarioResult, log
from testkit.ferry_log import json_entries

CALM_FLAGS = ("--consumer-session-timeout-ms", "20000")


def control(env: Env) -> ScenarioResult:
    """Fault-free: the same workload and checks; duplicates must be zero. Ferry runs with
    a session timeout near its default: the 6 s one of the fault scenarios would turn a few
    seconds of broker stall on a busy machine into a rebalance and redeliveries."""
    run = Run(env, "control", ferry_args=CALM_FLAGS).start()
    time.sleep(120 if env.full else 8)
    result = run.finish()
    v = result.verdict
    if v["kafka_duplicates"] or any(v["sub_redeliveries"].values()):
        result.problems.append(
            f"duplicates in a fault-free run: kafka {v['kafka_duplicates']}, "
            f"redeliveries {v['sub_redeliveries']}"
        )
    if v["fail"] or v["unknown"]:
        result.problems.append(f"fault-free publishes not ok: {result.extra['errors']}")
    return result


def kill9(env: Env) -> ScenarioResult:
    """kill -9 at random moments under load; restart on the same data dir each time."""
    kills = 200 if env.full else 20
    rng = random.Random()
    run = Run(env, "kill9", oneshot_publishers=1).start()
    for i in range(kills):
        time.sleep(rng.uniform(0.2, 1.2 if env.full else 2.0))
        fault = run.history.fault("kill -9", f"#{i + 1}")
        run.kill()
        time.sleep(rng.choice([0.0, 0.0, 0.3, 1.0]))
        restarted = time.monotonic()
        run.start_ferry()
        run.heal(fault, kafka=False, at=restarted)
        if i % 20 == 19:
            log(f"kill9: {i + 1}/{kills} kills, {dict(run.history.outcome_counts())}")
    time.sleep(2)
    return run.finish()


def forwarder_kill(env: Env) -> ScenarioResult:
    """kill -9 of the forwarder process alone, at random moments under load: Ferry keeps
    serving and starts another one. Recovery is the time until a publish at ACK_LEVEL_KAFKA
    is answered; Ferry itself must never exit."""
    kills = 30 if env.full else 4
    rng = random.Random()
    run = Run(env, "forwarder-kill").start()
    for i in range(kills):
        time.sleep(rng.uniform(1.0, 8.0 if env.full else 2.0))
        fault = run.history.fault("kill -9 of the forwarder process", f"#{i + 1}")
        os.kill(run.ferry.forwarder_pid(), signal.SIGKILL)
        run.heal(fault, kafka=True, at=time.monotonic())
        if i % 10 == 9:
            log(f"forwarder-kill: {i + 1}/{kills} kills, {dict(run.history.outcome_counts())}")
    time.sleep(2)
    deaths = list(json_entries(run.ferry.log_path, "forwarder_process_died"))
    run.extra["forwarder_restarts"] = len(deaths)
    if len(deaths) != kills or not all(d.get("killed_by_signal") for d in deaths):
        run.problems.append(f"{kills} kills, but the log tells of these deaths: {deaths}")
    return run.finish()


def sigterm(env: Env) -> ScenarioResult:
    """SIGTERM under load: the drain must finish (exit 0) in bounded time; then restart."""
    cycles = 15 if env.full else 3
    rng = random.Random()
    run = Run(env, "sigterm").start()
    drains, left = [], []
    for i in range(cycles):
        time.sleep(rng.uniform(1.0, 3.0))
        fault = run.history.fault("SIGTERM", f"#{i + 1}")
        t0 = time.monotonic()
        code = run.terminate(timeout=60)
        drains.append(round(time.monotonic() - t0, 2))
        left.append(run.ferry.pending_rows())
        if code != 0:
            run.problems.append(f"SIGTERM drain #{i + 1} exited with {code}")
        restarted = time.monotonic()
        run.start_ferry()
        run.heal(fault, kafka=False, at=restarted)
    run.extra["drain_seconds"] = drains
    run.extra["pending_after_drain"] = left
    if max(drains) > 30:
        run.problems.append(f"a SIGTERM drain took {max(drains)}s (grace is 10 s + 5 s)")
    time.sleep(2)
    return run.finish()
