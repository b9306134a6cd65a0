# Included from the Makefile: Ferry's Helm chart (helm/ferry). helm is a pinned Go tool
# (tools/install_go_tools.sh); checkov has a venv of its own (tools/install_checkov.sh).
CHART := helm/ferry

.PHONY: chart-lint chart-scan chart-test chart-dashboard chart-schema

## make chart-lint: helm lint, and the generated schema section and dashboard up to date
## (make check runs it)
chart-lint: $(STAMP) go-tools
	helm lint --strict $(CHART)
	$(BIN)/python tools/chart_schema.py --check
	$(BIN)/python tools/chart_dashboard.py --check

## make chart-scan: checkov over the chart rendered with every toggle, and the Dockerfile
chart-scan: go-tools
	tools/chart_scan.sh

## make chart-test: lint, render every toggle, validate against the Kubernetes schemas and check
## the manifests (tests/chart), then the security scan. make test runs all of it (tests/chart
## with the rest of pytest), and the chart's container in the image (tests/image).
chart-test: chart-lint
	$(BIN)/pytest tests/chart
	$(MAKE) chart-scan

## make chart-dashboard: the Grafana dashboard from helm/ferry/files/metrics.yaml
chart-dashboard: $(STAMP)
	$(BIN)/python tools/chart_dashboard.py

## make chart-schema: values.schema.json's config section from Ferry's Settings
chart-schema: $(STAMP)
	$(BIN)/python tools/chart_schema.py
