#!/usr/bin/env bash
# The Python client's build and test entry point. Subcommands:
#   setup           make .venv (Python 3.11), install the pinned dev lock and the package (editable)
#   gen             regenerate the stubs in src/ferry_client/_gen from ../../proto
#   check           stubs up to date (regenerated in a temp dir and compared), ruff, mypy --strict
#   test            pytest; the end-to-end tests need FERRY_ADDR and KAFKA_BOOTSTRAP (else skipped)
#   run-publisher   examples/publisher.py  (env FERRY_ADDR TOPIC COUNT ID_PREFIX [PUBLISH_MODE])
#   run-subscriber  examples/subscriber.py (env FERRY_ADDR TOPIC SUBSCRIPTION EXPECT TIMEOUT_S)
# Everything but the examples' JSON line goes to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3.11}
VENV=.venv
PY=$VENV/bin/python

setup() {
    local start stamp want
    start=$(date +%s%N)
    stamp=$VENV/.setup-stamp
    # Reinstall only when the pins, the package metadata or this folder's path changed.
    want=$({ cat pyproject.toml requirements-dev.lock; pwd; } | sha256sum | cut -d' ' -f1)
    if [[ ! -x $PY ]]; then
        "$PYTHON" -m venv "$VENV"
    fi
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
        "$PY" -m pip install -q --disable-pip-version-check -r requirements-dev.lock
        # hatchling comes from the lock, so the editable build needs no download.
        "$PY" -m pip install -q --disable-pip-version-check --no-build-isolation \
            -c requirements-dev.lock -e '.[dev]'
        "$PY" -m pip check >&2
        echo "$want" >"$stamp"
    fi
    echo "setup took $((($(date +%s%N) - start) / 1000000)) ms" >&2
}

ensure_setup() {
    setup >&2 # a no-op (a hash compare) once set up
}

cmd=${1:-}
case "$cmd" in
setup)
    setup >&2
    ;;
gen)
    ensure_setup
    "$PY" tools/gen_proto.py >&2
    ;;
check)
    ensure_setup
    "$PY" tools/gen_proto.py --check >&2
    "$VENV/bin/ruff" format --check . >&2
    "$VENV/bin/ruff" check . >&2
    "$VENV/bin/mypy" >&2
    ;;
test)
    ensure_setup
    if [[ -z "${FERRY_ADDR:-}" || -z "${KAFKA_BOOTSTRAP:-}" ]]; then
        echo "FERRY_ADDR or KAFKA_BOOTSTRAP unset: the end-to-end tests will be skipped" >&2
    fi
    exec "$VENV/bin/pytest" "${@:2}"
    ;;
run-publisher)
    ensure_setup
    exec "$PY" examples/publisher.py
    ;;
run-subscriber)
    ensure_setup
    exec "$PY" examples/subscriber.py
    ;;
*)
    sed -n '2,9p' "$0" >&2
    exit 2
    ;;
esac
