"""Capped exponential backoff with jitter, shared by every retry loop in Ferry."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number `attempt` (1-based): base * 2^(attempt-1), capped, +-jitter."""
    delay = min(cap, base * (2 ** max(0, min(attempt - 1, 30))))
    if jitter:
        delay *= 1 + (rng or random).uniform(-jitter, jitter)
    return float(max(0.0, min(cap, delay)))
