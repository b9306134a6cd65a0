# Included from the Makefile. `make chaos`: every fault scenario of chaos/, long runs
# (python -m chaos --full: 200 kills, 30 min soak, ...), then docs/reliability.md is rewritten.
# Bound a run with e.g. `make chaos CHAOS_ARGS="--soak-minutes 5 --budget-minutes 40"`;
# run a subset with CHAOS_ARGS="--only kill9 network". The short CI sizes run in tests/faults.
CHAOS_ARGS ?=

chaos: setup
	tools/install_go_tools.sh toxiproxy-server toxiproxy-cli
	$(BIN)/python -m chaos --full $(CHAOS_ARGS)
