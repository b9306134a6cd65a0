"""The content fingerprint of a logged event: tells a retry from a conflicting reuse of its id.

Null and empty differ: a null key or payload digests as a length no real part can have. W3C
trace context headers (`traceparent`, `tracestate`) are left out: they name the call that
published the event, not its content, and a retry comes from another span.
"""

from __future__ import annotations

import hashlib
import json

_NULL = (2**64 - 1).to_bytes(8, "little")
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})


def event_digest(topic: str, key: bytes | None, payload: bytes | None, headers: str) -> bytes:
    """`headers` is the event's headers as stored (`store.encode_headers`)."""
    h = hashlib.blake2b(digest_size=16)
    for part in (topic.encode(), key, payload):
        if part is None:
            h.update(_NULL)
        else:
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    h.update(_without_trace(headers).encode())
    return h.digest()


def _without_trace(headers: str) -> str:
    """Stored headers without the trace context ones, encoded as `store.encode_headers` would
    encode what is left; unchanged (and not decoded) when there are none."""
    if "trace" not in headers:
        return headers
    pairs = json.loads(headers)
    kept = [pair for pair in pairs if pair[0] not in _TRACE_HEADERS]
    if len(kept) == len(pairs):
        return headers
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False) if kept else "[]"
