#!/usr/bin/env bash
# Builds a packaging tool (helm, promtool) from its Go module into a cache outside the checkout,
# keyed by version, and prints the binary's path. A second call (or a fresh clone on the same
# machine) finds the cache and returns at once. Nothing is downloaded but Go modules.
#
#   build.sh helm | promtool
#   KUBE_BASELINE_CACHE  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache_root=${KUBE_BASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline}

log() { printf 'tools/build: %s\n' "$*" >&2; }

# A go older than the one the module's go.mod asks for fetches that toolchain (a module on the
# Go module proxy) instead of failing.
export GOTOOLCHAIN=${GOTOOLCHAIN_OVERRIDE:-auto}

tool=${1:-}
case "$tool" in
  helm)
    version=$HELM_VERSION
    pkg=helm.sh/helm/v3/cmd/helm
    # What `helm version` prints (the release Makefile sets the same variables).
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    ;;
  promtool)
    version=$PROMETHEUS_MODULE_VERSION
    pkg=github.com/prometheus/prometheus/cmd/promtool
    # v0.316.0 is Prometheus 3.16.0.
    minor=${version#v0.3}; patch=${minor#*.}; minor=${minor%%.*}
    release=3.$((10#$minor)).$patch
    ldflags="-s -w -X github.com/prometheus/common/version.Version=${release} -X github.com/prometheus/common/version.Branch=module"
    ;;
  *) echo "usage: $0 helm|promtool" >&2; exit 2 ;;
esac

dir=$cache_root/$tool-$version
bin=$dir/$tool

mkdir -p "$dir"
exec 9>"$dir/.build.lock"
flock 9  # concurrent callers wait for one build instead of racing it

if [ ! -x "$bin" ]; then
  log "building $tool $version from its Go module (several minutes on 2 cores when cold)"
  start=$SECONDS
  # `go install module/cmd@version` builds exactly the module's own go.mod and go.sum (neither
  # module has replace directives); GOFLAGS from the caller must not change that.
  GOFLAGS= GOBIN=$dir/.gobin CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "$pkg@$version"
  mv "$dir/.gobin/$tool" "$bin"
  rmdir "$dir/.gobin"
  log "$tool built in $((SECONDS - start))s"
fi
echo "$bin"
