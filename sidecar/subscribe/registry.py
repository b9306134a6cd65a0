"""The subscriptions open in this sidecar: created with their first stream, closed after the last.

Owns the lifecycle around `Subscription`: starting its Kafka consumer,
checking that every stream of a subscription agrees on its settings, the
stream and subscription limits, the ticker that drives lease expiry and commits, a linger
period after the last stream leaves (a reconnecting subscriber finds its
records still leased here instead of waiting for a rebalance), and shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import structlog

from sidecar.clock import Clock
from sidecar.errors import (
    NotFound,
    SettingsConflict,
    ShuttingDown,
    TooManyStreams,
    TooManySubscriptions,
)
from sidecar.lifecycle import run_blocking
from sidecar.subscribe.deadletter import DeadLetterSink
from sidecar.subscribe.flow_control import Limits
from sidecar.subscribe.stream import Stream, StreamOptions
from sidecar.subscribe.subscription import ConsumerControl, Subscription, SubscriptionSettings

log = structlog.get_logger(__name__)
TICK_S = 0.05
DEFAULT_MAX_SUBSCRIPTIONS = 100
#: A client refused for the subscription cap retries after this: subscriptions whose last
#: stream closed leave after their linger period.
SUBSCRIPTION_RETRY_S = 5.0
#: How long a shutdown waits past a stop's own timeout for that stop to report and finish.
STOP_REPORT_MARGIN_S = 0.25


class ConsumerHandle(ConsumerControl, Protocol):
    """A subscription's consumer: controls plus start and a blocking stop."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


ConsumerFactory = Callable[[SubscriptionSettings, Subscription], ConsumerHandle]


