#!/usr/bin/env bash
# Build, generate, check and test the TypeScript Ferry client; run its examples.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROTO_DIR="$(cd "$HERE/../../proto" && pwd)"
cd "$HERE"

# The proto files compiled into src/gen: Ferry's API and the google.rpc error details.
PROTOS=(
  ferry/v1/record.proto
  ferry/v1/publisher.proto
  ferry/v1/subscriber.proto
  ferry/v1/admin.proto
  google/rpc/status.proto
  google/rpc/error_details.proto
)
# ts-proto options: grpc-js client/service definitions, Node Buffers for bytes,
# optional message fields, type-safe oneof unions, ESM import paths.
TS_PROTO_OPTS="outputServices=grpc-js,esModuleInterop=true,env=node,useOptionals=messages,oneof=unions-value,importSuffix=.js"

log() { echo "ci.sh: $*" >&2; }

lock_sum() { sha256sum package-lock.json | cut -d' ' -f1; }

setup() {
  local start=$SECONDS stamp=node_modules/.ferry-lock-sha256
  # npm ci wipes node_modules, so it runs only when the lock file changed.
  if [[ ! -f $stamp || "$(cat "$stamp")" != "$(lock_sum)" ]]; then
    npm ci --prefer-offline --no-audit --no-fund --ignore-scripts >&2
    lock_sum >"$stamp"
  fi
  npx --no-install tsc -p . >&2
  echo "ci.sh setup: $((SECONDS - start)) s" >&2
}

# Regenerates the stubs into $1 with the pinned protoc and ts-proto from node_modules.
gen_into() {
  local out=$1
  mkdir -p "$out"
  node_modules/.bin/protoc \
    -I "$PROTO_DIR" \
    -I node_modules/protoc/include \
    -I node_modules/google-proto-files \
    --plugin=protoc-gen-ts_proto=node_modules/.bin/protoc-gen-ts_proto \
    --ts_proto_out="$out" \
    --ts_proto_opt="$TS_PROTO_OPTS" \
    "${PROTOS[@]}"
}

ensure_deps() {
  [[ -x node_modules/.bin/protoc && -x node_modules/.bin/tsc ]] || setup
}

gen() {
  ensure_deps
  rm -rf src/gen
  gen_into src/gen
  log "regenerated src/gen"
}

check() {
  ensure_deps
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  gen_into "$tmp"
  if ! diff -r "$tmp" src/gen >&2; then
    log "src/gen differs from the proto files: run ./ci.sh gen and commit"
    return 1
  fi
  # No incremental state: a --noEmit run would record the sources as built, and ensure_built
  # would then run examples from a stale dist/.
  npx --no-install tsc -p . --noEmit --incremental false >&2
  log "generated code up to date, types check"
}

# Rebuilds only when a source is newer than the last build (examples must start fast).
ensure_built() {
  if [[ ! -f dist/.tsbuildinfo ]] || [[ -n "$(find src examples test package-lock.json tsconfig.json -newer dist/.tsbuildinfo -print -quit)" ]]; then
    setup
  fi
}

case "${1:-}" in
  setup) setup ;;
  gen) gen ;;
  check) check ;;
  test)
    ensure_built
    if [[ -z "${FERRY_ADDR:-}" || -z "${KAFKA_BOOTSTRAP:-}" ]]; then
      log "FERRY_ADDR or KAFKA_BOOTSTRAP unset: the end-to-end test will be skipped"
    fi
    npm test
    ;;
  run-publisher)
    ensure_built
    exec node dist/examples/publisher.js
    ;;
  run-subscriber)
    ensure_built
    exec node dist/examples/subscriber.js
    ;;
  *)
    echo "usage: $0 {setup|gen|check|test|run-publisher|run-subscriber}" >&2
    exit 2
    ;;
esac
