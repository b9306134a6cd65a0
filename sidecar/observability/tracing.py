"""W3C trace context (`traceparent`, `tracestate`) from a publish call's gRPC metadata to its
events' Kafka record headers, and so to the subscribers that receive them.

A publish whose call carries a valid `traceparent` gets it, and its `tracestate`, appended to
each event's headers, unless the event carries a `traceparent` header of its own (the
client's explicit choice wins). Deliveries hand record headers out as they are, these
included. The headers are no part of an event's content for deduplication (wal/digest.py): a
retry under another span is the same event. A call without trace context costs one look
through its metadata.
"""

from __future__ import annotations

import re
from typing import Any

import grpc

from sidecar.model import OutgoingEvent

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADERS = frozenset({TRACEPARENT, TRACESTATE})
#: version-traceid-parentid-flags, lowercase hex; a later version may append fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?")
#: W3C: at most 32 list members of at most 256 characters each, printable ASCII.
MAX_TRACESTATE = 32 * 257
_PRINTABLE = re.compile(r"[\x20-\x7e]*")

#: Headers to add to each event of a call: () when the call carries no trace context.
TraceContext = tuple[tuple[str, bytes], ...]


def valid_traceparent(value: str) -> bool:
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return False
    version, trace_id, parent_id, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return False
    return trace_id != "0" * 32 and parent_id != "0" * 16


def trace_headers(metadata: Any) -> TraceContext:
    """The trace context headers of call `metadata` (key, value pairs); () when it carries
    no valid `traceparent`. A malformed `tracestate` is dropped, as W3C asks."""
    parent = state = None
    for key, value in metadata or ():
        if key == TRACEPARENT:
            parent = value
        elif key == TRACESTATE:
            state = value
    if not isinstance(parent, str) or not valid_traceparent(parent.strip()):
        return ()
    headers: TraceContext = ((TRACEPARENT, parent.strip().encode()),)
    if isinstance(state, str) and len(state) <= MAX_TRACESTATE and _PRINTABLE.fullmatch(state):
        headers += ((TRACESTATE, state.strip().encode()),)
    return headers


def trace_context(context: grpc.aio.ServicerContext[Any, Any]) -> TraceContext:
    """The trace context headers of a call."""
    return trace_headers(context.invocation_metadata())


def with_trace(event: OutgoingEvent, trace: TraceContext) -> OutgoingEvent:
    """`event` with the call's trace context headers, unless it carries a traceparent."""
    if any(key == TRACEPARENT for key, _ in event.headers):
        return event
    # The client's encoding lacks these headers: the log encodes the event from its fields.
    return event._replace(headers=event.headers + trace, encoded=b"")
