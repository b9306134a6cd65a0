"""The bench's profile summary tells Ferry's threads from those of its forwarder process."""

from __future__ import annotations

from bench.profiling import CHILD, summarize
from testkit.paths import ROOT

FERRY = 'process 10:"python -m sidecar serve --listen 127.0.0.1:50051"'
FORWARDER = 'process 11:"python -m sidecar.forward.child 5"'
COMMIT = f"_commit ({ROOT}/sidecar/wal/writer.py:9)"
WAVE = f"_wave ({ROOT}/sidecar/forward/forwarder.py:7)"
RAW = "\n".join(
    [
        f"{FERRY};thread (10): MainThread;run (asyncio/events.py:80);{COMMIT} 30",
        f"{FERRY};{FORWARDER};thread (11): forwarder;{WAVE} 20",
        f"{FERRY};{FORWARDER};thread (12): MainThread;recv (multiprocessing/connection.py:3) 5",
        f"thread (10): MainThread;{COMMIT} 1",
    ]
)


def test_threads_of_the_forwarder_process_are_named_apart_from_ferrys() -> None:
    summary = summarize(RAW)
    assert summary["samples"] == 56
    threads = {name: n for name, n, _pct in summary["threads"]}
    assert threads == {"MainThread": 31, f"{CHILD}forwarder": 20, f"{CHILD}MainThread": 5}
    assert summary["tids"] == {
        "10": "MainThread",
        "11": f"{CHILD}forwarder",
        "12": f"{CHILD}MainThread",
    }
    inclusive = {name: n for name, n, _pct in summary["ferry_inclusive"]}
    assert inclusive == {
        "_commit (sidecar/wal/writer.py)": 31,
        "_wave (sidecar/forward/forwarder.py)": 20,
    }
