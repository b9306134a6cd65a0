"""Subscribers that crash before acking, ack late, ack twice, ack unknown ids, stop reading."""

from __future__ import annotations

import pytest

from chaos.harness import Env
from chaos.scenarios import subscribers
from tests.faults.conftest import run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


def test_subscriber_faults_lose_nothing_and_memory_stays_bounded(chaos_env: Env) -> None:
    result = run_scenario(subscribers.subscriber_faults, chaos_env)
    assert result.extra["crashes"] > 0
