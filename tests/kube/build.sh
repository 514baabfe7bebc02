#!/usr/bin/env bash
# Builds the Kubernetes 1.20.2 control plane and kubelet that the Kubernetes
# tests run against, from Debian's `kubernetes` source package with Debian's
# Go 1.19: no registry has these binaries (see
# ../shared/reviews/scaleout-feasibility-2026-11.md, section 2.2).
#
#   build.sh OUT      binaries land in OUT/bin; a second call with the same
#                     OUT reuses them (CI keeps OUT under target/ when the
#                     machine is kept, but never depends on it).
#
# Nothing outside OUT changes: apt uses a private sources list and state.
set -euo pipefail
out=$(realpath -m "$1")
bins="kube-apiserver kubelet kube-scheduler kube-controller-manager"
if [ -x "$out/bin/kubelet" ] && [ -x "$out/bin/kube-apiserver" ] \
  && [ -x "$out/bin/kube-scheduler" ] && [ -x "$out/bin/kube-controller-manager" ]; then
  echo "kube build: reusing $out/bin"
  exit 0
fi
w=$out/work
rm -rf "$w"; mkdir -p "$w/lists/partial" "$w/debs" "$w/tools" "$w/home"
cd "$w"
echo 'deb-src http://deb.debian.org/debian bookworm main' > sources.list
O=(-o "Dir::Etc::SourceList=$w/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$w/lists")
apt-get "${O[@]}" update -qq
apt-get "${O[@]}" source --download-only kubernetes >/dev/null
(cd debs && apt-get download golang-1.19-go golang-1.19-src golang-github-modern-go-reflect2-dev rsync libpopt0 >/dev/null)
for f in debs/*.deb; do dpkg -x "$f" tools; done
tar -xzf kubernetes_*.orig.tar.gz
tar -xJf kubernetes_*.debian.tar.xz
cd kubernetes-1.20.2
while read -r p; do
  [ -n "$p" ] && [ "${p#\#}" = "$p" ] && patch -p1 -s < "../debian/patches/$p"
done < ../debian/patches/series
# The vendored reflect2 1.0.1 breaks at run time with Go >= 1.18; Debian's 1.0.2 does not.
rm -rf vendor/github.com/modern-go/reflect2
cp -r "$w/tools/usr/share/gocode/src/github.com/modern-go/reflect2" vendor/github.com/modern-go/
rm -f vendor/github.com/modern-go/reflect2/go.mod
export GOROOT=$w/tools/usr/lib/go-1.19 PATH=$w/tools/usr/lib/go-1.19/bin:$w/tools/usr/bin:$PATH \
  LD_LIBRARY_PATH=$w/tools/usr/lib/x86_64-linux-gnu GOCACHE=$w/gocache CGO_ENABLED=0 GOPROXY=off \
  HOME=$w/home KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=archive \
  KUBE_BUILD_PLATFORMS=linux/amd64 GOLDFLAGS="-s -w"
# `make`, not `go build`: the generators (openapi) must run first.
make WHAT="cmd/kube-apiserver cmd/kubelet cmd/kube-scheduler cmd/kube-controller-manager" >"$w/make.log" 2>&1 \
  || { tail -n 30 "$w/make.log" >&2; exit 1; }
mkdir -p "$out/bin"
for b in $bins; do cp "_output/bin/$b" "$out/bin/"; done
# The pause container every pod starts with; kubelet would pull it otherwise.
gcc -Os -static -o "$out/bin/pause" build/pause/linux/pause.c
cd "$out"
rm -rf "$w"
echo "kube build: $out/bin"
