"""Publishing through Ferry from tests: events, one Publish call, and a bulk publish that waits
until Kafka has everything."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import record_pb2
from sidecar._gen.ferry.v1 import subscriber_pb2 as spb
from testkit.ferry_process import FerryProcess

#: Flags for tests where Kafka goes away: a lane that failed is retried within seconds.
FAST_RETRY = ("--retry-max-backoff-s", "2")


#: Record headers as (key, value or None) pairs, in order.
HeaderPairs = Sequence[tuple[str, bytes | None]]


def event(
    topic: str,
    event_id: str,
    *,
    key: bytes | None = None,
    payload: bytes | None = None,
    headers: Mapping[str, str] | HeaderPairs | None = None,
) -> pb.Event:
    """An event whose payload defaults to something derived from its id; a null key unless
    `key` is given. `headers`: a mapping of text values, or (key, bytes or None) pairs."""
    message = pb.Event(
        topic=topic,
        payload=payload if payload is not None else f"payload-of-{event_id}".encode(),
        headers=[header(k, v) for k, v in header_pairs(headers)],
        event_id=event_id,
    )
    if key is not None:
        message.key = key
    return message


def header_pairs(headers: Mapping[str, str] | HeaderPairs | None) -> HeaderPairs:
    """`headers` as (key, bytes or None) pairs."""
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        return [(k, v.encode()) for k, v in headers.items()]
    return headers


def header(key: str, value: bytes | None) -> record_pb2.Header:
    """A Header message; an unset value is a null one."""
    return record_pb2.Header(key=key) if value is None else record_pb2.Header(key=key, value=value)


def event_headers(ev: pb.Event | spb.ReceivedEvent) -> list[tuple[str, bytes | None]]:
    """An event's (or a delivery's) headers as (key, value or None) pairs, in order."""
    return [(h.key, h.value if h.HasField("value") else None) for h in ev.headers]


def publish(
    stub: Any, ev: pb.Event, *, timeout: float = 10.0, **request: Any
) -> pb.PublishResponse:
    """One Publish call of `ev` (extra PublishRequest fields in `request`)."""
    response: pb.PublishResponse = stub.Publish(
        pb.PublishRequest(event=ev, **request), timeout=timeout
    )
    return response


def publish_through_ferry(
    ferry: FerryProcess,
    topic: str,
    count: int,
    *,
    prefix: str | None = None,
    batch: int = 1000,
    payload: Callable[[int], bytes] | None = None,
) -> list[str]:
    """PublishBatch `count` events (ids `<prefix>-<i>`, 16 keys), wait until Kafka has them all;
    the event ids in publish order."""
    prefix = prefix or uuid.uuid4().hex[:8]
    stub = ferry.publisher()
    ids: list[str] = []
    for start in range(0, count, batch):
        events = [
            pb.Event(
                topic=topic,
                event_id=f"{prefix}-{i:06d}",
                key=f"k{i % 16}".encode(),
                payload=payload(i) if payload else f"payload-{prefix}-{i:06d}".encode(),
            )
            for i in range(start, min(count, start + batch))
        ]
        reply = stub.PublishBatch(pb.PublishBatchRequest(events=events), timeout=30)
        for ev, entry in zip(events, reply.entries, strict=True):
            assert entry.WhichOneof("outcome") == "result", entry
            ids.append(ev.event_id)
    ferry.wait_drained(60)
    return ids
