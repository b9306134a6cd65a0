"""When Ferry starts its forwarder process again, and when it gives up (pure logic)."""

from __future__ import annotations

import signal

from sidecar.forward.restarts import (
    FIRST_DELAY_S,
    HEALTHY_RUN_S,
    MAX_CRASHES,
    MAX_DELAY_S,
    RestartPolicy,
    killed_by_signal,
)

KILLED = -signal.SIGKILL
CRASHED = 70


def test_a_process_killed_by_a_signal_is_always_started_again_with_a_growing_delay() -> None:
    policy = RestartPolicy()
    delays = [policy.after_death(KILLED, ran_s=1.0) for _ in range(20)]
    assert all(d is not None for d in delays)
    assert delays[0] is not None
    assert delays[0] <= FIRST_DELAY_S * 1.2
    assert delays[-1] is not None
    assert MAX_DELAY_S * 0.8 <= delays[-1] <= MAX_DELAY_S


def test_crashes_in_a_row_give_up() -> None:
    policy = RestartPolicy()
    for _ in range(MAX_CRASHES - 1):
        assert policy.after_death(CRASHED, ran_s=1.0) is not None
    assert policy.after_death(CRASHED, ran_s=1.0) is None


def test_kills_between_crashes_do_not_reset_the_crash_count() -> None:
    policy = RestartPolicy()
    for _ in range(MAX_CRASHES - 1):
        assert policy.after_death(CRASHED, ran_s=1.0) is not None
        assert policy.after_death(KILLED, ran_s=1.0) is not None
    assert policy.after_death(CRASHED, ran_s=1.0) is None


def test_a_healthy_run_forgives_earlier_deaths() -> None:
    policy = RestartPolicy()
    for _ in range(MAX_CRASHES - 1):
        policy.after_death(CRASHED, ran_s=1.0)
    delay = policy.after_death(CRASHED, ran_s=HEALTHY_RUN_S)
    assert delay is not None, "a crash after a healthy run is the first of a new series"
    assert delay <= FIRST_DELAY_S * 1.2


def test_an_exit_code_is_a_crash_and_a_negative_one_a_signal() -> None:
    assert killed_by_signal(KILLED)
    assert not killed_by_signal(CRASHED)
    assert not killed_by_signal(1)
    assert not killed_by_signal(None)
