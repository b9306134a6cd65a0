#!/usr/bin/env bash
# Builds the stand-in for the official python:3.11-slim base image from Debian's packages, for
# machines that cannot pull base images: debootstrap (minbase, python3 and python3-venv, from
# the mirror this machine's apt uses) into a root filesystem, kept as a tarball under the cache
# so that later runs skip debootstrap, and imported into buildah's storage as a local image.
# Does nothing when the image is already there.
# Usage: tools/build_base_image.sh IMAGE   (e.g. localhost/ferry-base:bookworm-python3)
set -euo pipefail
image=${1:?usage: build_base_image.sh IMAGE}
root=$(cd "$(dirname "$0")/.." && pwd)
cache="${FERRY_CACHE_DIR:-$root/.cache}/image"
suite=bookworm
packages=python3,python3-venv
tarball="$cache/debian-$suite-minbase-${packages//,/-}.tar"

if buildah inspect --type image "$image" >/dev/null 2>&1; then
  exit 0
fi
mkdir -p "$cache"

# Unmounts whatever debootstrap left mounted below $1 (it mounts /proc and /sys in the
# target while installing), then removes $1 without crossing into another file system.
remove_rootfs() {
  local dir=$1 target
  [ -d "$dir" ] || return 0
  for target in $(findmnt -rno TARGET | grep -F "$dir/" | sort -r || true); do
    umount -l "$target" || true
  done
  rm -rf --one-file-system "$dir"
}

if [ ! -f "$tarball" ]; then
  mirror=$(python3 "$root/tools/apt_mirror.py")
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'remove_rootfs "$rootfs"' EXIT
  echo "debootstrap $suite ($packages) from $mirror"
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
    > "$cache/debootstrap.log" 2>&1 || { tail -30 "$cache/debootstrap.log" >&2; exit 1; }
  # What an image has no use for: apt's lists and downloads, docs, man pages, locales.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/*
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  remove_rootfs "$rootfs"
  trap - EXIT
fi

echo "importing $tarball as $image"
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$(buildah mount "$ctr")
tar --numeric-owner -C "$mnt" -xf "$tarball"
buildah umount "$ctr" >/dev/null
buildah config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 \
  --cmd python3 \
  --label org.opencontainers.image.description="Debian $suite minbase with $packages" \
  "$ctr"
buildah commit --quiet --rm "$ctr" "$image" >/dev/null
trap - EXIT
