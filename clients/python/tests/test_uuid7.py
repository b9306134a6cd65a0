from __future__ import annotations

import itertools
import time
import uuid

from ferry_client import uuid7


def test_version_variant_and_time() -> None:
    before = time.time_ns() // 1_000_000
    u = uuid7()
    after = time.time_ns() // 1_000_000
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert before <= u.int >> 80 <= after + 1
    assert len(str(u)) == 36


def test_strictly_increasing_and_unique() -> None:
    ids = [uuid7() for _ in range(20_000)]  # several per millisecond: the counter orders them
    assert all(a.int < b.int for a, b in itertools.pairwise(ids))
    assert len({str(u) for u in ids}) == len(ids)
