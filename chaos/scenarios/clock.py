"""Clock jumps with libfaketime: Ferry's wall clock jumps forward and back by hours.

What libfaketime does to CLOCK_MONOTONIC is measured first (`probe_libfaketime`): by default
it shifts CLOCK_MONOTONIC together with the wall clock, and from inside the process such a
shift is indistinguishable from hours really passing (then every lease *must* expire). A real
clock step (NTP, an operator, a VM resume) moves CLOCK_REALTIME only, so Ferry runs with
``DONT_FAKE_MONOTONIC=1``: only its wall clock jumps. The property is then tested directly:

- after a jump forward by 2 h, leases granted just before are still live (acks APPLIED):
  leases do not all expire at once;
- after a jump back by 3 h, unacked leases still expire after their duration (the records
  come again with delivery_attempt 2 within lease + a few seconds): leases do expire.

The workload runs throughout. Publishing must go on during the jumps; records stamped while
Ferry's clock is more than 1 h ahead are refused by Kafka and wait in the log. After the jumps
Ferry is restarted once with the clock set right (libfaketime can keep a stale offset for
hours, see `clock_jumps`), and the usual checks apply: nothing acked may be missing.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from chaos.harness import Env, Run, ScenarioResult, log, result_for_skip
from chaos.workload import channel
from sidecar._gen.ferry.v1 import subscriber_pb2 as spb
from sidecar._gen.ferry.v1 import subscriber_pb2_grpc
from testkit.subscribe_calls import ack_status

LIBS = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1"]  # fmt: skip
LEASE_S = 4.0
_PROBE = """
import sys, time
m0, w0 = time.monotonic(), time.time()
open(sys.argv[1], "w").write("+2h\\n")
t = time.monotonic() + 0.3
while time.monotonic() < t and time.time() - w0 < 3600:
    pass
