#!/usr/bin/env bash
# The security scan of the Helm chart and the Dockerfile with checkov (helm/checkov.yaml says
# which checks are skipped and why): the chart is rendered with its defaults and with every
# helm/ferry/ci/*-values.yaml, so that each toggle's objects are scanned; checkov reads them
# offline (nothing is downloaded).
# Usage: tools/chart_scan.sh   (needs helm on PATH: tools/install_go_tools.sh helm)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
checkov=$(tools/install_checkov.sh)
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
helm template ferry helm/ferry --namespace ferry-scan > "$rendered/defaults.yaml"
for values in helm/ferry/ci/*-values.yaml; do
  helm template ferry helm/ferry --namespace ferry-scan --values "$values" \
    > "$rendered/$(basename "$values" .yaml).yaml"
done
export BC_SKIP_MAPPING=TRUE   # no guideline download
"$checkov" --config-file helm/checkov.yaml --framework kubernetes --directory "$rendered"
"$checkov" --config-file helm/checkov.yaml --framework dockerfile --file Dockerfile
