"""A real local Apache Kafka cluster (KRaft, combined broker+controller nodes, see
`testkit.kafka_node`) for tests, ``make run``, benchmarks and fault tests::

    with KafkaCluster(tmp_path / "kafka", brokers=3) as cluster:
        cluster.create_topic("orders", partitions=3)
        cluster.kill(cluster.leader_of("orders", 0))   # SIGKILL; restart(node) brings it back

The cluster picks the nodes' ports, writes their configuration (static
``controller.quorum.voters``; replication and the controller stay PLAINTEXT, also with
`SecuredListeners`), starts and stops them, and waits until a message is produced with
acks=all. Ports, cluster id and pids are kept in ``<work_dir>/ferry-kafka.json``: a later run
on the same dir (the CLI, ``python -m testkit.kafka_local``, included) keeps its ports and data.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from testkit.kafka_admin import QUIET, create_topic, partition_leader
from testkit.kafka_jars import KAFKA_VERSION, KafkaError, fetch
from testkit.kafka_node import KafkaNode, SecuredListeners
from testkit.ports import HOST, port_free, port_open, stable_free_port

STATE_FILE = "ferry-kafka.json"
PROBE_TOPIC = "_ferry_probe"
_LIVE: set[KafkaCluster] = set()  # clusters to stop at interpreter exit


def _cluster_id() -> str:
    while True:  # Kafka's Uuid text form: url-safe base64 without padding, no leading '-'
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class KafkaCluster:
    """A KRaft cluster of ``brokers`` nodes (ids 1..n, 127.0.0.1 only) under ``work_dir``.

    ``brokers``: 1 or 3 (default: as saved in work_dir, else 1). ``port``: fixed client port
    of node 1 (node i: port+i-1); otherwise free ports (reused from an earlier run in the
    same work_dir). ``advertised``: node id -> "host:port" for clients (e.g. a proxy); also
    settable as ``nodes[i].advertised`` before start/restart. The readiness probe then goes
    through those addresses, so start the proxy first. ``config``: extra server.properties.
    ``jvm_opts``: extra JVM flags (e.g. ``FAST_START_JVM_OPTS``); heap is ``-Xmx<heap>``.
    ``detached``: JVMs outlive this process (CLI); otherwise atexit stops them, and they get
    SIGTERM if the thread that started them dies. ``secured``: SSL and SASL_SSL client
    listeners too (`SecuredListeners`), known before the storage is first formatted.
    """

    def __init__(
        self,
        work_dir: Path | str,
        brokers: int | None = None,
        *,
        port: int | None = None,
        advertised: Mapping[int, str] | None = None,
        auto_create_topics: bool = False,
        config: Mapping[str, object] | None = None,
        heap: str = "512m",
        cache_dir: Path | str | None = None,
        jvm_opts: Sequence[str] = (),
        start_timeout: float = 90.0,
        detached: bool = False,
        secured: SecuredListeners | None = None,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.auto_create_topics, self.heap, self.detached = auto_create_topics, heap, detached
        self.config, self.cache_dir = dict(config or {}), cache_dir
        self.start_timeout, self.jvm_opts = start_timeout, list(jvm_opts)
        self.secured = secured
        path = self.work_dir / STATE_FILE
        state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"nodes": []}
        n = brokers or len(state["nodes"]) or 1
        if state["nodes"] and len(state["nodes"]) != n:
            raise KafkaError(f"{self.work_dir} holds a {len(state['nodes'])}-node cluster, not {n}")
        self.cluster_id: str = state.get("cluster_id") or _cluster_id()
        used: set[int] = set()

        def pick(want: int | None, keep: bool) -> int:
            ok = want is not None and want not in used and (keep or port_free(want))
            port = want if ok and want is not None else stable_free_port(used)
            used.add(port)
            return port

        self.nodes: list[KafkaNode] = []
        for i in range(1, n + 1):
            s: dict[str, Any] = next((x for x in state["nodes"] if x["id"] == i), {})
            node = KafkaNode(
                i, 0, 0, 0, self.work_dir / f"node-{i}", (advertised or {}).get(i), s.get("pid")
            )
            up = node.alive()  # a running node (status/stop from the CLI) holds its ports
            node.port = pick(port + i - 1 if port else s.get("port"), up or bool(port))
            node.internal_port = pick(s.get("internal_port"), up)
            node.controller_port = pick(s.get("controller_port"), up)
            if secured is not None:
                node.ssl_port = pick(s.get("ssl_port"), up)
                node.sasl_ssl_port = pick(s.get("sasl_ssl_port"), up)
            self.nodes.append(node)

    @property
    def bootstrap(self) -> str:
        """The real listeners: "127.0.0.1:p1,127.0.0.1:p2,..."."""
        return ",".join(n.address for n in self.nodes)

    @property
    def ssl_bootstrap(self) -> str:
        """The SSL client listeners (a cluster with `SecuredListeners`)."""
        assert self.secured is not None, "this cluster has no secured listeners"
        return ",".join(f"{HOST}:{n.ssl_port}" for n in self.nodes)

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """The SASL_SSL (SCRAM) client listeners (a cluster with `SecuredListeners`)."""
        assert self.secured is not None, "this cluster has no secured listeners"
        return ",".join(f"{HOST}:{n.sasl_ssl_port}" for n in self.nodes)

    def node(self, node: int | KafkaNode) -> KafkaNode:
        return node if isinstance(node, KafkaNode) else self.nodes[node - 1]

    def running(self) -> bool:
        return all(n.alive() for n in self.nodes)

    def _write_state(self) -> None:
        nodes = [
            {
                "id": n.node_id,
                "port": n.port,
                "internal_port": n.internal_port,
                "controller_port": n.controller_port,
                **(
                    {"ssl_port": n.ssl_port, "sasl_ssl_port": n.sasl_ssl_port} if n.ssl_port else {}
                ),
                "advertised": n.advertised,
                "pid": n.pid if n.alive() else None,
            }
            for n in self.nodes
        ]
        data = {
            "kafka_version": KAFKA_VERSION,
            "cluster_id": self.cluster_id,
            "bootstrap": self.bootstrap,
            "nodes": nodes,
        }
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.work_dir / f"{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.work_dir / STATE_FILE)

    def server_properties(self, node: KafkaNode) -> dict[str, object]:
        n, rf = len(self.nodes), min(3, len(self.nodes))
        isr = 2 if n >= 3 else 1
        listeners = f"PLAINTEXT://{node.address},INTERNAL://{HOST}:{node.internal_port}"
        advertised = f"PLAINTEXT://{node.advertised or node.address},"
        advertised += f"INTERNAL://{HOST}:{node.internal_port}"
        protocols = "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
        secured: dict[str, object] = {}
        if self.secured is not None:
            extra = f",SSL://{HOST}:{node.ssl_port},SASL_SSL://{HOST}:{node.sasl_ssl_port}"
            listeners += extra
            advertised += extra
            protocols += ",SSL:SSL,SASL_SSL:SASL_SSL"
            secured = self.secured.server_properties()
        return {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": ",".join(
                f"{m.node_id}@{HOST}:{m.controller_port}" for m in self.nodes
            ),
            "listeners": f"{listeners},CONTROLLER://{HOST}:{node.controller_port}",
            "advertised.listeners": advertised,
            "listener.security.protocol.map": protocols,
            "inter.broker.listener.name": "INTERNAL",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": node.data_dir,
            "num.partitions": 1,
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "unclean.leader.election.enable": "false",
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            # Kafka: 9000/2000. Fence a dead broker (and let a SIGKILLed node re-register on
            # restart) sooner; quicker unfencing at startup.
            "broker.session.timeout.ms": 4000,
            "broker.heartbeat.interval.ms": 500,
            **secured,
            **self.config,
        }

    def _launch(self, libs: Path, nodes: list[KafkaNode]) -> None:
        """Write configs, format storage where needed (in parallel), start the JVMs."""
        for node in nodes:
            node.check_startable()
        format_args = self.secured.format_args() if self.secured is not None else []
        formats = []
        for node in nodes:
            node.write_config(self.server_properties(node))
            proc = node.start_format(libs, self.cluster_id, format_args)
            if proc is not None:
                formats.append((node, proc))
        for node, proc in formats:
            out = proc.communicate()[0].decode(errors="replace")
            if proc.returncode != 0:
                raise KafkaError(f"storage format of kafka node {node.node_id} failed:\n{out}")
        in_main = threading.current_thread() is threading.main_thread()
        for node in nodes:
            node.start_jvm(
                libs, self.heap, self.jvm_opts, die_with_thread=in_main and not self.detached
            )
        if not self.detached:
            _LIVE.add(self)
        self._write_state()

    def start(self, timeout: float | None = None) -> KafkaCluster:
        """Fetch jars, format storage (first run), start all nodes and wait until a message
        is produced with acks=all (at most ``timeout``, default ``start_timeout``)."""
        libs = fetch(self.cache_dir)
        try:
            self._launch(libs, self.nodes)
            self._wait_ready(self.nodes, timeout or self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, node: int | KafkaNode, timeout: float | None = None) -> None:
        """(Stop and) start one node on its ports and data dir; wait until it is back."""
        nd = self.node(node)
        if nd.alive():
            self.stop(nd)
        self._launch(fetch(self.cache_dir), [nd])
        self._wait_ready([nd], timeout or self.start_timeout)

    def stop(self, node: int | KafkaNode | None = None, timeout: float = 30.0) -> None:
        """SIGTERM (controlled shutdown), wait up to ``timeout``, then SIGKILL. Without
        ``node``, all nodes are stopped in parallel. Once fewer than a controller quorum of
        nodes is alive, a controlled shutdown cannot finish: those get SIGKILL after 3 s."""
        nodes = self.nodes if node is None else [self.node(node)]
        for nd in nodes:
            nd.send_signal(signal.SIGCONT)  # a paused JVM cannot act on SIGTERM
            nd.send_signal(signal.SIGTERM)
        deadline, no_quorum = time.monotonic() + timeout, float("inf")
        while any(nd.alive() for nd in nodes):
            now = time.monotonic()
            if sum(n.alive() for n in self.nodes) <= len(self.nodes) // 2:
                no_quorum = min(no_quorum, now)
            if now > min(deadline, no_quorum + 3.0):
                for nd in nodes:
                    self.kill(nd)
            time.sleep(0.05)
        if not any(n.alive() for n in self.nodes):
            _LIVE.discard(self)
        self._write_state()

    def kill(self, node: int | KafkaNode) -> None:
        """SIGKILL one node (no controlled shutdown) and reap it."""
        nd, deadline = self.node(node), time.monotonic() + 10.0
        nd.send_signal(signal.SIGKILL)
        while nd.alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def pause(self, node: int | KafkaNode) -> None:
        """SIGSTOP: the node hangs with its sockets open (sessions time out)."""
        self.node(node).send_signal(signal.SIGSTOP)

    def resume(self, node: int | KafkaNode) -> None:
        self.node(node).send_signal(signal.SIGCONT)

    def detach(self) -> None:
        """Let the JVMs outlive this process (no stop at exit)."""
        _LIVE.discard(self)

    def __enter__(self) -> KafkaCluster:
        return self if self.running() else self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self, nodes: list[KafkaNode], timeout: float) -> None:
        deadline, last, waiting = time.monotonic() + timeout, "listener not open", list(nodes)
        while True:
            dead = [n for n in nodes if not n.alive()]
            if dead:
                raise KafkaError(
                    f"kafka node {dead[0].node_id} exited during startup\n" + dead[0].log_tail()
                )
            waiting = [n for n in waiting if not port_open(n.port)]
            if not waiting:
                try:
                    _probe(self.bootstrap, {n.node_id for n in nodes}, min(3, len(self.nodes)))
                    return
                except Exception as exc:  # any probe failure means: not yet
                    last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise KafkaError(
                    f"kafka in {self.work_dir} not ready after {timeout:.0f}s "
                    f"({last})\n" + "\n".join(n.log_tail() for n in nodes)
                )
            time.sleep(0.3)

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int | None = None,
        config: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Create a topic (replication default min(3, brokers)); wait until it has leaders."""
        create_topic(
            self.bootstrap,
            name,
            partitions,
            replication or min(3, len(self.nodes)),
            config,
            timeout,
        )

    def leader_of(self, topic: str, partition: int = 0) -> int:
        """Node id of the partition's current leader."""
        return partition_leader(self.bootstrap, topic, partition)


def _probe(bootstrap: str, node_ids: set[int], rf: int) -> None:
    """Raise unless ``node_ids`` are registered brokers and a probe message gets acked."""
    md = AdminClient({"bootstrap.servers": bootstrap, **QUIET}).list_topics(timeout=5)
    if not node_ids <= set(md.brokers):
        raise KafkaError(f"registered brokers {sorted(md.brokers)}, want {sorted(node_ids)}")
    if PROBE_TOPIC not in md.topics:
        with contextlib.suppress(KafkaException):  # e.g. created concurrently
            create_topic(bootstrap, PROBE_TOPIC, 1, rf, None, 10.0)
    errors: list[object] = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": 10000,
            **QUIET,
        }
    )
    producer.produce(PROBE_TOPIC, b"probe", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(12)
    if errors != [None]:
        raise KafkaError(f"probe produce failed: {errors or 'timeout'}")


@atexit.register
def _stop_all() -> None:
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.stop(timeout=15.0)