print(round(time.monotonic() - m0), round(time.time() - w0))
"""


def find_libfaketime(install: bool = True) -> str | None:
    """The preload library; installed with apt-get when missing (we are root)."""
    found = next((lib for lib in LIBS if Path(lib).exists()), None)
    if found or not install or shutil.which("apt-get") is None:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "libfaketime", "faketime"]
    if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        subprocess.run(cmd, env=env, capture_output=True, check=False)
    return find_libfaketime(install=False)


def faketime_env(lib: str, rc: Path, *, fake_monotonic: bool, cache: bool = True) -> dict[str, str]:
    # With `cache` the offset file is re-read at most once a second (FAKETIME_NO_CACHE reads
    # it on every clock call, which slows Ferry to a crawl).
    # FAKETIME_WAIT_MS: libfaketime turns the absolute deadline of a pthread_cond_timedwait
    # with the offset it knows at the call; when the offset file changes during the wait the
    # deadline lands hours away and the thread sleeps for hours (librdkafka's broker threads
    # did, after the fourth jump of a full run: nothing sent, no error). Capping every such
    # wait keeps the waits short; waking early is always allowed for a condition variable.
    env = {"LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": str(rc), "FAKETIME_WAIT_MS": "50"}
    env.update({"FAKETIME_CACHE_DURATION": "1"} if cache else {"FAKETIME_NO_CACHE": "1"})
    if not fake_monotonic:
        env["DONT_FAKE_MONOTONIC"] = "1"
    return env


def probe_libfaketime(lib: str, work: Path) -> dict[str, object]:
    """How far CLOCK_MONOTONIC moves when libfaketime's offset jumps by 2 h, with and
    without DONT_FAKE_MONOTONIC, and whether time.sleep still works in that mode."""
    out: dict[str, object] = {}
    for fake in (True, False):
        rc = work / f"probe-{fake}.rc"
        rc.write_text("+0\n")
        env = {**os.environ, **faketime_env(lib, rc, fake_monotonic=fake, cache=False)}
        res = subprocess.run([sys.executable, "-c", _PROBE, str(rc)], env=env,
                             capture_output=True, text=True, check=False)  # fmt: skip
        mono, _, wall = res.stdout.strip().partition(" ")
        out["monotonic_faked" if fake else "monotonic_with_DONT_FAKE_MONOTONIC"] = (
            f"monotonic moved {mono}s, wall {wall}s" if res.returncode == 0 else res.stderr[-200:]
        )
        sleep = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.01)"],
                               env=env, capture_output=True, text=True, check=False)  # fmt: skip
        out[f"time.sleep_{'faked' if fake else 'DONT_FAKE_MONOTONIC'}"] = (
            "works" if sleep.returncode == 0 else sleep.stderr.strip().splitlines()[-1]
        )
    return out


class LeaseProbe:
    """A raw Subscribe stream on a subscription of its own, read by a background thread."""

    def __init__(self, address: str, sub: str, topic: str) -> None:
        self.chan = channel(address)
        self.requests: queue.SimpleQueue[spb.SubscribeRequest | None] = queue.SimpleQueue()
        self.responses: queue.SimpleQueue[spb.SubscribeResponse | None] = queue.SimpleQueue()
        self.kept: list[spb.SubscribeResponse] = []
        self.received: dict[int, float] = {}  # id(response) -> monotonic receipt time
        opened = spb.SubscribeRequest(open=spb.OpenSubscription(
            subscription=sub, topics=[topic], max_outstanding_events=20))  # fmt: skip
        opened.open.lease_duration.FromNanoseconds(int(LEASE_S * 1e9))

        def outgoing() -> Iterator[spb.SubscribeRequest]:
            yield opened
            while (item := self.requests.get()) is not None:
                yield item

        self.call = subscriber_pb2_grpc.SubscriberStub(self.chan).Subscribe(outgoing())
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.received[id(response)] = time.monotonic()
                self.responses.put(response)
        except grpc.RpcError:
            pass
        self.responses.put(None)

    def next(self, kind: str, timeout: float) -> spb.SubscribeResponse | None:
        """The next response of `kind`; others are kept for later calls, in order."""
        for i, r in enumerate(self.kept):
            if r.WhichOneof("response") == kind:
                return self.kept.pop(i)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                r = self.responses.get(timeout=left)
            except queue.Empty:
                return None
            if r is None:
                return None
            if r.WhichOneof("response") == kind:
                return r
            self.kept.append(r)
        return None

    def fresh_deliveries(self, timeout: float) -> spb.SubscribeResponse | None:
        """Deliveries leased from now on. What already waits (left from the last round while
        the probe waited for other answers) is acked in one go and skipped: those leases may be
        near their end, and an EXPIRED answer for them would prove nothing. Acking them one by
        one would not do: under load each ack's answer takes long enough to make the next
        waiting delivery old too."""
        since = time.monotonic()
        waiting = [r for r in self.kept if r.WhichOneof("response") == "deliveries"]
        self.kept = [r for r in self.kept if r.WhichOneof("response") != "deliveries"]
        while True:
            try:
                r = self.responses.get_nowait()
            except queue.Empty:
                break
            if r is None:
                return None
            (waiting if r.WhichOneof("response") == "deliveries" else self.kept).append(r)
        if waiting:
            self.ack([d.ack_id for r in waiting for d in r.deliveries.deliveries])
        deadline = since + timeout
        while (left := deadline - time.monotonic()) > 0:
            got = self.next("deliveries", left)
            if got is None or self.received.get(id(got), 0.0) >= since:
                return got
            self.ack([d.ack_id for d in got.deliveries.deliveries])
        return None

    def ack(self, ids: list[str]) -> list[str]:
        self.requests.put(spb.SubscribeRequest(ack=spb.AckIds(ack_ids=ids)))
        r = self.next("ack_results", 10)
        return [ack_status(x.status) for x in r.ack_results.results] if r else ["NO_ANSWER"]

    def close(self) -> None:
        self.call.cancel()
        self.requests.put(None)
        self.chan.close()


def clock_jumps(env: Env) -> ScenarioResult:
    lib = find_libfaketime()
    if lib is None:
        return result_for_skip("clock-jumps", env, "libfaketime is not installed and "
                               "apt-get install libfaketime failed")  # fmt: skip
    base = env.scratch("clock")
    probe = probe_libfaketime(lib, base)
    rc = base / "faketime.rc"
    rc.write_text("+0\n")
    run = Run(env, "clock-jumps", ferry_env=faketime_env(lib, rc, fake_monotonic=False))
    run.start()
    rounds = 4 if env.full else 1
    lease = LeaseProbe(run.ferry.address, f"{run.run_id}-clk", run.topic)
    findings: dict[str, list[object]] = {"forward_acks": [], "backward_expiry_s": []}
    try:
        if lease.next("opened", 30) is None:
            run.problems.append("the lease probe stream did not open")
        for i in range(rounds):
            fault = run.history.fault("wall clock +2h then -3h", f"#{i + 1}")
            got = lease.fresh_deliveries(30)
            if got is None:
                run.problems.append("no deliveries for the lease probe")
                break
            rc.write_text("+2h\n")  # forward: leases granted just now must stay live
            time.sleep(1.5)
            ids = [d.ack_id for d in got.deliveries.deliveries]
            statuses = lease.ack(ids)
            findings["forward_acks"].append(sorted(set(statuses)))
            if set(statuses) != {"APPLIED"}:
                run.problems.append(f"after +2h, live leases answered {sorted(set(statuses))}: "
                                    "they all expired at once")  # fmt: skip
            rc.write_text("-3h\n")  # backward: unacked leases must still expire
            time.sleep(1.5)
            got = lease.next("deliveries", 30)
            if got is None:
                run.problems.append("no deliveries after the backward jump")
                break
            seen = got.deliveries.deliveries[0].lease_deadline.ToNanoseconds() / 1e9
            findings.setdefault("ferry_wall_offset_h", []).append(
                round((seen - LEASE_S - time.time()) / 3600, 1)
            )  # proof that Ferry's wall clock did jump (its lease deadlines are wall times)
            t0 = lease.received.get(id(got), time.monotonic())
            held = {d.event.event_id for d in got.deliveries.deliveries}
            expired_after = None
            while time.monotonic() - t0 < LEASE_S + 12:
                again = lease.next("deliveries", 1.0)
                if again is None:
                    continue
                back = [d for d in again.deliveries.deliveries if d.event.event_id in held]
                if back and all(d.delivery_attempt >= 2 for d in back):
                    expired_after = round(lease.received.get(id(again), 0) - t0, 1)
                    lease.ack([d.ack_id for d in again.deliveries.deliveries])
                    break
                lease.ack([d.ack_id for d in again.deliveries.deliveries if d not in back])
            findings["backward_expiry_s"].append(expired_after)
            if expired_after is None:
                run.problems.append(f"after -3h, leases of {LEASE_S}s never expired")
            elif not LEASE_S - 0.5 <= expired_after <= LEASE_S + 8:
                run.problems.append(f"after -3h, {LEASE_S}s leases expired after "
                                    f"{expired_after}s")  # fmt: skip
            rc.write_text("+0\n")
            # Publishing must go on (DURABLE); Kafka refuses records stamped more than 1 h
            # ahead, so while Ferry's clock may still be off they wait in the log.
            run.heal(fault, kafka=False)
            log(f"clock-jumps #{i + 1}: {findings}")
    finally:
        rc.write_text("+0\n")
        lease.close()
    # libfaketime re-reads the offset file when its cache expires, and it measures that on
    # the faked clock: after a jump back by 3 h the process keeps its last offset for hours
    # (Ferry's clock was seen stuck at +2 h, every record refused by Kafka as too far ahead).
    # A real clock has no such cache. Restart Ferry on the same log so that it reads "+0" at
    # start: everything the jumps held back must then reach Kafka. kill -9, not SIGTERM: the
    # drain's own timed waits can sleep for hours under the stale offset as well.
    run.kill()
    restarted = time.monotonic()
    run.start_ferry()
    back = run.history.fault("restart with the clock set right", "kill -9")
    run.heal(back, kafka=True, at=restarted)
    time.sleep(2)
    result = run.finish()
    result.extra.update({"libfaketime": probe, **findings})
    return result
