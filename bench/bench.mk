# Benchmarks (issue #4). Included from the Makefile: `include bench/bench.mk`.
# Extra Python packages: matplotlib (the chart), py-spy (profiles, full mode only); psutil.

## make bench: every scenario, >= 3 repetitions, profiles; rewrites docs/benchmarks.md and .png
##   (15-25 min on 2 cores; a local Kafka is started, or $KAFKA_BOOTSTRAP is used)
bench: setup
	$(BIN)/python -m bench

## make bench-quick: a <= 2 minute subset for CI; writes build/bench-quick/ (docs untouched)
bench-quick: setup
	$(BIN)/python -m bench --quick
