"""Apache Kafka's jars, copied from Maven once into the tool cache (``tools/kafka/pom.xml``
lists them)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from testkit.paths import ROOT, cache_dir

KAFKA_VERSION = "4.1.1"  # keep in sync with tools/kafka/pom.xml
POM = ROOT / "tools" / "kafka" / "pom.xml"


class KafkaError(RuntimeError):
    """Fetching, formatting, starting or probing the local Kafka failed."""


def fetch(cache: Path | str | None = None) -> Path:
    """Copy Kafka's jars (Maven) into ``<cache>/kafka-<version>/libs`` once; return that dir.

    Idempotent (a marker holding the pom's hash) and safe when processes race (flock).
    """
    home = Path(cache or cache_dir()) / f"kafka-{KAFKA_VERSION}"
    libs, marker = home / "libs", home / ".complete"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text().strip() == digest:
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text().strip() == digest:
            return libs  # another process fetched while we waited
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaError("`mvn` not found on PATH: Maven is needed to fetch Kafka's jars")
        tmp = home / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0 or not (tmp / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise KafkaError(f"{' '.join(cmd)} failed:\n{(res.stdout + res.stderr)[-4000:]}")
        marker.unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        marker.write_text(digest + "\n")
    return libs
