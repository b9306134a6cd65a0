"""A shutdown closes every stream of a subscription: each keeps the item that ends its call, and
its leases go back unacked (no processes: the servicer's side is in tests/integration)."""

from __future__ import annotations

from typing import Any

from sidecar.clock import ManualClock
from sidecar.errors import ShuttingDown
from sidecar.kafka.ports import AssignedPartition, fetched_record
from sidecar.subscribe.stream import StreamClosed, StreamOptions
from sidecar.subscribe.subscription import Subscription, SubscriptionSettings
from testkit.subscription_fakes import IdleConsumer, no_dead_letters


def test_a_shutdown_leaves_every_stream_its_end_and_returns_its_leases() -> None:
    settings = SubscriptionSettings("sub", ("topic",), 0, "", False)
    subscription = Subscription(settings, ManualClock(), no_dead_letters)
    subscription.attach(IdleConsumer())
    subscription.on_assigned([AssignedPartition("topic", 0, None, "")])
    streams = [subscription.open_stream(StreamOptions(30.0, 100, 1 << 20)) for _ in range(2)]
    subscription.on_records([fetched_record("topic", 0, i, b"k", b"v", (), 0) for i in range(4)])
    assert subscription.status()["leased"] == 4
    error = ShuttingDown("bye")
    subscription.close_all_streams(error)
    for stream in streams:
        # The servicer ends the call with this item; without it the call would wait for the
        # gRPC server's stop to cancel it.
        items: list[Any] = [stream.outbox.get_nowait() for _ in range(stream.outbox.qsize())]
        assert items == [StreamClosed(error)]
    status = subscription.status()
    assert status["leased"] == 0
    assert status["waiting_redelivery"] == 4
