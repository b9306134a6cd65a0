#!/usr/bin/env bash
# The Java client's build, checks, tests and examples; see README.md.
#   setup           fetch dependencies, generate the stubs, build the jar and the examples
#   gen             regenerate the stubs (protobuf-maven-plugin generates them at build time)
#   check           a clean build: generate, compile main and test code
#   test            run the tests (needs FERRY_ADDR and KAFKA_BOOTSTRAP)
#   run-publisher   the example publisher (env FERRY_ADDR TOPIC COUNT ID_PREFIX [PUBLISH_MODE=stream])
#   run-subscriber  the example subscriber (env FERRY_ADDR TOPIC SUBSCRIPTION EXPECT TIMEOUT_S)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
PROTO_DIR="$HERE/../../proto"
STAMP=target/.setup-stamp
# Written once `mvn test` has run online: every plugin and test dependency is then local.
OFFLINE_OK=target/.offline-ok

log() { echo "ci.sh: $*" >&2; }

# Quiet Maven on stderr, without the bare colour resets Maven 3.8 prints even in batch mode.
mvn_quiet() { mvn -B -q "$@" 2>&1 | sed 's/\x1b\[0m//g' >&2; }

# Anything the build reads that changed since the last setup.
stale() {
  [[ -f $STAMP && -f target/runtime-classpath.txt ]] || return 0
  [[ -n "$(find pom.xml src examples "$PROTO_DIR" -newer "$STAMP" -print -quit)" ]]
}

build() {
  mvn_quiet -DskipTests "$@" package
  rm -rf target/examples
  javac -d target/examples -cp "target/classes:$(cat target/runtime-classpath.txt)" \
    examples/*.java
  touch "$STAMP"
}

setup() {
  local start=$SECONDS
  if stale; then
    build
    log "setup built the client and examples in $((SECONDS - start)) s"
  else
    log "setup: up to date ($((SECONDS - start)) s)"
  fi
}

run_example() {
  setup >&2 # stdout carries the example's JSON line alone
  # A short-lived client: C1 only and the serial GC start faster than the defaults.
  exec java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -cp "target/examples:target/classes:$(cat target/runtime-classpath.txt)" "$1"
}

cmd="${1:-}"
case "$cmd" in
  setup) setup ;;
  gen)
    start=$SECONDS
    build
    log "gen: stubs generated into target/generated-sources and built in $((SECONDS - start)) s"
    ;;
  check)
    # Stubs are generated at build time, never committed: a clean build is the check.
    start=$SECONDS
    build clean
    log "check: generated and built from scratch in $((SECONDS - start)) s"
    ;;
  test)
    if [[ -z "${FERRY_ADDR:-}" || -z "${KAFKA_BOOTSTRAP:-}" ]]; then
      log "test needs FERRY_ADDR and KAFKA_BOOTSTRAP (plain 'mvn -q test' runs the unit tests alone)"
      exit 2
    fi
    # Not -q: Surefire's summary lines ("Tests run: ...") stay visible.
    if [[ -f $OFFLINE_OK && $OFFLINE_OK -nt pom.xml ]]; then
      mvn -B -ntp -o test
    else
      mvn -B -ntp test
      touch "$OFFLINE_OK"
    fi
    ;;
  run-publisher) run_example RunPublisher ;;
  run-subscriber) run_example RunSubscriber ;;
  *)
    echo "usage: $0 {setup|gen|check|test|run-publisher|run-subscriber}" >&2
    exit 2
    ;;
esac
