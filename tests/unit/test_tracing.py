"""W3C trace context from call metadata to event headers, and its place outside the dedupe
digest."""

from __future__ import annotations

import pytest

from sidecar.model import OutgoingEvent
from sidecar.observability.tracing import trace_headers, valid_traceparent, with_trace
from sidecar.wal.digest import event_digest
from sidecar.wal.store import encode_headers

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (PARENT, True),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", False),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),
        ("garbage", False),
    ],
)
def test_traceparent_format(value: str, valid: bool) -> None:
    assert valid_traceparent(value) is valid


def test_trace_headers_of_call_metadata() -> None:
    assert trace_headers(None) == ()
    assert trace_headers((("user-agent", "grpc"),)) == ()
    assert trace_headers((("traceparent", "bad"), ("tracestate", "a=b"))) == ()
    assert trace_headers((("traceparent", PARENT), ("tracestate", "a=b,c=d"))) == (
        ("traceparent", PARENT.encode()),
        ("tracestate", b"a=b,c=d"),
    )
    # A tracestate that is not printable ASCII is dropped, the traceparent kept.
    assert trace_headers((("traceparent", PARENT), ("tracestate", "a=\u00e9"))) == (
        ("traceparent", PARENT.encode()),
    )


def test_an_event_s_own_traceparent_wins() -> None:
    trace = (("traceparent", PARENT.encode()),)
    plain = OutgoingEvent("id", "t", None, b"p", (("app", b"x"),))
    assert with_trace(plain, trace).headers == (("app", b"x"), ("traceparent", PARENT.encode()))
    own = plain._replace(headers=(("traceparent", b"mine"),))
    assert with_trace(own, trace) is own


def test_trace_headers_are_no_part_of_the_content_digest() -> None:
    def digest(*headers: tuple[str, bytes | None]) -> bytes:
        return event_digest("t", b"k", b"p", encode_headers(headers))

    plain = digest(("app", b"x"))
    assert digest(("app", b"x"), ("traceparent", PARENT.encode())) == plain
    assert digest(("app", b"x"), ("traceparent", b"other"), ("tracestate", b"s")) == plain
    assert digest(("traceparent", PARENT.encode())) == digest()
    assert digest(("app", b"y")) != plain
    assert digest(("app-trace", b"x")) != plain  # "trace" in a header name alone is content
