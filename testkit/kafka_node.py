"""One node of a local Apache Kafka (KRaft, a combined broker+controller JVM) run from Maven
jars: its ports and directory, its configuration files, formatting its storage, starting its
JVM, signalling it and reading its logs. `testkit.kafka_cluster` decides what the nodes are
configured with and when they start and stop.

Each node has a PLAINTEXT client listener (``node.port``; advertised as ``node.advertised``
when set, e.g. a toxiproxy address), an INTERNAL one for replication (never proxied) and a
CONTROLLER one. With `SecuredListeners` it also has an SSL client listener (``node.ssl_port``,
client certificates required) and a SASL_SSL one (``node.sasl_ssl_port``, SCRAM-SHA-256/512
users created when the storage is formatted).

`start_jvm(..., die_with_thread=True)` gives the JVM a parent-death signal (SIGTERM) that
follows the starting thread, so that a killed test run leaves no broker behind; the cluster asks
for it when started from the main thread and not detached.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testkit.kafka_certs import KafkaCerts
from testkit.kafka_jars import KafkaError
from testkit.ports import HOST, port_free
from testkit.processes import die_with_parent

# C1-only JIT: ~45% less CPU to start a broker, slower at steady state. For test clusters,
# not for benchmarks: KafkaCluster(..., jvm_opts=FAST_START_JVM_OPTS).
FAST_START_JVM_OPTS = ("-XX:TieredStopAtLevel=1",)
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
        self.data_dir = self.directory / "data"
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

    def check_startable(self) -> None:
        """Raise `KafkaError` unless this node is down and all its ports are free."""
        if self.alive():
            raise KafkaError(f"kafka node {self.node_id} already runs (pid {self.pid})")
        ports = [self.port, self.internal_port, self.controller_port]
        ports += [self.ssl_port, self.sasl_ssl_port] if self.ssl_port else []
        busy = [p for p in ports if not port_free(p)]
        if busy:
            raise KafkaError(f"port(s) {busy} of kafka node {self.node_id} already in use")

    def write_config(self, properties: Mapping[str, object]) -> None:
        """Write server.properties and the log4j2 configuration."""
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        self.props.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        (self.directory / "log4j2.properties").write_text(_LOG4J2.format(log=self.server_log))

    def start_format(
        self, libs: Path, cluster_id: str, extra_args: Sequence[str]
    ) -> subprocess.Popen[bytes] | None:
        """Start formatting the storage (None: formatted already); the caller waits for it, so
        that the nodes of a cluster format in parallel."""
        if (self.data_dir / "meta.properties").exists():
            return None
        cmd = self._java(
            libs,
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            cluster_id,
            "-c",
            str(self.props),
            *extra_args,
        )
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def start_jvm(
        self, libs: Path, heap: str, jvm_opts: Sequence[str], *, die_with_thread: bool
    ) -> None:
        """Start the broker JVM; with `die_with_thread` it gets SIGTERM when the calling
        thread ends."""
        jvm = [
            f"-Xmx{heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            *jvm_opts,
        ]
        cmd = self._java(libs, "kafka.Kafka", str(self.props))
        argv, preexec = [cmd[0], *jvm, *cmd[1:]], None
        if die_with_thread:  # the death signal follows the spawning thread
            argv, preexec = die_with_parent(argv, signal.SIGTERM)
        with open(self.stdout_log, "ab") as out_file:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
                preexec_fn=preexec,
            )
        self.pid = self.proc.pid

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the JVM if it runs."""
        if self.alive() and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def _java(self, libs: Path, *args: str) -> list[str]:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else shutil.which("java") or "java"
        return [
            java,
            "-Djava.awt.headless=true",
            "-Dlog4j2.shutdownHookEnabled=false",
            f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.directory / 'logs'}",
            "-cp",
            f"{libs}/*",
            *args,
        ]
