#!/usr/bin/env bash
# Builds the dataplane suite's test engine, kube-router (only its network policy controller is
# ever run), from its Go module into a cache outside the checkout, keyed by version, and prints the
# binary's path. A second call (or a fresh clone on the same machine) finds the cache and returns
# at once. Nothing is downloaded but Go modules.
#
# kube-router is a TEST engine here: advisories are reported against the version below. The suite
# runs it only inside network namespaces it made; it is never shipped or recommended.
#
#   KUBE_BASELINE_CACHE  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache_root=${KUBE_BASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline}
version=$KUBE_ROUTER_VERSION
dir=$cache_root/kube-router-$version
bin=$dir/kube-router
pkg=github.com/cloudnativelabs/kube-router/v2/cmd/kube-router

log() { printf 'dataplane/build: %s\n' "$*" >&2; }

# A go older than the one the module's go.mod asks for fetches that toolchain (a module on the
# Go module proxy) instead of failing.
export GOTOOLCHAIN=${GOTOOLCHAIN_OVERRIDE:-auto}

mkdir -p "$dir"
exec 9>"$dir/.build.lock"
flock 9  # concurrent callers wait for one build instead of racing it

if [ ! -x "$bin" ]; then
  log "building kube-router $version from its Go module (minutes on 2 cores when cold)"
  start=$SECONDS
  # `go install module/cmd@version` builds exactly the module's own go.mod and go.sum; GOFLAGS
  # from the caller must not change that.
  GOFLAGS= GOBIN=$dir/.gobin CGO_ENABLED=0 go install -trimpath \
    -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$version" \
    "$pkg@$version"
  mv "$dir/.gobin/kube-router" "$bin"
  rmdir "$dir/.gobin"
  log "kube-router built in $((SECONDS - start))s"
fi
echo "$bin"
