"""Build the wheel and check it holds what `pip install .` users need (generated code, script)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = [
    "sidecar/_gen/ferry/v1/publisher_pb2.py",
    "sidecar/_gen/ferry/v1/publisher_pb2_grpc.py",
    "sidecar/_gen/ferry/v1/subscriber_pb2.py",
    "sidecar/_gen/ferry/v1/subscriber_pb2_grpc.py",
    "sidecar/cli.py",
]


def main() -> int:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                out,
                str(ROOT),
            ],
            check=True,
        )
        [wheel] = Path(out).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            entry_points = next(n for n in names if n.endswith("entry_points.txt"))
            scripts = zf.read(entry_points).decode()
    missing = [n for n in REQUIRED if n not in names]
    if "ferry = sidecar.cli:main" not in scripts:
        missing.append("console script 'ferry'")
    if missing:
        print("wheel is missing:", *missing, sep="\n  ", file=sys.stderr)
        return 1
    print(f"wheel ok: {wheel.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
