#!/usr/bin/env bash
# Builds a Debian bookworm base image without a container registry:
# debootstrap a minimal root filesystem from Debian's package mirror and
# `docker import` it. The sandbox Dockerfiles take it through `--build-arg BASE=`.
#
# Usage: scripts/offline-base.sh [TAG]   (default tag: autodev/base:bookworm)
# Env:   MIRROR (default http://deb.debian.org/debian), FORCE=1 to rebuild.
set -euo pipefail

tag="${1:-autodev/base:bookworm}"
mirror="${MIRROR:-http://deb.debian.org/debian}"

if [ -z "${FORCE:-}" ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "offline-base: $tag already present (FORCE=1 to rebuild)"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "offline-base: installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

root="$(mktemp -d /tmp/autodev-rootfs.XXXXXX)"
trap 'rm -rf "$root"' EXIT

# python3 (not python3-minimal): tests need the full standard library.
# The sandbox images install nothing else, so an offline build succeeds.
echo "offline-base: debootstrap bookworm into $root"
debootstrap --variant=minbase \
  --include=python3,python3-pytest,python3-venv,ca-certificates \
  bookworm "$root" "$mirror" >/tmp/autodev-debootstrap.log 2>&1 || {
  tail -n 30 /tmp/autodev-debootstrap.log >&2
  echo "offline-base: debootstrap failed (full log: /tmp/autodev-debootstrap.log)" >&2
  exit 1
}

# Keep the image small: package caches and lists are not needed at run time.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

echo "offline-base: importing as $tag"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  - "$tag" >/dev/null
echo "offline-base: done: $tag"
