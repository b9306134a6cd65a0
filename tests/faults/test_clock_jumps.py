"""Wall-clock jumps of hours (libfaketime): leases neither all expire nor never expire."""

from __future__ import annotations

import pytest

from chaos.harness import Env
from chaos.scenarios import clock
from tests.faults.conftest import run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


def test_wall_clock_jumps_do_not_move_leases(chaos_env: Env) -> None:
    result = run_scenario(clock.clock_jumps, chaos_env)
    assert result.extra["forward_acks"] == [["APPLIED"]]
