"""Network faults between Ferry and Kafka through toxiproxy (a cluster of the test's own)."""

from __future__ import annotations

import pytest

from chaos.harness import Env
from chaos.scenarios import network
from tests.faults.conftest import run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


def test_latency_bandwidth_resets_black_hole_and_refusals(chaos_env: Env) -> None:
    result = run_scenario(network.network, chaos_env)
    assert result.faults == 5
