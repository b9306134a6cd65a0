"""A full disk under the write-ahead log: refusals only, never an OK for an unwritten event,
and publishing resumes by itself once delivered events have freed space (issue #2).

The data dir is a small tmpfs. Events go to a topic Kafka does not have yet, so they stay in
the log until the disk fills; creating the topic afterwards lets them through.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from testkit.delivery import Delivery
from testkit.ferry_process import FerryProcess
from testkit.kafka_admin import create_topic, unique_topic
from testkit.kafka_read import read_topic
from testkit.publishing import FAST_RETRY, event, publish
from testkit.wal_files import integrity_check, last_sequence
from tests.conftest import KafkaHandle

DISK = "32m"  # Ferry holds back a quarter of it (--disk-reserve-bytes) to recover with
PAYLOAD = 16 * 1024
REFUSALS = 30  # keep publishing this many times after the first refusal


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root/CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_refuses_and_loses_nothing(
    kafka: KafkaHandle, small_disk: Path, tmp_path: Path
) -> None:
    topic = unique_topic("diskfull")
    data_dir = small_disk / "wal"
    ferry = FerryProcess(data_dir, kafka.bootstrap, *FAST_RETRY)
    ferry.log_path = tmp_path / "ferry.log"  # not on the full disk
    ok: dict[str, pb.Event] = {}
    refused: dict[str, int] = {}
    try:
        ferry.start()
        stub = ferry.publisher()
        i = 0
        while sum(refused.values()) < REFUSALS:
            assert i < 5_000, "the disk never filled up"
            if i % 4 == 3:  # some batches too
                events = [
                    event(topic, f"d-{i:05d}-{j}", payload=os.urandom(PAYLOAD)) for j in range(3)
                ]
                call = lambda e=events: [  # noqa: E731
                    entry.result
                    for entry in stub.PublishBatch(
                        pb.PublishBatchRequest(events=e), timeout=10
                    ).entries
                ]
            else:
                events = [event(topic, f"d-{i:05d}", payload=os.urandom(PAYLOAD))]
                call = lambda e=events: [publish(stub, e[0]).result]  # noqa: E731
            i += 1
            try:
                results = call()
            except grpc.RpcError as exc:
                name = f"{exc.code().name}: {exc.details()}"
                refused[name] = refused.get(name, 0) + 1
                continue
            assert [r.event_id for r in results] == [e.event_id for e in events]
            ok.update((e.event_id, e) for e in events)

        codes = {name.split(":")[0] for name in refused}
        assert codes <= {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}, refused
        assert ok, "not a single event fitted on the disk"
        assert ferry.proc is not None
        assert ferry.proc.poll() is None, "Ferry died on a full disk"
        assert last_sequence(data_dir) == len(ok), "a refused event was written"
        assert integrity_check(data_dir) == "ok"
        print(f"\ndisk full after {len(ok)} events; refusals {refused}")

        create_topic(kafka.bootstrap, topic, partitions=1)
        delivery = Delivery(read_topic(kafka.bootstrap, topic, expect=len(ok), quiet=2))
        delivery.assert_contents(ok)
        assert set(delivery.by_id) == set(ok), "Kafka holds an event that was refused"

        # Once Kafka has everything, the log shrinks (the reserve made room for retiring) and
        # publishing resumes by itself.
        deadline = time.monotonic() + 30
        while ferry.pending_rows() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ferry.pending_rows() == 0, f"delivered events stuck in the log:\n{ferry.log_tail()}"
        after = event(topic, "d-after-recovery", payload=b"x")
        deadline = time.monotonic() + 30
        while not publish_ok(stub, after) and time.monotonic() < deadline:
            time.sleep(0.5)
        state = (
            f"{[(f.name, f.stat().st_size) for f in data_dir.iterdir()]}, "
            f"{os.statvfs(data_dir).f_bavail * os.statvfs(data_dir).f_frsize} bytes free"
        )
        assert publish_ok(stub, after), (
            f"publishing did not resume after the log drained ({state}):\n{ferry.log_tail()}"
        )
        assert ferry.proc.poll() is None
        assert ferry.terminate() == 0
        assert integrity_check(data_dir) == "ok"
        final = read_topic(kafka.bootstrap, topic, expect=len(ok) + 1, quiet=2)
        assert "d-after-recovery" in {r.event_id for r in final}
    finally:
        ferry.kill()


def publish_ok(stub: object, ev: pb.Event) -> bool:
    """True once a publish is accepted; only RESOURCE_EXHAUSTED may refuse it meanwhile."""
    try:
        publish(stub, ev)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False
    return True
