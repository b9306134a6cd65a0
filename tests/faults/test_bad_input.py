"""Bad input: hypothesis over every request message, garbage bytes, oversized messages, a flood
of Subscribe streams past --max-streams. Ferry answers with proper codes and keeps serving."""

from __future__ import annotations

import pytest

from chaos.harness import Env
from chaos.scenarios import badinput
from tests.faults.conftest import run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


def test_bad_input_is_refused_cleanly(chaos_env: Env) -> None:
    result = run_scenario(badinput.bad_input, chaos_env)
    assert result.extra["serving_after"] is True
