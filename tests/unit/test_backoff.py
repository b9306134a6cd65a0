"""Capped exponential backoff with jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.backoff import backoff_delay


def test_first_attempt_waits_the_base() -> None:
    assert backoff_delay(1, base=0.5, jitter=0) == 0.5
    assert backoff_delay(1, base=2.0, cap=100, jitter=0) == 2.0


def test_delay_doubles_per_attempt() -> None:
    delays = [backoff_delay(n, base=0.25, cap=1000, jitter=0) for n in range(1, 8)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


def test_delay_is_capped() -> None:
    assert backoff_delay(6, base=1.0, cap=10.0, jitter=0) == 10.0
    assert backoff_delay(1000, base=1.0, cap=10.0, jitter=0) == 10.0
    assert backoff_delay(10**9, base=0.5, cap=30.0, jitter=0) == 30.0  # no overflow
    assert backoff_delay(1, base=5.0, cap=1.0, jitter=0) == 1.0  # cap below base wins


def test_attempts_below_one_are_treated_as_first() -> None:
    assert backoff_delay(0, base=0.5, jitter=0) == 0.5
    assert backoff_delay(-3, base=0.5, jitter=0) == 0.5


def test_jitter_stays_within_bounds_and_varies() -> None:
    rng = random.Random(1234)
    seen = [backoff_delay(3, base=1.0, cap=100.0, jitter=0.2, rng=rng) for _ in range(2000)]
    assert min(seen) >= 4.0 * 0.8
    assert max(seen) <= 4.0 * 1.2
    # The spread really uses the range (a missing jitter would give one value).
    assert max(seen) - min(seen) > 1.2
    assert min(seen) < 3.3
    assert max(seen) > 4.7


def test_jitter_never_exceeds_the_cap() -> None:
    rng = random.Random(7)
    seen = [backoff_delay(20, base=1.0, cap=5.0, jitter=0.5, rng=rng) for _ in range(2000)]
    assert max(seen) <= 5.0
    assert min(seen) >= 2.5
    assert min(seen) < 3.0  # jitter still spreads below the cap


def test_seeded_rng_makes_delays_reproducible() -> None:
    a = [backoff_delay(n, jitter=0.3, rng=random.Random(42)) for n in range(1, 10)]
    b = [backoff_delay(n, jitter=0.3, rng=random.Random(42)) for n in range(1, 10)]
    assert a == b
    c = [backoff_delay(n, jitter=0.3, rng=random.Random(43)) for n in range(1, 10)]
    assert a != c


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.5, 0.99])
def test_delay_is_never_negative(jitter: float) -> None:
    rng = random.Random(3)
    for attempt in range(1, 40):
        assert 0.0 <= backoff_delay(attempt, base=0.01, cap=1.0, jitter=jitter, rng=rng) <= 1.0


def test_result_is_a_float() -> None:
    assert isinstance(backoff_delay(1, base=1, cap=10, jitter=0), float)


@given(st.integers(1, 5_000), st.floats(0.001, 10.0), st.floats(0.001, 1_000.0))
def test_backoff_never_shrinks_and_never_exceeds_the_cap(
    attempt: int, base: float, cap: float
) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap, jitter=0)
    assert delay <= cap
    assert delay >= min(base, cap)
    assert backoff_delay(attempt + 1, base=base, cap=cap, jitter=0) >= delay
