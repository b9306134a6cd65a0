"""The README's grpcurl cookbook, run as it stands against a real Ferry: the docs cannot rot.

Every ```bash block from "## grpcurl cookbook" up to the next section after "Subscribing with
grpcurl" runs, in order, in one bash shell; only the two lines that name the address and the
topic are pointed at this test's Ferry and topic.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from testkit.ferry_process import running_ferry
from testkit.paths import ROOT, cached_binary
from tests.conftest import KafkaHandle

BLOCK = re.compile(r"^```bash\n(.*?)^```$", re.M | re.S)


def cookbook() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## grpcurl cookbook")
    end = readme.index("\n## ", readme.index("## Subscribing with grpcurl") + 1)
    return "\n".join(m.group(1) for m in BLOCK.finditer(readme[start:end]))


def point_at(script: str, line: str, value: str) -> str:
    name = line.split("=", 1)[0]
    assert script.count(f"\n{line}\n") == 1, f"the cookbook must set {line} once"
    return script.replace(f"\n{line}\n", f"\n{name}={value}\n")


def test_the_grpcurl_cookbook_runs_as_written(
    kafka: KafkaHandle, data_dir: Path, tmp_path: Path
) -> None:
    topic = kafka.topic("cookbook", partitions=1)
    script = cookbook()
    assert script.count("grpcurl ") >= 10, "the cookbook lost its commands"
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        script = point_at(script, "FERRY=127.0.0.1:50051", ferry.address)
        script = point_at(script, "TOPIC=demo", topic)
        env = {**os.environ, "PATH": f"{cached_binary('grpcurl').parent}:{os.environ['PATH']}"}
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    out = result.stdout
    assert result.returncode == 0, f"{result.stderr[-3000:]}\n{out[-3000:]}"
    assert "ferry.v1.Publisher" in out
    assert "rpc PublishBatch" in out
    assert out.count('"status": "SERVING"') >= 1  # ferry.kafka may not know Kafka yet
    assert out.count('"duplicate": true') == 1, "the second publish of order-42 is a duplicate"
    assert '"request_id": "2"' in out, "PublishStream answers each request with its id"
    assert out.count('"reason": "FIELD_INVALID"') >= 1, "PublishStream's bad request 3"
    # (the duplicate answers with one too, when its original was delivered already)
    assert out.count('"kafka_position"') >= 2, "the batch answers with Kafka positions"
    assert out.count('"status": "ACK_ID_STATUS_APPLIED"') == 3, out
    deliveries = (tmp_path / "deliveries.json").read_text()
    assert deliveries.count('"ack_id"') >= 3
