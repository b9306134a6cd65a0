#!/usr/bin/env bash
# Installs checkov (the security scan of the Helm chart and the Dockerfile) into a virtual
# environment of its own under the cache: its dependencies (packaging<24, among others) conflict
# with the project's pinned ones, so it cannot share .venv. Every package is pinned by
# tools/checkov-requirements.txt; a stamp keyed on that file skips a second install.
# Usage: tools/install_checkov.sh   (prints the checkov executable's path)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
requirements="$root/tools/checkov-requirements.txt"
venv="${FERRY_CACHE_DIR:-$root/.cache}/checkov"
stamp="$venv/.installed-$(sha256sum "$requirements" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing checkov into $venv" >&2
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --requirement "$requirements" >&2
  touch "$stamp"
fi
echo "$venv/bin/checkov"
