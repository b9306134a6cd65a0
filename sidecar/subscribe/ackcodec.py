"""Acked offsets above a committed offset, packed into Kafka's offset-commit metadata string.

This module owns the metadata format and nothing else: it never talks to Kafka and never
decides what to commit. Its one safety rule is that decoding can only lose acks, never invent
them: a lost ack costs a redelivery, an invented one would skip a record nobody processed.
So anything unexpected decodes to the empty set, and `decode` never raises.

Format (version 1)::

    f1:<committed>:<range>,<range>,...:<check>      e.g. "f1:0:5-2,1:tqmq9v"

All numbers are lowercase base36. `<committed>` repeats the committed offset so metadata that
outlives its offset (an operator resets offsets with a tool that keeps metadata) is ignored
instead of skipping the wrong records. Each range is `<gap>` or `<gap>-<extra>`: the range starts
`gap` offsets after the previous range's end + 1 (after the committed offset for the first) and
covers `extra` further offsets. Chaining the gaps keeps numbers short however far the acks are
from the committed offset. `<check>` is the CRC-32 of everything before its colon: a damaged
number would otherwise still parse and claim acks nobody made.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator

VERSION_PREFIX = "f1:"
DEFAULT_MAX_LENGTH = 3000
# A hostile or corrupt string could declare billions of acked offsets; decode expands ranges into a
# set, so it stops here and keeps the lowest ones (dropping acks only causes redelivery).
DEFAULT_MAX_DECODED_OFFSETS = 1_000_000

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
# 13 base36 digits exceed int64, which bounds every real Kafka offset.
_NUMBER = r"[0-9a-z]{1,13}"
_RANGE = rf"{_NUMBER}(?:-{_NUMBER})?"
_CHECK = r"[0-9a-z]{1,7}"  # 36**7 > 2**32
_CHECK_RESERVE = 8  # ":" and the longest check
_METADATA = re.compile(
    rf"({re.escape(VERSION_PREFIX)}({_NUMBER}):{_RANGE}(?:,{_RANGE})*):({_CHECK})"
)


def encode(
    acked: Iterable[int], committed_offset: int, max_length: int = DEFAULT_MAX_LENGTH
) -> str:
    """The metadata string for `acked` offsets above `committed_offset`, at most `max_length` long.

    Offsets below the committed one are already covered by the commit and left out. If the
    ranges do not all fit, the lowest ones that fit are kept; "" means nothing to record.
    """
    if committed_offset < 0:
        raise ValueError(f"committed offset {committed_offset} is negative")
    header = f"{VERSION_PREFIX}{_to_base36(committed_offset)}:"
    parts: list[str] = []
    length = len(header) + _CHECK_RESERVE - 1  # every range but the first follows a comma
    previous_end = committed_offset - 1
    for start, end in _ranges(offset for offset in acked if offset >= committed_offset):
        gap = _to_base36(start - previous_end - 1)
        part = gap if end == start else f"{gap}-{_to_base36(end - start)}"
        if length + 1 + len(part) > max_length:
            break
        parts.append(part)
        length += 1 + len(part)
        previous_end = end
    if not parts:
        return ""
    body = header + ",".join(parts)
    return f"{body}:{_check(body)}"


def decode(
    metadata: str, committed_offset: int, max_offsets: int = DEFAULT_MAX_DECODED_OFFSETS
) -> frozenset[int]:
    """The acked offsets recorded in `metadata` for `committed_offset`; empty if it is not ours."""
    match = _METADATA.fullmatch(metadata)
    if match is None:
        return frozenset()
    body, committed, check = match.groups()
    if int(committed, 36) != committed_offset or check != _check(body):
        return frozenset()
    acked: set[int] = set()
    previous_end = committed_offset - 1
    for part in body[len(VERSION_PREFIX) + len(committed) + 1 :].split(","):
        gap, _, extra = part.partition("-")
        start = previous_end + 1 + int(gap, 36)
        end = start + (int(extra, 36) if extra else 0)
        acked.update(range(start, min(end, start + max_offsets - len(acked) - 1) + 1))
        if len(acked) >= max_offsets:
            break
        previous_end = end
    return frozenset(acked)


def _ranges(offsets: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Maximal runs of consecutive offsets as inclusive (start, end) pairs, ascending."""
    run: tuple[int, int] | None = None
    for offset in sorted(set(offsets)):
        if run is not None and offset == run[1] + 1:
            run = (run[0], offset)
            continue
        if run is not None:
            yield run
        run = (offset, offset)
    if run is not None:
        yield run


def _check(body: str) -> str:
    return _to_base36(zlib.crc32(body.encode("ascii")))


def _to_base36(number: int) -> str:
    digits: list[str] = []
    while True:
        number, digit = divmod(number, 36)
        digits.append(_DIGITS[digit])
        if number == 0:
            return "".join(reversed(digits))
