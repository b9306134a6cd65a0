"""The commit-metadata codec: compact, bounded, and unable to invent acks."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.subscribe.ackcodec import DEFAULT_MAX_LENGTH, decode, encode


def signed(body: str) -> str:
    """`body` with the CRC-32 check the format requires, computed independently of the codec."""
    check, digits = zlib.crc32(body.encode()), ""
    while True:
        check, digit = divmod(check, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if check == 0:
            return f"{body}:{digits}"


def test_nothing_acked_encodes_to_nothing() -> None:
    assert encode([], 5) == ""
    assert decode("", 5) == frozenset()


def test_ranges_are_chained_base36_deltas() -> None:
    # 5..7 starts 5 after the commit and has 2 more; 9 starts 1 after 7 + 1.
    assert encode({5, 6, 7, 9}, 0) == signed("f1:0:5-2,1")
    assert encode({100_000 + 36, 100_000 + 37}, 100_000) == signed("f1:255s:10-1")
    assert decode(signed("f1:255s:10-1"), 100_000) == {100_036, 100_037}


def test_a_damaged_number_is_caught_by_the_check() -> None:
    metadata = encode({5, 6, 7, 9}, 0)
    assert decode(metadata.replace("5-2", "5-3"), 0) == frozenset()
    assert decode(metadata.replace("5-2", "5"), 0) == frozenset()
    assert decode("f1:0:5-2,1", 0) == frozenset()


def test_an_ack_at_the_committed_offset_is_kept() -> None:
    assert decode(encode({7}, 7), 7) == {7}


def test_offsets_below_the_commit_are_left_out() -> None:
    assert decode(encode({1, 2, 8}, 5), 5) == {8}
    assert encode({1, 2}, 5) == ""


def test_negative_committed_offset_is_a_bug() -> None:
    with pytest.raises(ValueError, match="negative"):
        encode({1}, -1)


def test_metadata_of_another_committed_offset_is_ignored() -> None:
    metadata = encode({11, 12}, 10)
    assert decode(metadata, 10) == {11, 12}
    assert decode(metadata, 9) == frozenset()
    assert decode(metadata, 11) == frozenset()


@pytest.mark.parametrize(
    "metadata",
    [
        "hello",
        "f1:",
        "f1:0",
        "f1:0:",
        "f2:0:1",
        "F1:0:1",
        "f1:0:1,,2",
        "f1:0:1,",
        "f1:0:-1",
        "f1:0:1-",
        "f1:0:1--2",
        " f1:0:1",
        "f1:0:1 ",
        "f1:0:1\n",
        "f1:0:_1",
        "f1:0:A",
        "f1:0:\u0661",
        "f1:0:zzzzzzzzzzzzzz",
        signed("f1:0:zzzzzzzzzzzzzz"),
        signed("f1:0:1") + "0",
        signed("f1:0:1").upper(),
        '{"consumer": "other-tool"}',
    ],
)
def test_foreign_or_corrupt_metadata_decodes_to_nothing(metadata: str) -> None:
    assert decode(metadata, 0) == frozenset()


def test_too_long_metadata_keeps_the_lowest_ranges() -> None:
    acked = set(range(0, 2_000, 2))  # 1000 single-offset ranges
    metadata = encode(acked, 0, max_length=40)
    assert len(metadata) <= 40
    kept = decode(metadata, 0)
    assert kept
    assert kept == {offset for offset in acked if offset <= max(kept)}


def test_default_bound_holds_for_a_huge_ack_set() -> None:
    acked = set(range(0, 1_000_000, 3))
    metadata = encode(acked, 0)
    assert len(metadata) <= DEFAULT_MAX_LENGTH
    assert len(metadata) > DEFAULT_MAX_LENGTH - 20


def test_bound_below_the_header_records_nothing() -> None:
    assert encode({123_456}, 123_450, max_length=5) == ""


def test_decoding_stops_at_the_offset_cap() -> None:
    huge = signed("f1:0:0-zzzzzz")  # two billion offsets
    assert len(decode(huge, 0)) == 1_000_000
    assert decode(huge, 0, max_offsets=10) == set(range(10))
    two_ranges = signed("f1:0:0-4,1-4")
    assert decode(two_ranges, 0) == set(range(11)) - {5}
    assert decode(two_ranges, 0, max_offsets=7) == {0, 1, 2, 3, 4, 6, 7}
    assert decode(two_ranges, 0, max_offsets=0) == frozenset()


committed_offsets = st.integers(0, 2**40)
offset_deltas = st.sets(st.integers(0, 10_000), max_size=200)


@settings(max_examples=200)
@given(committed_offsets, offset_deltas)
def test_round_trip_when_it_fits(committed: int, deltas: set[int]) -> None:
    acked = {committed + delta for delta in deltas}
    assert decode(encode(acked, committed, max_length=100_000), committed) == acked


@settings(max_examples=200)
@given(committed_offsets, offset_deltas, st.integers(0, 300))
def test_truncation_only_drops_the_highest_acks(
    committed: int, deltas: set[int], max_length: int
) -> None:
    acked = {committed + delta for delta in deltas}
    metadata = encode(acked, committed, max_length)
    assert len(metadata) <= max_length
    kept = decode(metadata, committed)
    assert kept <= acked
    if kept:
        assert kept == {offset for offset in acked if offset <= max(kept)}


@settings(max_examples=200)
@given(st.text(max_size=60), st.integers(0, 100))
def test_decode_never_raises(metadata: str, committed: int) -> None:
    assert all(offset >= committed for offset in decode(metadata, committed))


@settings(max_examples=200)
@given(offset_deltas, st.data())
def test_damaged_metadata_decodes_to_nothing(deltas: set[int], data: st.DataObject) -> None:
    metadata = encode(deltas, 0)
    cut = data.draw(st.integers(0, len(metadata)))
    damaged = metadata[:cut] + data.draw(st.sampled_from(["", "1", ",", "-", "x", "-z", ":"]))
    if damaged != metadata:
        assert decode(damaged, 0) == frozenset()
