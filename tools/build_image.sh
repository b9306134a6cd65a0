#!/usr/bin/env bash
# Builds Ferry's image from the Dockerfile with buildah (no daemon), on top of BASE_IMAGE.
# The build machine's pip settings (index URLs, CA bundle: from PIP_* variables or pip's own
# config) reach pip inside the build as build secrets, so they never land in a layer or in
# the repository. A stamp keyed on every input (the base image, the Dockerfile, the build
# context, the build arguments) skips the build when the image was built from the same inputs
# and is still in buildah's storage; otherwise buildah's layer cache redoes only what changed.
# Usage: tools/build_image.sh IMAGE BASE_IMAGE
set -euo pipefail
image=${1:?usage: build_image.sh IMAGE BASE_IMAGE}
base=${2:?usage: build_image.sh IMAGE BASE_IMAGE}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
stamp="build/image/$(echo "$image" | tr '/:' '__').stamp"

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
created=$(git log -1 --format=%cI 2>/dev/null || echo unknown)
# The labels that name this build also go in as --label: buildah's layer cache does not see
# a changed build argument in a LABEL instruction, and would keep the previous revision's.
build_args=(
  --build-arg "BASE_IMAGE=$base"
  --build-arg "VERSION=$version"
  --build-arg "REVISION=$revision"
  --build-arg "CREATED=$created"
  --label "org.opencontainers.image.version=$version"
  --label "org.opencontainers.image.revision=$revision"
  --label "org.opencontainers.image.created=$created"
)

# What the Dockerfile copies (.dockerignore keeps the rest of the tree out).
context_files() {
  { ls pyproject.toml constraints.txt README.md; find sidecar -type f; } \
    | grep -v -e '__pycache__' -e '\.pyc$' | LC_ALL=C sort
}
base_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$base" 2>/dev/null || echo none)
key=$({
  echo "$base $base_id ${build_args[*]}"
  context_files | xargs sha256sum
  sha256sum Dockerfile .dockerignore
} | sha256sum | cut -d' ' -f1)
image_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null || echo none)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key $image_id" ]; then
  echo "$image is up to date ($image_id)"
  exit 0
fi

pip_setting() {  # $1: environment variable, $2: pip config key
  local value=${!1:-}
  [ -n "$value" ] || value=$(python3 -m pip config get "$2" 2>/dev/null || true)
  echo "$value"
}
secrets=$(mktemp -d)
trap 'rm -rf "$secrets"' EXIT
{
  echo "[global]"
  index=$(pip_setting PIP_INDEX_URL global.index-url)
  extra=$(pip_setting PIP_EXTRA_INDEX_URL global.extra-index-url)
  trusted=$(pip_setting PIP_TRUSTED_HOST global.trusted-host)
  [ -z "$index" ] || echo "index-url = $index"
  [ -z "$extra" ] || echo "extra-index-url = $extra"
  [ -z "$trusted" ] || echo "trusted-host = $trusted"
  cert=$(pip_setting PIP_CERT global.cert)
  if [ -n "$cert" ]; then
    cp "$cert" "$secrets/pip-cert"
    echo "cert = /run/secrets/pip-cert"
  fi
  echo "timeout = $(pip_setting PIP_DEFAULT_TIMEOUT global.timeout | grep . || echo 60)"
} > "$secrets/pip.conf"
touch "$secrets/pip-cert"

buildah bud --isolation chroot --layers \
  "${build_args[@]}" \
  --secret "id=pip.conf,src=$secrets/pip.conf" \
  --secret "id=pip-cert,src=$secrets/pip-cert" \
  --tag "$image" .
mkdir -p "$(dirname "$stamp")"
echo "$key $(buildah inspect --type image --format '{{.FromImageID}}' "$image")" > "$stamp"
buildah images "$image"
