"""Every client in clients/<lang> against a real Ferry and Kafka.

Each language's own test suite runs through its `ci.sh test` against a Ferry this suite starts
(FERRY_ADDR, KAFKA_BOOTSTRAP); then its example publisher (with unary calls, and again over a
PublishStream) and subscriber run while this suite stops Ferry with SIGTERM and starts it again
on the same address: both must finish without an error, and Kafka must hold every event, in
per-key order.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.delivery import Delivery
from testkit.ferry_process import FerryProcess, running_ferry
from testkit.kafka_env import KafkaEnv
from testkit.kafka_read import read_topic
from testkit.paths import ROOT
from testkit.subscribe_calls import unique_subscription
from testkit.wal_files import last_sequence
from testkit.waiting import wait_until
from tests.conftest import KafkaHandle

CLIENTS = sorted(p.parent.name for p in (ROOT / "clients").glob("*/ci.sh"))
SUITE_TIMEOUT_S = 900
EVENTS = 2_000
KEYS = 8
DOWN_FOR_S = 3.0


def ci(lang: str, command: str, env: dict[str, str], **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [str(ROOT / "clients" / lang / "ci.sh"), command],
        env={**os.environ, **env},
        text=True,
        **popen,
    )


@pytest.fixture(scope="module")
def client_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaEnv]:
    """The clients' suites publish to topics they name themselves, as applications do where
    Kafka creates topics on first use; the session's broker does not (the missing-topic tests
    need that), so they get a broker of their own that does."""
    env = KafkaEnv.from_environment(
        tmp_path_factory.mktemp("client-kafka"), config={"auto.create.topics.enable": "true"}
    )
    yield env
    env.close()


@pytest.fixture(scope="module")
def ferry(
    client_kafka: KafkaEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FerryProcess]:
    data_dir = tmp_path_factory.mktemp("clients") / "wal"
    with running_ferry(data_dir, client_kafka.bootstrap, "--subscription-linger-s", "1") as process:
        yield process


@pytest.mark.parametrize("lang", CLIENTS)
def test_the_clients_own_suite_passes(
    lang: str, ferry: FerryProcess, client_kafka: KafkaEnv
) -> None:
    env = {"FERRY_ADDR": ferry.address, "KAFKA_BOOTSTRAP": client_kafka.bootstrap}
    proc = ci(lang, "test", env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=SUITE_TIMEOUT_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"clients/{lang}: ci.sh test failed:\n{out[-6000:]}"


@pytest.mark.parametrize("mode", ["unary", "stream"])
@pytest.mark.parametrize("lang", CLIENTS)
def test_the_examples_ride_out_a_ferry_restart(
    lang: str, mode: str, kafka: KafkaHandle, tmp_path: Path
) -> None:
    run = f"{lang}-{mode}-restart"
    topic = kafka.topic(run, partitions=3)
    ferry = FerryProcess(tmp_path / "wal", kafka.bootstrap).start()
    env = {
        "FERRY_ADDR": ferry.address,
        "TOPIC": topic,
        "COUNT": str(EVENTS),
        "ID_PREFIX": run,
        "PUBLISH_MODE": mode,
        "SUBSCRIPTION": unique_subscription(run),
        "EXPECT": str(EVENTS),
        "TIMEOUT_S": "240",
    }
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("publisher", "subscriber")}  # noqa: SIM115
    try:
        publisher = ci(lang, "run-publisher", env, stdout=subprocess.PIPE, stderr=logs["publisher"])
        subscriber = ci(
            lang, "run-subscriber", env, stdout=subprocess.PIPE, stderr=logs["subscriber"]
        )
        # Restart once a tenth of the events are in, so both examples see Ferry go away.
        assert wait_until(lambda: last_sequence(ferry.data_dir) >= EVENTS // 10, 120), (
            f"the {lang} publisher made no progress:\n{ferry.log_tail()}"
        )
        assert ferry.terminate() == 0
        stopped = time.monotonic()
        time.sleep(DOWN_FOR_S)
        ferry.start()
        restarted_after = time.monotonic() - stopped
        outputs = {}
        for name, proc in (("publisher", publisher), ("subscriber", subscriber)):
            out, _ = proc.communicate(timeout=300)
            log = (tmp_path / f"{name}.log").read_text(errors="replace")[-4000:]
            assert proc.returncode == 0, f"{lang} {name} exited {proc.returncode}:\n{log}"
            outputs[name] = [json.loads(line) for line in out.splitlines() if line.strip()]
        ferry.wait_drained(60)
    finally:
        for proc in (publisher, subscriber):
            proc.kill()
        for log_file in logs.values():
            log_file.close()
        ferry.kill()
    assert outputs == {"publisher": [{"published": EVENTS}], "subscriber": [{"received": EVENTS}]}
    ids = [f"{run}-{i}" for i in range(EVENTS)]
    delivery = Delivery(read_topic(kafka.bootstrap, topic, expect=EVENTS, quiet=1.5))
    assert delivery.missing(ids) == [], "events acknowledged to the publisher are missing"
    per_key = {f"k{k}".encode(): ids[k::KEYS] for k in range(KEYS)}
    assert delivery.order_violations(per_key) == []
    print(
        f"\n[{lang}, {mode}] {EVENTS} published and received across a restart "
        f"(Ferry away {restarted_after:.1f}s), {delivery.duplicates} duplicates in Kafka"
    )
