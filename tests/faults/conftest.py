"""Fault scenarios (chaos/) in their short CI size, on the session's Kafka where one broker
suffices; scenarios that need 3 brokers or a proxy start their own cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaos.harness import Env, ScenarioResult
from testkit.kafka_restore import ensure_running
from tests.conftest import KafkaHandle


@pytest.fixture
def chaos_env(kafka: KafkaHandle, tmp_path: Path) -> Iterator[Env]:
    cluster = kafka.require_control()
    ensure_running(cluster)
    try:
        yield Env(cluster, tmp_path, full=False)
    finally:
        ensure_running(cluster)  # restore the session Kafka healthy


def run_scenario(scenario: Callable[[Env], ScenarioResult], env: Env) -> ScenarioResult:
    """Run `scenario`; skip with its reason, or fail with every problem it found."""
    result = scenario(env)
    if result.skipped:
        pytest.skip(result.skipped)
    result.assert_passed()
    return result
