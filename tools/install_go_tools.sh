#!/usr/bin/env bash
# Installs the pinned Go tools the project uses (grpcurl, buf, helm, promtool, ...) into .cache/bin
# with `go install`.
# Usage: tools/install_go_tools.sh [tool...]   (default: all)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${FERRY_CACHE_DIR:-$root/.cache}/bin"
mkdir -p "$bin"
declare -A modules=(
  [grpcurl]="github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"
  [buf]="github.com/bufbuild/buf/cmd/buf@v1.75.0"
  [toxiproxy-server]="github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0"
  [toxiproxy-cli]="github.com/Shopify/toxiproxy/v2/cmd/cli@v2.12.0"
  [protoc-gen-doc]="github.com/pseudomuto/protoc-gen-doc/cmd/protoc-gen-doc@v1.5.1"
  [helm]="helm.sh/helm/v4/cmd/helm@v4.3.2"
  # Prometheus 3.x's module versions are v0.3XX (v0.316.0 is 3.16.0).
  [promtool]="github.com/prometheus/prometheus/cmd/promtool@v0.316.0"
)
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(grpcurl buf)
for tool in "${wanted[@]}"; do
  module=${modules[$tool]:?unknown tool $tool}
  stamp="$bin/.$tool.$(echo "$module" | tr '/@' '__')"
  if [ -x "$bin/$tool" ] && [ -f "$stamp" ]; then continue; fi
  echo "installing $tool ($module)"
  tmp=$(mktemp -d)
  GOBIN="$tmp" GOFLAGS=-mod=mod go install "$module"
  mv "$tmp"/* "$bin/$tool"
  rm -rf "$tmp"
  touch "$stamp"
done
