#!/usr/bin/env bash
# The Go client's build, code generation, checks, tests and examples.
# Usage: ./ci.sh setup | gen | check | test | run-publisher | run-subscriber
#   setup           download modules, install the pinned generators, build everything
#   gen             regenerate ferryv1/ (and the embedded service config) in place
#   check           regenerate into a temp dir and fail on any diff; gofmt; go vet
#   test            go test ./... (the end-to-end test needs FERRY_ADDR and KAFKA_BOOTSTRAP)
#   run-publisher   examples/publisher (env FERRY_ADDR TOPIC COUNT ID_PREFIX)
#   run-subscriber  examples/subscriber (env FERRY_ADDR TOPIC SUBSCRIPTION EXPECT TIMEOUT_S)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache="${FERRY_CACHE_DIR:-$root/.cache}"
bin="$cache/bin"
cd "$here"

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi

# Generator versions. protoc-gen-go is the protobuf module's own command, so it is taken at the
# version go.mod pins for the runtime: generated code and runtime always match.
BUF_MODULE="github.com/bufbuild/buf/cmd/buf@v1.75.0"
PROTOC_GEN_GO_GRPC_MODULE="google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2"
protoc_gen_go_module() {
  echo "google.golang.org/protobuf/cmd/protoc-gen-go@$(go list -m -f '{{.Version}}' google.golang.org/protobuf)"
}

# install_tool NAME MODULE@VERSION: `go install` into $bin once per version (the stamp file
# follows the repo's tools/install_go_tools.sh, so both see the same buf).
install_tool() {
  local tool=$1 module=$2
  local stamp="$bin/.$tool.$(echo "$module" | tr '/@' '__')"
  if [ -x "$bin/$tool" ] && [ -f "$stamp" ]; then return; fi
  mkdir -p "$bin"
  echo "installing $tool ($module)" >&2
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && GOBIN="$tmp/out" GOFLAGS=-mod=mod go install "$module")
  mv "$tmp/out/$tool" "$bin/$tool"
  rm -rf "$tmp"
  touch "$stamp"
}

tools() {
  install_tool buf "$BUF_MODULE"
  install_tool protoc-gen-go "$(protoc_gen_go_module)"
  install_tool protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_MODULE"
}

# generate DIR: the generated files, laid out as in this module, under DIR.
generate() {
  local out=$1
  PATH="$bin:$PATH" buf generate --template buf.gen.yaml -o "$out"
  mkdir -p "$out/ferry"
  cp "$root/proto/ferry/v1/grpc_service_config.json" "$out/ferry/grpc_service_config.json"
}

build_examples() {
  go build -o "$here/bin/" ./examples/publisher ./examples/subscriber >&2
}

cmd=${1:-}
case "$cmd" in
  setup)
    start=$(date +%s%N)
    go mod download
    tools
    go build ./...
    go vet ./... # also compiles the tests, so that `test` only links
    build_examples
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    printf 'setup took %d.%01d s\n' $((ms / 1000)) $((ms % 1000 / 100)) >&2
    ;;
  gen)
    tools
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    generate "$tmp"
    rm -rf ferryv1
    mv "$tmp/ferryv1" ferryv1
    cp "$tmp/ferry/grpc_service_config.json" ferry/grpc_service_config.json
    ;;
  check)
    tools
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    generate "$tmp"
    diff -r "$tmp/ferryv1" ferryv1
    diff "$tmp/ferry/grpc_service_config.json" ferry/grpc_service_config.json
    unformatted=$(gofmt -l .)
    if [ -n "$unformatted" ]; then
      echo "not gofmt-formatted:" >&2
      echo "$unformatted" >&2
      exit 1
    fi
    go vet ./...
    echo "generated code and formatting are up to date" >&2
    ;;
  test)
    if [ -z "${FERRY_ADDR:-}" ] || [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
      echo "FERRY_ADDR and KAFKA_BOOTSTRAP are not both set: the end-to-end test will skip" >&2
    fi
    go test -count=1 ./...
    ;;
  run-publisher)
    build_examples
    exec "$here/bin/publisher"
    ;;
  run-subscriber)
    build_examples
    exec "$here/bin/subscriber"
    ;;
  *)
    echo "usage: $0 setup|gen|check|test|run-publisher|run-subscriber" >&2
    exit 2
    ;;
esac
