"""Generate the gRPC stubs for ../../proto/ferry/v1 into src/ferry_client/_gen.

`python tools/gen_proto.py` rewrites the files in place; `--check` generates into a
temporary folder and fails when the committed files differ. Imports are rewritten from
`ferry.v1` to `ferry_client._gen.ferry.v1` so the generated modules live inside the
package. The retry service config is copied beside them so an installed package has it.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent.parent
PROTO_ROOT = (HERE / ".." / ".." / "proto").resolve()
OUT = HERE / "src" / "ferry_client" / "_gen"
SERVICE_CONFIG = PROTO_ROOT / "ferry" / "v1" / "grpc_service_config.json"
IMPORT_RE = re.compile(rb"^from ferry\.v1 import", re.MULTILINE)


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = str(resources.files("grpc_tools") / "_proto")
    # protoc finds the mypy plugins on PATH; they sit beside this interpreter.
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in sorted(out.rglob("*.py*")):
        code = path.read_bytes()
        path.write_bytes(IMPORT_RE.sub(b"from ferry_client._gen.ferry.v1 import", code))
    for pkg in (out, out / "ferry", out / "ferry" / "v1"):
        (pkg / "__init__.py").write_text('"""Generated from proto/; do not edit."""\n')
    shutil.copyfile(SERVICE_CONFIG, out / "grpc_service_config.json")


def differences(a: Path, b: Path) -> list[str]:
    found: list[str] = []

    def walk(c: filecmp.dircmp[str], prefix: str) -> None:
        found.extend(prefix + n for n in c.left_only + c.right_only)
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        found.extend(prefix + n for n in mismatch + errors)
        for name, sub in c.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(a, b, ignore=["__pycache__"]), "")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if _gen is stale")
    if not parser.parse_args().check:
        shutil.rmtree(OUT, ignore_errors=True)
        generate(OUT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_gen"
        generate(fresh)
        diff = differences(fresh, OUT)
    if diff:
        print("generated code is stale; run `./ci.sh gen`:", *diff, sep="\n  ", file=sys.stderr)
        return 1
    print("generated code is up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
