"""The write-ahead log on a small tmpfs that fills up under load, then gets space back."""

from __future__ import annotations

import pytest

from chaos.harness import Env
from chaos.scenarios import disk
from tests.faults.conftest import run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


def test_disk_full_refuses_with_resource_exhausted_and_recovers(chaos_env: Env) -> None:
    result = run_scenario(disk.disk_full, chaos_env)
    assert result.extra["resource_exhausted"] > 0
