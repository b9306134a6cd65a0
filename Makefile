# Ferry: every target sets up what it needs on a fresh machine.
SHELL := bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE := $(or $(FERRY_CACHE_DIR),$(CURDIR)/.cache)
STAMP := $(VENV)/.installed
API_BASELINE := proto/ferry-v1.binpb
export PATH := $(CACHE)/bin:$(PATH)

.PHONY: setup run test test-unit test-integration check fmt proto proto-check kafka-jars go-tools \
        kafka-start kafka-stop chaos bench bench-quick clean api-docs proto-baseline

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

kafka-jars: $(STAMP)
	$(BIN)/python -m testkit.kafka_local fetch

go-tools:
	tools/install_go_tools.sh grpcurl buf toxiproxy-server toxiproxy-cli protoc-gen-doc helm promtool

setup: $(STAMP) kafka-jars go-tools

## make run: a local Kafka on 127.0.0.1:9092 (data/kafka) and Ferry on 127.0.0.1:50051 (data/wal)
run: setup
	$(BIN)/python -m testkit.kafka_local start --dir data/kafka --port 9092 --auto-create-topics
	$(BIN)/ferry serve --kafka-bootstrap 127.0.0.1:9092 --data-dir data/wal

kafka-stop: $(STAMP)
	$(BIN)/python -m testkit.kafka_local stop --dir data/kafka

## make test: static checks, the container image, the chart's security scan, every test (the
## image's and the chart's included) against one real Kafka (with the short fault suite), then the
## quick benchmark subset so that the harness keeps working (no thresholds)
test: setup check clients image chart-scan
	FERRY_IMAGE=$(IMAGE) STORAGE_DRIVER=$(BUILDAH_STORAGE_DRIVER) $(BIN)/pytest tests
	$(MAKE) bench-quick

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

test-integration: setup
	$(BIN)/pytest tests/integration

check: $(STAMP) go-tools
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python tools/gen_proto.py --check
	buf lint
	buf breaking proto --against $(API_BASELINE)
	tmp=$$(mktemp -d) && buf generate proto --template proto/buf.gen.doc.yaml -o $$tmp && \
	  { diff -u docs/api.md $$tmp/docs/api.md || { echo "docs/api.md is stale: run make api-docs"; exit 1; }; }
	$(BIN)/python tools/check_wheel.py
	$(BIN)/hadolint Dockerfile
	$(MAKE) chart-lint

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

proto: $(STAMP)
	$(BIN)/python tools/gen_proto.py

## make api-docs: docs/api.md from the proto comments
api-docs: go-tools
	buf generate proto --template proto/buf.gen.doc.yaml

## make proto-baseline: freeze the current API as the baseline `buf breaking` checks against.
## Only on purpose: a wire- or source-breaking change to ferry.v1 must not pass CI.
proto-baseline: go-tools
	buf build proto -o $(API_BASELINE)

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache

include clients/clients.mk
include image.mk
include helm/chart.mk
include bench/bench.mk
include chaos/chaos.mk
