"""The ferry.v1.Admin servicer: the state snapshot (sidecar/observability/snapshot.py) as a
GetStatusResponse. Who may call it: any caller Ferry lets in without a policy; with one, the
principals granted `status: true` (sidecar/api/policy.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from sidecar._gen.ferry.v1 import admin_pb2 as pb
from sidecar._gen.ferry.v1 import admin_pb2_grpc
from sidecar.api.access import AccessControl, OpenAccess
from sidecar.observability.snapshot import FerrySnapshot

Snapshots = Callable[[], Awaitable[FerrySnapshot]]


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, snapshots: Snapshots, access: AccessControl | None = None) -> None:
        self._snapshots = snapshots
        self._access = access or OpenAccess()

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetStatusResponse:
        self._access.caller(context).check_status()
        return status_response(await self._snapshots())


def status_response(snap: FerrySnapshot) -> pb.GetStatusResponse:
    """The snapshot as the API answers it."""
    out = pb.GetStatusResponse(version=snap.version, build=snap.build, draining=snap.draining)
    out.time.CopyFrom(_timestamp(snap.time))
    out.start_time.CopyFrom(_timestamp(snap.start_time))
    out.uptime.CopyFrom(_duration(snap.uptime_s))
    log = snap.log
    out.log.pending_events = log.pending_events
    out.log.pending_bytes = log.pending_bytes
    if log.oldest_pending_age_s is not None:
        out.log.oldest_pending_age.CopyFrom(_duration(log.oldest_pending_age_s))
    out.log.max_events = log.max_events
    out.log.max_bytes = log.max_bytes
    out.log.cap_used = log.cap_used
    out.log.parked_events = log.parked_events
    fwd = snap.forwarder
    out.forwarder.kafka_reachable = fwd.kafka_reachable
    out.forwarder.in_flight_events = fwd.in_flight_events
    out.forwarder.delivered_events = fwd.delivered_events
    out.forwarder.resent_events = fwd.resent_events
    for topic in snap.topics:
        entry = out.topics.add(
            topic=topic.topic,
            pending_events=topic.pending_events,
            pending_bytes=topic.pending_bytes,
            in_flight_events=topic.in_flight_events,
            backing_off=topic.backing_off,
            failures=topic.failures,
            last_error=topic.last_error,
        )
        if topic.oldest_pending_age_s is not None:
            entry.oldest_pending_age.CopyFrom(_duration(topic.oldest_pending_age_s))
        if topic.backing_off:
            entry.retry_in.CopyFrom(_duration(topic.retry_in_s))
    for sub in snap.subscriptions:
        item = out.subscriptions.add(
            name=sub.name,
            topics=sub.topics,
            streams=sub.streams,
            outstanding_leases=sub.outstanding_leases,
            held_records=sub.held_records,
            waiting_redelivery=sub.waiting_redelivery,
            paused=sub.paused,
            deliveries=sub.deliveries,
            redeliveries=sub.redeliveries,
            acks=sub.acks,
            nacks=sub.nacks,
            lease_expiries=sub.lease_expiries,
            dead_lettered=sub.dead_lettered,
            consumer_replacements=sub.consumer_replacements,
        )
        if sub.committed_lag is not None:
            item.committed_lag = sub.committed_lag
    out.disk.free_bytes = snap.disk.free_bytes
    out.disk.reserve_bytes = snap.disk.reserve_bytes
    out.disk.reserve_held = snap.disk.reserve_held
    return out


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration
