"""A real local Apache Kafka (KRaft, combined broker+controller nodes) run from Maven jars,
for tests, ``make run``, benchmarks and fault tests::

    with KafkaCluster(tmp_path / "kafka", brokers=3) as cluster:
        cluster.create_topic("orders", partitions=3)
        cluster.kill(cluster.leader_of("orders", 0))   # SIGKILL; restart(node) brings it back

Each node has a PLAINTEXT client listener (``node.port``; advertised as ``node.advertised``
when set, e.g. a toxiproxy address), an INTERNAL one for replication (never proxied) and a
CONTROLLER one (static ``controller.quorum.voters``). With ``secured=SecuredListeners(...)``
it also has an SSL client listener (``node.ssl_port``, client certificates required) and a
SASL_SSL one (``node.sasl_ssl_port``, SCRAM-SHA-256/512 users created when the storage is
formatted); replication and the controller stay PLAINTEXT. Ports, cluster id and pids are kept in
``<work_dir>/ferry-kafka.json``: a later run on the same dir keeps its ports and data.
CLI (``python -m testkit.kafka_local``): ``fetch [--cache DIR]``,
``start --dir DIR [--port 9092] [--brokers 1|3]`` (detached), ``status --dir DIR``,
``stop --dir DIR``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from testkit.kafka_admin import QUIET, create_topic, partition_leader
from testkit.kafka_certs import KafkaCerts
from testkit.kafka_jars import KAFKA_VERSION, KafkaError, fetch
from testkit.ports import HOST, port_free, port_open, stable_free_port
from testkit.processes import die_with_parent

__all__ = [
    "FAST_START_JVM_OPTS",
    "KAFKA_VERSION",
    "KafkaCluster",
    "KafkaError",
    "KafkaNode",
    "SecuredListeners",
    "fetch",
]

STATE_FILE = "ferry-kafka.json"
PROBE_TOPIC = "_ferry_probe"
# C1-only JIT: ~45% less CPU to start a broker, slower at steady state. For test clusters,
# not for benchmarks: KafkaCluster(..., jvm_opts=FAST_START_JVM_OPTS).
FAST_START_JVM_OPTS = ("-XX:TieredStopAtLevel=1",)
_LIVE: set[KafkaCluster] = set()  # clusters to stop at interpreter exit
_LOG4J2 = """status = warn
appender.f.type = File
appender.f.name = FILE
appender.f.fileName = {log}
appender.f.layout.type = PatternLayout
appender.f.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.f.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@dataclass(frozen=True)
class SecuredListeners:
    """The SSL and SASL_SSL client listeners of every node: the broker's key and certificate
    (``certs.broker_keystore``, PEM), the CA clients' certificates must come from
    (``certs.ca``), and SCRAM users (name -> password) for both SCRAM mechanisms."""

    certs: KafkaCerts
    scram_users: Mapping[str, str]

    def server_properties(self) -> dict[str, object]:
        jaas = {
            f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config": _SCRAM_LOGIN
            for m in SCRAM_MECHANISMS
        }
        return {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": self.certs.broker_keystore,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": self.certs.ca,
            "listener.name.ssl.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
            **jaas,
        }

    def format_args(self) -> list[str]:
        """StorageTool format arguments that create the SCRAM users."""
        return [
            arg
            for name, password in self.scram_users.items()
            for mechanism in SCRAM_MECHANISMS
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]


def _tail(path: Path, lines: int = 40, errors_only: bool = False) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(none)"
    if errors_only:
        text = [t[:400] for t in text if " ERROR " in t or " FATAL " in t]
    return "\n".join(text[-lines:])


def _cluster_id() -> str:
    while True:  # Kafka's Uuid text form: url-safe base64 without padding, no leading '-'
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass
class KafkaNode:
    """One combined broker+controller JVM; its ports stay fixed across restarts."""

    node_id: int
    port: int  # real PLAINTEXT (client) listener on 127.0.0.1
    internal_port: int  # INTERNAL listener: inter-broker replication, never proxied
    controller_port: int
    directory: Path
    advertised: str | None = None  # "host:port" advertised to clients instead of the listener
    pid: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    ssl_port: int = 0  # SSL client listener (0: none; clusters with SecuredListeners)
    sasl_ssl_port: int = 0  # SASL_SSL client listener (SCRAM)

    def __post_init__(self) -> None:
        self.props = self.directory / "server.properties"
        self.stdout_log = self.directory / "stdout.log"  # JVM stdout/stderr
        self.server_log = self.directory / "logs" / "server.log"  # log4j2

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def alive(self) -> bool:
        """True while this node's JVM runs (also when another process started it)."""
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pid is None:
            return False
        try:  # guard against pid reuse: it must be *this* node's JVM
            cmd = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"kafka.Kafka" in cmd and str(self.props).encode() in cmd

    def log_tail(self, lines: int = 40) -> str:
        return (
            f"--- {self.stdout_log} ---\n{_tail(self.stdout_log, lines)}\n"
            f"--- {self.server_log} (errors) ---\n{_tail(self.server_log, 5, True)}\n"
            f"--- {self.server_log} ---\n{_tail(self.server_log, lines)}"
        )


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
            "log.dirs": node.directory / "data",
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

    def _java(self, libs: Path, node: KafkaNode, *args: str) -> list[str]:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else shutil.which("java") or "java"
        return [
            java,
            "-Djava.awt.headless=true",
            "-Dlog4j2.shutdownHookEnabled=false",
            f"-Dlog4j2.configurationFile={node.directory / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={node.directory / 'logs'}",
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def _launch(self, libs: Path, nodes: list[KafkaNode]) -> None:
        """Write configs, format storage where needed (in parallel), start the JVMs."""
        for node in nodes:
            if node.alive():
                raise KafkaError(f"kafka node {node.node_id} already runs (pid {node.pid})")
            ports = [node.port, node.internal_port, node.controller_port]
            ports += [node.ssl_port, node.sasl_ssl_port] if node.ssl_port else []
            busy = [p for p in ports if not port_free(p)]
            if busy:
                raise KafkaError(f"port(s) {busy} of kafka node {node.node_id} already in use")
        formats = []
        for node in nodes:
            (node.directory / "logs").mkdir(parents=True, exist_ok=True)
            node.props.write_text(
                "".join(f"{k}={v}\n" for k, v in self.server_properties(node).items())
            )
            (node.directory / "log4j2.properties").write_text(_LOG4J2.format(log=node.server_log))
            if not (node.directory / "data" / "meta.properties").exists():
                cmd = self._java(
                    libs,
                    node,
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "-t",
                    self.cluster_id,
                    "-c",
                    str(node.props),
                    *(self.secured.format_args() if self.secured is not None else ()),
                )
                formats.append(
                    (node, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
                )
        for node, proc in formats:
            out = proc.communicate()[0].decode(errors="replace")
            if proc.returncode != 0:
                raise KafkaError(f"storage format of kafka node {node.node_id} failed:\n{out}")
        jvm = [
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            *self.jvm_opts,
        ]
        in_main = threading.current_thread() is threading.main_thread()
        for node in nodes:
            cmd = self._java(libs, node, "kafka.Kafka", str(node.props))
            argv, preexec = [cmd[0], *jvm, *cmd[1:]], None
            if in_main and not self.detached:  # the death signal follows the spawning thread
                argv, preexec = die_with_parent(argv, signal.SIGTERM)
            with open(node.stdout_log, "ab") as out_file:
                node.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out_file,
                    stderr=subprocess.STDOUT,
                    cwd=node.directory,
                    start_new_session=True,
                    preexec_fn=preexec,
                )
            node.pid = node.proc.pid
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

    def _signal(self, node: KafkaNode, sig: signal.Signals) -> None:
        if node.alive() and node.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, sig)

    def stop(self, node: int | KafkaNode | None = None, timeout: float = 30.0) -> None:
        """SIGTERM (controlled shutdown), wait up to ``timeout``, then SIGKILL. Without
        ``node``, all nodes are stopped in parallel. Once fewer than a controller quorum of
        nodes is alive, a controlled shutdown cannot finish: those get SIGKILL after 3 s."""
        nodes = self.nodes if node is None else [self.node(node)]
        for nd in nodes:
            self._signal(nd, signal.SIGCONT)  # a paused JVM cannot act on SIGTERM
            self._signal(nd, signal.SIGTERM)
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
        self._signal(nd, signal.SIGKILL)
        while nd.alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def pause(self, node: int | KafkaNode) -> None:
        """SIGSTOP: the node hangs with its sockets open (sessions time out)."""
        self._signal(self.node(node), signal.SIGSTOP)

    def resume(self, node: int | KafkaNode) -> None:
        self._signal(self.node(node), signal.SIGCONT)

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m testkit.kafka_local", description="Local Kafka (KRaft) from jars."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download Kafka's jars").add_argument("--cache", type=Path)
    p_start = sub.add_parser("start", help="start a detached cluster, wait until ready")
    for p in (p_start, sub.add_parser("stop"), sub.add_parser("status")):
        p.add_argument("--dir", type=Path, required=True, help="cluster work/data dir")
    p_start.add_argument("--port", type=int, help="client port of node 1 (node i: +i-1)")
    p_start.add_argument("--brokers", type=int, choices=(1, 3))
    p_start.add_argument("--cache", type=Path)
    p_start.add_argument("--timeout", type=float, default=90.0)
    p_start.add_argument("--auto-create-topics", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    if args.cmd == "fetch":
        print(f"{fetch(args.cache)} ({time.monotonic() - t0:.1f}s)")
        return 0
    if args.cmd != "start" and not (args.dir / STATE_FILE).exists():
        print(f"no kafka cluster in {args.dir}", file=sys.stderr)
        return 0 if args.cmd == "stop" else 1
    try:
        cluster = KafkaCluster(args.dir) if (args.dir / STATE_FILE).exists() else None
        if args.cmd == "start" and cluster is not None and cluster.running():
            print(f"kafka already running from {args.dir}", file=sys.stderr)
            print(cluster.bootstrap)
            return 0
        if args.cmd == "start" or cluster is None:
            cluster = KafkaCluster(
                args.dir,
                args.brokers,
                port=args.port,
                cache_dir=args.cache,
                auto_create_topics=args.auto_create_topics,
                detached=True,
            )
            cluster.start(args.timeout)
            print(f"kafka ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
            print(cluster.bootstrap)
            return 0
    except KafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.cmd == "stop":
        cluster.stop()
        print(f"stopped kafka in {args.dir}", file=sys.stderr)
        return 0
    alive = {str(n.node_id): n.alive() for n in cluster.nodes}
    print(
        json.dumps({"running": all(alive.values()), "bootstrap": cluster.bootstrap, "nodes": alive})
    )
    return 0 if all(alive.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
