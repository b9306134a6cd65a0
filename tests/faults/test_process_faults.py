"""Faults of the Ferry process: none (control), kill -9 (>= 20 kills at random moments, and at
chosen points), SIGTERM drains."""

from __future__ import annotations

import pytest

from chaos.harness import Env
from chaos.scenarios import killpoints, process
from tests.faults.conftest import run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


def test_fault_free_control_run_has_no_duplicates(chaos_env: Env) -> None:
    result = run_scenario(process.control, chaos_env)
    assert result.verdict["kafka_duplicates"] == 0
    assert result.verdict["ok"] > 0


def test_kill9_at_random_moments_loses_nothing(chaos_env: Env) -> None:
    result = run_scenario(process.kill9, chaos_env)
    assert result.faults >= 20


def test_kill9_at_chosen_points_loses_nothing(chaos_env: Env) -> None:
    """After the log commit before the reply, after Kafka's ack before the row is retired,
    during a redelivery: each point must really be reached (the scenario checks), twice."""
    result = run_scenario(killpoints.kill_points, chaos_env)
    assert set(result.extra["hits"]) == set(killpoints.POINTS)


def test_sigterm_drain_then_restart_loses_nothing(chaos_env: Env) -> None:
    result = run_scenario(process.sigterm, chaos_env)
    assert all(d < 30 for d in result.extra["drain_seconds"])