class SubscriptionRegistry:
    """Subscriptions by name, with their consumers."""

    def __init__(
        self,
        consumer_factory: ConsumerFactory,
        dead_letters: DeadLetterSink,
        clock: Clock,
        *,
        max_streams: int,
        linger_s: float,
        limits: Limits | None = None,
        max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
    ) -> None:
        self._consumer_factory = consumer_factory
        self._dead_letters = dead_letters
        self._clock = clock
        self._max_streams = max_streams
        self._linger_s = linger_s
        self._max_subscriptions = max_subscriptions
        self._limits = limits or Limits()
        self._subscriptions: dict[str, Subscription] = {}
        self._consumers: dict[str, ConsumerHandle] = {}
        self._lingering: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False

    def find(self, name: str) -> Subscription:
        subscription = self._subscriptions.get(name)
        if subscription is None:
            raise NotFound(f"subscription {name!r} has no open stream in this sidecar")
        return subscription

    def stream_count(self) -> int:
        return sum(s.stream_count for s in self._subscriptions.values())

    def statuses(self) -> dict[str, dict[str, int]]:
        return {name: s.status() for name, s in self._subscriptions.items()}

    def open_subscriptions(self) -> list[Subscription]:
        """The subscriptions open in this sidecar (lingering ones included), by name."""
        return [self._subscriptions[name] for name in sorted(self._subscriptions)]

    async def open_stream(
        self, settings: SubscriptionSettings, options: StreamOptions
    ) -> tuple[Subscription, Stream]:
        if self._closing:
            raise ShuttingDown("Ferry is shutting down; reconnect to another instance")
        async with self._locks.setdefault(settings.name, asyncio.Lock()):
            # Checked under the lock, right before the stream opens: opens that waited for a
            # stopping subscription must not all slip past the limit.
            if self._closing:
                raise ShuttingDown("Ferry is shutting down; reconnect to another instance")
            if self.stream_count() >= self._max_streams:
                raise TooManyStreams(
                    f"this sidecar serves at most {self._max_streams} streams", 5.0
                )
            linger = self._lingering.pop(settings.name, None)
            if linger is not None:
                linger.cancel()
            subscription = self._subscriptions.get(settings.name)
            if subscription is None:
                # Each subscription is a Kafka consumer (a thread, a group member, its fetch
                # buffers) until it stops, lingering included.
                if len(self._subscriptions) >= self._max_subscriptions:
                    raise TooManySubscriptions(
                        f"this sidecar serves at most {self._max_subscriptions} subscriptions",
                        SUBSCRIPTION_RETRY_S,
                    )
                subscription = self._start(settings)
            elif subscription.settings != settings:
                # The open settings are not echoed: they are another client's business.
                raise SettingsConflict(
                    f"subscription {settings.name!r} is open in this sidecar with other "
                    "settings; open it with the same settings, or use another name"
                )
            return subscription, subscription.open_stream(options)

    def close_stream(self, subscription: Subscription, stream: Stream) -> None:
        subscription.close_stream(stream)
        name = subscription.settings.name
        if subscription.stream_count == 0 and not self._closing and name not in self._lingering:
            self._lingering[name] = asyncio.get_running_loop().create_task(self._linger(name))

    async def shutdown(self, close_timeout_s: float | None = None) -> None:
        """Close every stream (UNAVAILABLE), return leases, commit acked offsets, leave groups.

        The consumers close in parallel. One not closed after `close_timeout_s` (None: no
        limit) is left closing on its own daemon thread; if the process exits first, its group
        moves the partitions after the session timeout and what was not committed comes again.
        """
        self._closing = True
        for task in self._lingering.values():
            task.cancel()
        for subscription in self._subscriptions.values():
            subscription.close_all_streams(ShuttingDown("Ferry is shutting down; reconnect"))
        names = list(self._subscriptions)
        stops = (self._stop(name, close_timeout_s) for name in names)
        results = await asyncio.gather(*stops, return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):  # the others must still stop
                log.error("subscription_stop_failed", subscription=name, exc_info=result)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    def _start(self, settings: SubscriptionSettings) -> Subscription:
        subscription = Subscription(settings, self._clock, self._dead_letters, self._limits)
        consumer = self._consumer_factory(settings, subscription)
        subscription.attach(consumer)
        consumer.start()
        self._subscriptions[settings.name] = subscription
        self._consumers[settings.name] = consumer
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        log.info("subscription_started", subscription=settings.name, topics=settings.topics)
        return subscription

    async def _linger(self, name: str) -> None:
        await asyncio.sleep(self._linger_s)
        async with self._locks.setdefault(name, asyncio.Lock()):
            self._lingering.pop(name, None)
            subscription = self._subscriptions.get(name)
            if subscription is not None and subscription.stream_count == 0:
                await self._stop(name)

    async def _stop(self, name: str, timeout_s: float | None = None) -> None:
        """Stop subscription `name`; waits at most `timeout_s` for its consumer to close.

        One stop per subscription: a shutdown that finds one under way (a linger that ran
        out) waits for it instead of starting another; cancelling a waiter leaves it running.
        """
        stopping = self._stopping.get(name)
        if stopping is None:
            stopping = asyncio.get_running_loop().create_task(self._stop_once(name, timeout_s))
            self._stopping[name] = stopping
        # The stop gives up on its consumer at `timeout_s` by itself; the margin lets it say so
        # (consumer_close_abandoned) and close its streams before this wait gives up on it.
        wait_s = None if timeout_s is None else timeout_s + STOP_REPORT_MARGIN_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stopping), wait_s)

    async def _stop_once(self, name: str, timeout_s: float | None) -> None:
        try:
            subscription = self._subscriptions[name]
            consumer = self._consumers.pop(name)
            subscription.commit_now()
            # Leaving the group runs the revoke callback, which commits the acked prefix.
            closed = await run_blocking(consumer.stop, timeout_s, f"stop-{name}")
            if not closed:
                log.warning("consumer_close_abandoned", subscription=name, after_s=timeout_s)
            await subscription.close()
            del self._subscriptions[name]
            log.info("subscription_stopped", subscription=name, closed=closed)
        finally:
            del self._stopping[name]

    async def _tick_forever(self) -> None:
        while True:
            for subscription in list(self._subscriptions.values()):
                try:
                    subscription.tick()
                except Exception:  # one broken subscription must not stop the others' leases
                    log.exception(
                        "subscription_tick_failed", subscription=subscription.settings.name
                    )
            await asyncio.sleep(TICK_S)
