"""The repeat limit of log lines: one line per condition per interval, with the dropped count."""

from __future__ import annotations

import pytest

from sidecar.clock import ManualClock
from sidecar.observability.repeats import RepeatLimiter, volatile_to_n


def test_first_line_passes_and_repeats_within_the_interval_are_dropped() -> None:
    clock = ManualClock()
    limiter = RepeatLimiter(30.0, clock)
    assert limiter.admit("refused") == 0
    for _ in range(5):
        clock.advance(1.0)
        assert limiter.admit("refused") is None


def test_the_next_line_after_the_interval_carries_the_dropped_count() -> None:
    clock = ManualClock()
    limiter = RepeatLimiter(30.0, clock)
    limiter.admit("refused")
    for _ in range(7):
        clock.advance(2.0)
        limiter.admit("refused")
    clock.advance(16.0)  # 30 s after the first line went out
    assert limiter.admit("refused") == 7
    assert limiter.admit("refused") is None  # a new interval starts with that line
    clock.advance(30.0)
    assert limiter.admit("refused") == 1


def test_a_condition_that_comes_back_after_a_quiet_interval_reports_nothing_dropped() -> None:
    clock = ManualClock()
    limiter = RepeatLimiter(30.0, clock)
    limiter.admit("refused")
    clock.advance(300.0)
    assert limiter.admit("refused") == 0


def test_conditions_are_limited_independently() -> None:
    clock = ManualClock()
    limiter = RepeatLimiter(30.0, clock)
    assert limiter.admit(("producer", "refused")) == 0
    assert limiter.admit(("consumer", "refused")) == 0
    assert limiter.admit(("producer", "refused")) is None
    assert limiter.admit(("producer", "timed out")) == 0


def test_memory_is_bounded_by_forgetting_the_condition_let_through_longest_ago() -> None:
    clock = ManualClock()
    limiter = RepeatLimiter(30.0, clock, max_conditions=2)
    limiter.admit("a")
    limiter.admit("b")
    limiter.admit("c")  # forgets "a"
    assert limiter.admit("b") is None
    assert limiter.admit("c") is None
    assert limiter.admit("a") == 0  # new again


def test_zero_interval_lets_everything_through() -> None:
    limiter = RepeatLimiter(0.0, ManualClock())
    assert [limiter.admit("x") for _ in range(3)] == [0, 0, 0]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        RepeatLimiter(-1.0)
    with pytest.raises(ValueError, match="max_conditions"):
        RepeatLimiter(30.0, max_conditions=0)


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        (
            "b:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused "
            "(after 0ms in state CONNECT)",
            "b:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused "
            "(after Nms in state CONNECT)",
        ),
        ("1/3 brokers are down", "N/N brokers are down"),
        (
            "1 request(s) timed out: disconnect (average rtt 3.031ms)",
            "N request(s) timed out: disconnect (average rtt Nms)",
        ),
        ("ferry-orders#consumer-12 joined (v11)", "ferry-orders#consumer-12 joined (v11)"),
        ("retrying in 2.5s", "retrying in Ns"),
    ],
)
def test_volatile_numbers_become_n_and_names_stay(text: str, normalised: str) -> None:
    assert volatile_to_n(text) == normalised
