"""Shared fixtures: the integration tests need a running Ferry and its Kafka, never start them."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Env:
    ferry_addr: str
    kafka_bootstrap: str


@pytest.fixture(scope="session")
def env() -> Env:
    addr, kafka = os.environ.get("FERRY_ADDR"), os.environ.get("KAFKA_BOOTSTRAP")
    if not addr or not kafka:
        pytest.skip("set FERRY_ADDR and KAFKA_BOOTSTRAP to run against a running Ferry and Kafka")
    return Env(addr, kafka)


@pytest.fixture
def name() -> str:
    """A topic or subscription name of this test run (the shared Ferry wants `python-` names)."""
    return f"python-{uuid.uuid4().hex[:12]}"
