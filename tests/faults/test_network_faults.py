"""Network faults between Ferry and Kafka through toxiproxy (a cluster of the test's own)."""

from __future__ import annotations

import pytest

from chaos.harness import Env
from chaos.scenarios import network
from tests.faults.conftest import PER_KEY_ORDER_BUG, run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


@pytest.mark.xfail(strict=False, reason=PER_KEY_ORDER_BUG)
def test_latency_bandwidth_resets_black_hole_and_refusals(chaos_env: Env) -> None:
    result = run_scenario(network.network, chaos_env)
    assert result.faults == 5
