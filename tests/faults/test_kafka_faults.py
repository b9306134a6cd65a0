"""Kafka faults: broker killed / paused past the message timeout / down at Ferry start on the
session broker; a partition leader killed in a 3-broker cluster of the test's own."""

from __future__ import annotations

import pytest

from chaos.harness import Env
from chaos.scenarios import kafka
from tests.faults.conftest import run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


def test_broker_killed_and_restarted(chaos_env: Env) -> None:
    result = run_scenario(kafka.broker_kill, chaos_env)
    assert result.recovery_max_s is not None


def test_broker_paused(chaos_env: Env) -> None:
    run_scenario(kafka.broker_pause, chaos_env)


def test_kafka_down_when_ferry_starts(chaos_env: Env) -> None:
    result = run_scenario(kafka.kafka_down_at_start, chaos_env)
    assert result.extra["pending_before_kafka"][0] > 0, "nothing was published while down"


def test_partition_leader_killed_in_three_broker_cluster(chaos_env: Env) -> None:
    result = run_scenario(kafka.leader_kill, chaos_env)
    assert result.faults == 1
