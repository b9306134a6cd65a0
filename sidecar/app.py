"""Assembly and lifecycle of Ferry: log, forwarder process, subscriptions, services, drain.

Start order: lock + open the log, start the forwarder process, serve (health goes
SERVING once the log is open; `ferry.kafka` once the forwarder reports Kafka reachable).

Ferry is two processes: this one, and the forwarder process it starts and supervises
(sidecar/forward/supervisor.py), which reads the log and sends it to Kafka under an
interpreter lock of its own. With `--forwarder-mode thread` it is one process: the
forwarder's `forwarder` and `kafka-probe` threads run in Ferry, fed by the log writer's
commit hook, in place of `forwarder-feed` and `forwarder-link` (sidecar/forward/placement.py).
Ferry's threads, and what each owns:

==========================  ==========================================================
thread                      owns
==========================  ==========================================================
main: the asyncio loop      the gRPC servicers (Publisher, Subscriber, Admin, Health,
                            reflection); the publish service and the ACK_LEVEL_KAFKA
                            waiters; per PublishStream a reader task and one task per
                            unanswered request; the subscription registry and every
                            `Subscription` (streams, leases, ack trackers, redeliveries,
                            dead-letter writes), its lease ticker and linger tasks; the
                            `ferry.kafka` health watch; the state snapshots of GetStatus
                            and the metrics; signals and the drain
gRPC poller (grpc.aio's     polls gRPC core's completion queue for the event loop
`_poll_wrapper`)
`wal-writer`                the only writing connection to the log: group commit of
                            appends and retirements, dedupe pruning, the disk reserve,
                            the -wal file's hard bound (a TRUNCATE checkpoint)
`wal-checkpoint`            its own log connection: PASSIVE checkpoints after commits,
                            off the commit path
`forwarder-feed`            the pipe's downward half: what the log committed, to the
                            forwarder process
`forwarder-link`            the pipe's upward half: settlements to the log writer,
                            deliveries to the ACK_LEVEL_KAFKA waiters, the forwarder's
                            reports; restarts a forwarder process that died
`consumer-<group>`, one     that subscription's Kafka consumer: polling, rebalance
per subscription            callbacks (the commit on revoke), commits, pause and resume,
                            the stuck-consumer watchdog
`close-<group>` (passing)   closes a consumer, so that its thread can stop waiting for it
`metrics-http`              the Prometheus endpoint (`--metrics-listen`): accepts scrapes;
                            each runs on a short-lived thread of its own, which asks the
                            loop for a snapshot and waits for it at most 5 s
asyncio's default executor  a snapshot's file reads (GetStatus, a scrape): each topic's
                            oldest pending event through a read-only log connection, the
                            disk's free space
OpenTelemetry's batch span  only with OTEL_EXPORTER_OTLP_ENDPOINT: exports the spans
processor thread            (sidecar/observability/spans.py)
`stderr-to-json` (cli)      file descriptor 2, a pipe: what native code writes there (gRPC
                            core above all) is logged as JSON lines
`stop-<subscription>`,      one blocking drain step each; the loop waits for it at most
`forwarder-stop`,           its share of the shutdown budget
`span-flush`, `wal-close`
(drain)
`shutdown-deadline`         exits the process once the shutdown budget is spent
(drain)
native threads              librdkafka's (`rdk:main`, `rdk:broker*`, per Kafka client)
                            and gRPC core's
==========================  ==========================================================

The forwarder process (sidecar/forward/child.py), and what each of its threads owns:

==========================  ==========================================================
thread                      owns
==========================  ==========================================================
main                        the pipe's reading end: committed rows, the order to stop
`forwarder`                 the Kafka producer (its delivery callbacks run here) and a
                            read-only log connection: per-topic lanes, retries,
                            settlements and deliveries sent up the pipe
`kafka-probe`               metadata requests through the producer while no delivery
                            is reported: Kafka reachability
`forwarder-report`          the forwarder's state, up the pipe four times a second
native threads              librdkafka's
==========================  ==========================================================

The wal-writer, wal-checkpoint, forwarder-feed, forwarder-link and consumer threads
(in thread mode, forwarder and kafka-probe too) run supervised (sidecar/lifecycle.py): if
one dies (an exception escapes its loop), it is logged as one `thread_died` line with the
traceback, health turns NOT_SERVING at once and Ferry drains as below, then exits 70 so
that Kubernetes restarts it. The forwarder gets no grace period if the log writer died (it could
retire nothing). What is logged stays in the log; the next start forwards it.
A forwarder process that dies (a thread of its own died, or it was killed) is
started again after a backoff while Ferry keeps serving, with `ferry.kafka`
NOT_SERVING until it reports; after three crashes in a row the forwarder-link
thread gives up, and Ferry drains and exits 70 (sidecar/forward/restarts.py).

Drain (SIGTERM, or a dead thread), each step bounded, the shutdown budget
being their sum (`ShutdownBudget`): health NOT_SERVING for every service
name and new publishes UNAVAILABLE (at once); streams end UNAVAILABLE with
their leases returned, and every subscription's consumer commits its acked
offsets and leaves its group, all in parallel (5 s); the forwarder drains for
`--drain-grace-s` and settles (+3 s); the gRPC server lets calls in progress
finish (5 s); the log closes (2 s); 1 s of slack. The metrics endpoint serves until the
end of the drain. That is `--drain-grace-s` +
16 s, 26 s by default, below Kubernetes' 30 s grace period. A step that
overruns its share is left behind (what it did not finish stays logged, or
uncommitted and delivered again); when the whole budget is spent the process
exits 70, whatever still runs. Exit codes: 0 drained, 2 invalid
configuration, 70 a thread died or the budget ran out, 128 + signal number
on a second signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
import structlog

from sidecar.api.access import access_control
from sidecar.api.admin import AdminServicer
from sidecar.api.publisher import PublisherServicer
from sidecar.api.server import KAFKA_HEALTH, PUBLISHER, SUBSCRIBER, Health, build_server
from sidecar.api.subscriber import SubscriberServicer
from sidecar.api.tokens import TokenStore
from sidecar.clock import SystemClock
from sidecar.config import Settings
from sidecar.forward.channels import CommittedRows
from sidecar.forward.messages import ForwarderConfig
from sidecar.forward.placement import ForwarderHandle, make_forwarder
from sidecar.kafka.consumer import ConsumerThread, consumer_config
from sidecar.kafka.security import kafka_client_options
from sidecar.lifecycle import (
    FORWARDER_STOP_S,
    KUBERNETES_GRACE_S,
    ShutdownBudget,
    ThreadDeaths,
    on_thread_death,
    run_blocking,
)
from sidecar.model import AckLevel, Outcome, OutgoingEvent
from sidecar.observability.metrics import (
    PublishMetrics,
    SnapshotCollector,
    new_registry,
)
from sidecar.observability.metrics_server import MetricsServer, serve_metrics, snapshot_on_loop
from sidecar.observability.snapshot import LogLimits, StatusSources
from sidecar.observability.spans import Tracing, tracing_from_environment
from sidecar.publish.kafka_waiters import KafkaAckWaiters
from sidecar.publish.service import PublishService
from sidecar.storage import check_data_dir
from sidecar.subscribe.registry import ConsumerHandle, SubscriptionRegistry
from sidecar.subscribe.subscription import Subscription, SubscriptionSettings
from sidecar.validation import EventLimits
from sidecar.wal.writer import THREAD_NAME as WAL_WRITER
from sidecar.wal.writer import WalLimits, WalWriter

log = structlog.get_logger(__name__)
SERVICES = ["", PUBLISHER, SUBSCRIBER]
KAFKA_WATCH = "kafka-health-watch"
#: How long the drain waits for spans to be exported (only when exporting).
FLUSH_WAIT_S = 0.75


@dataclass
class FerryApp:
    """A running Ferry. Build with `FerryApp.start(settings)`."""

    settings: Settings
    writer: WalWriter
    forwarder: ForwarderHandle
    publish: PublishService
    subscriptions: SubscriptionRegistry
    health: Health
    server: grpc.aio.Server
    port: int
    #: Set by a supervised thread's death; the caller (cli) also sets it on SIGTERM.
    stop_requested: asyncio.Event
    deaths: ThreadDeaths
    status: StatusSources
    metrics_server: MetricsServer | None = None
    tracing: Tracing = field(default_factory=Tracing)
    budget: ShutdownBudget = field(init=False)
    _watch: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.budget = ShutdownBudget.for_grace(self.settings.drain_grace_s)

    @classmethod
    async def start(
        cls, settings: Settings, kafka_options: Mapping[str, str] | None = None
    ) -> FerryApp:
        """`kafka_options`: every Kafka client's extra options, secrets revealed (default:
        `kafka_client_options(settings)`, which reads the secret files)."""
        options = dict(kafka_client_options(settings) if kafka_options is None else kafka_options)
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        deaths = ThreadDeaths(loop, stop_requested)
        on_thread_death(deaths.report)  # before the first supervised thread starts
        clock = SystemClock()
        waiters = KafkaAckWaiters(loop)
        committed = CommittedRows()
        check_data_dir(settings.data_dir)
        writer = WalWriter(
            settings.data_dir,
            WalLimits(
                settings.wal_max_rows,
                settings.wal_max_bytes,
                settings.dedupe_window_s,
                settings.disk_reserve_bytes,
                settings.wal_topic_share,
            ),
            on_commit=committed.report,
        )
        forwarder = make_forwarder(
            settings.forwarder_mode,
            ForwarderConfig(
                settings.data_dir,
                settings.kafka_bootstrap,
                options,
                max_in_flight=settings.forwarder_max_in_flight,
                max_backoff_s=settings.retry_max_backoff_s,
                log_level=settings.log_level,
                resend_check_s=settings.resend_check_s,
                parent_pid=os.getpid(),
            ),
            committed,
            writer,
            on_delivered=waiters.delivered,
        )
        # At once: a forwarder process takes a moment to start, which overlaps with the rest of
        # the start here; the log it reads is open already.
        forwarder.start()
        publish = PublishService(writer, waiters)

        async def dead_letters(events: list[OutgoingEvent]) -> list[Outcome]:
            # Dead letters bypass the "accepting" gate: they settle records already consumed.
            return await writer.append(events)

        def make_consumer(sub: SubscriptionSettings, sink: Subscription) -> ConsumerHandle:
            config = consumer_config(
                settings.kafka_bootstrap,
                settings.group_prefix + sub.name,
                sub.start_latest,
                options,
                settings.consumer_session_timeout_ms,
            )
            return ConsumerThread(config, sub.topics, loop, sink)

        subscriptions = SubscriptionRegistry(
            make_consumer,
            dead_letters,
            clock,
            max_streams=settings.max_streams,
            linger_s=settings.subscription_linger_s,
            max_subscriptions=settings.max_subscriptions,
        )
        limits = EventLimits(
            settings.max_event_bytes, settings.max_headers, settings.topic_allowlist
        )
        tokens = None
        if settings.token_auth:
            env_tokens = [t.get_secret_value() for t in settings.tokens]
            tokens = TokenStore(settings.token_file, env_tokens)
        access = access_control(settings, tokens)
        registry = new_registry()
        tracing = tracing_from_environment()
        publish_metrics = PublishMetrics()
        registry.register(publish_metrics)
        publisher = PublisherServicer(
            publish,
            limits,
            max_batch_events=settings.max_batch_events,
            default_kafka_wait_s=settings.kafka_wait_s,
            access=access,
            metrics=publish_metrics,
            tracing=tracing,
        )
        subscriber = SubscriberServicer(
            subscriptions,
            clock,
            topic_allowlist=settings.topic_allowlist,
            max_message_bytes=settings.max_delivery_message_bytes,
            access=access,
            tracing=tracing,
        )
        status = StatusSources(
            writer,
            forwarder,
            subscriptions,
            LogLimits(settings.wal_max_rows, settings.wal_max_bytes, settings.disk_reserve_bytes),
            lambda: publish.is_draining,
        )
        registry.register(SnapshotCollector(snapshot_on_loop(status.snapshot, loop)))
        admin = AdminServicer(status.snapshot, access)
        health = Health()
        await health.set(False, [*SERVICES, KAFKA_HEALTH])
        server, port = build_server(publisher, subscriber, health, settings, tokens, admin)
        metrics_server = None
        if settings.metrics_listen:
            metrics_server = serve_metrics(registry, settings.metrics_listen)
        await server.start()
        await health.set(True, SERVICES)
        app = cls(
            settings, writer, forwarder, publish, subscriptions, health, server, port,
            stop_requested, deaths, status, metrics_server, tracing,
        )  # fmt: skip
        app._watch = asyncio.create_task(app._watch_kafka(), name=KAFKA_WATCH)
        app._watch.add_done_callback(app._watch_ended)
        log.info(
            "ferry_started",
            port=port,
            listen=settings.listen,
            metrics_port=metrics_server.port if metrics_server else None,
            pending_events=writer.pending_rows,
            shutdown_budget_s=app.budget.total_s,
            settings=settings.describe(),
        )
        if app.budget.total_s > KUBERNETES_GRACE_S:
            log.warning(
                "shutdown_budget_over_kubernetes_grace",
                shutdown_budget_s=app.budget.total_s,
                kubernetes_grace_s=KUBERNETES_GRACE_S,
                hint="lower --drain-grace-s or raise terminationGracePeriodSeconds",
            )
        return app

    def _watch_ended(self, task: asyncio.Task[None]) -> None:
        # Supervised like the threads: a dead watch would freeze ferry.kafka at its last state.
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task_died", task=KAFKA_WATCH, exc_info=exc)
            self.deaths.report(KAFKA_WATCH, exc)

    async def _watch_kafka(self) -> None:
        reachable: bool | None = None
        while True:
            now = self.forwarder.status().kafka_reachable
            if now != reachable:
                reachable = now
                await self.health.set(now, [KAFKA_HEALTH])
                log.info("kafka_reachability", reachable=now)
            await asyncio.sleep(0.5)

    async def drain(self) -> None:
        """Stop serving, close subscriptions, drain the forwarder, close the log: each step
        within its share of `self.budget` (see the module docstring)."""
        started = time.monotonic()
        budget = self.budget
        log.info(
            "drain_started",
            pending_events=self.writer.pending_rows,
            budget_s=budget.total_s,
            dead_threads=list(self.deaths.threads),
        )
        if self._watch is not None:  # first: it must not turn ferry.kafka SERVING again
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.health.set(False, [*SERVICES, KAFKA_HEALTH])
        self.publish.stop_accepting()
        await self.subscriptions.shutdown(budget.consumers_s)
        # The server keeps answering (UNAVAILABLE for new publishes) while the forwarder drains,
        # so calls that already reached it are refused cleanly instead of cancelled.
        grace = 0.0 if WAL_WRITER in self.deaths.threads else self.settings.drain_grace_s
        forwarder_s = grace + FORWARDER_STOP_S  # at most budget.forwarder_s
        stopped = await run_blocking(
            lambda: self.forwarder.stop(grace), forwarder_s, "forwarder-stop"
        )
        if not stopped:
            log.warning("forwarder_stop_abandoned", after_s=forwarder_s)
        await self.server.stop(budget.rpc_s)
        if self.tracing.exporting:  # the calls' spans are all ended now
            await run_blocking(self.tracing.flush, FLUSH_WAIT_S, "span-flush")
        if not await run_blocking(self.writer.close, budget.wal_s, "wal-close"):
            log.warning("wal_close_abandoned", after_s=budget.wal_s)
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.close)
        log.info(
            "drain_finished",
            pending_events=self.writer.pending_rows,
            took_s=round(time.monotonic() - started, 3),
            dead_threads=list(self.deaths.threads),
        )


__all__ = ["AckLevel", "FerryApp"]
