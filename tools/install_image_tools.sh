#!/usr/bin/env bash
# Installs what building and running the container image needs, from Debian's packages:
# buildah (builds the Dockerfile and runs the image, no daemon), debootstrap (the stand-in
# base image). Idempotent: does nothing when both are there.
set -euo pipefail
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install_image_tools: ${missing[*]} missing, and installing them needs root" >&2
  exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
