# Included from the Makefile: the clients in clients/<lang>, each driven by its own ci.sh
# (setup, gen, check, test, run-publisher, run-subscriber). The tests against a real Ferry and
# Kafka run from pytest (tests/clients), which owns the Ferry process.
CLIENTS := $(patsubst %/ci.sh,%,$(wildcard clients/*/ci.sh))

.PHONY: clients clients-setup clients-gen clients-check

## make clients: set every client up and check its generated code against proto/
clients: clients-check

clients-setup:
	@for client in $(CLIENTS); do \
	  start=$$(date +%s); $$client/ci.sh setup || exit 1; \
	  echo "$$client: setup $$(( $$(date +%s) - start )) s"; \
	done

## make clients-gen: regenerate every client's stubs from proto/
clients-gen:
	@for client in $(CLIENTS); do $$client/ci.sh gen || exit 1; done

clients-check: clients-setup
	@for client in $(CLIENTS); do \
	  start=$$(date +%s); $$client/ci.sh check || exit 1; \
	  echo "$$client: check $$(( $$(date +%s) - start )) s"; \
	done
