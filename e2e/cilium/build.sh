#!/usr/bin/env bash
# Fetches Cilium (the Go module github.com/cilium/cilium, from the Go module proxy) into a cache
# outside the checkout, keyed by the version in versions.env, and prints what was asked for:
#
#   build.sh crds      the directory holding Cilium's CRD YAMLs (the ones in $crds below)
#   build.sh referee   the path of the referee (main.go: Cilium's policy engine behind a JSON
#                      filter), built on first use
#
# A second call (or a fresh clone on the same machine) finds the cache and returns at once.
#
#   KUBE_BASELINE_CACHE  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache_root=${KUBE_BASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline}
dir=$cache_root/cilium-$CILIUM_VERSION

# The CRDs a cluster needs to store Cilium's policies and what they select on; the module ships
# more (BGP, LB IPAM, Envoy config...), which nothing here uses.
crds=(
  ciliumnetworkpolicies
  ciliumclusterwidenetworkpolicies
  ciliumcidrgroups
  ciliumendpoints
  ciliumidentities
  ciliumnodes
)

log() { printf 'cilium/build: %s\n' "$*" >&2; }
usage() { log "usage: build.sh crds|referee"; exit 2; }

# A go older than the one Cilium's go.mod asks for fetches that toolchain (a module on the Go
# module proxy) instead of failing.
export GOTOOLCHAIN=${GOTOOLCHAIN_OVERRIDE:-auto}

required=$(sed -n -e 's#^require github.com/cilium/cilium \(v[^ ]*\)$#\1#p' \
  -e 's#^\tgithub.com/cilium/cilium \(v[^ ]*\)$#\1#p' "$here/go.mod")
if [ "$required" != "$CILIUM_VERSION" ]; then
  log "versions.env says $CILIUM_VERSION but go.mod requires ${required:-no cilium}; see versions.env"
  exit 1
fi

crds() {
  local out=$dir/crds
  if [ ! -f "$out/.complete" ]; then
    local start=$SECONDS module_dir
    log "fetching github.com/cilium/cilium@$CILIUM_VERSION (about 100 MB when not in Go's module cache)"
    # Outside any module, so that nothing here's go.mod is read or touched. go checks the
    # download against go.sum's checksum database, as for any module.
    module_dir=$(cd / && go mod download -json "github.com/cilium/cilium@$CILIUM_VERSION" |
      sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [ -d "$module_dir" ] || { log "cannot download github.com/cilium/cilium@$CILIUM_VERSION"; exit 1; }
    rm -rf "$out.tmp" && mkdir -p "$out.tmp"
    local name
    for name in "${crds[@]}"; do
      # install, not cp: files in Go's module cache are read-only.
      install -m 0644 "$module_dir/pkg/k8s/apis/cilium.io/client/crds/v2/$name.yaml" "$out.tmp/"
    done
    touch "$out.tmp/.complete"
    rm -rf "$out" && mv "$out.tmp" "$out"
    log "CRDs ready in $((SECONDS - start))s"
  fi
  echo "$out"
}

referee() {
  # The binary's name carries a hash of its sources, so an edited main.go is rebuilt rather
  # than served stale.
  local sources_hash bin start
  sources_hash=$(cd "$here" && cat go.mod go.sum main.go | sha256sum | cut -c1-12)
  bin=$dir/referee-$sources_hash
  if [ ! -x "$bin" ]; then
    log "building the referee with Cilium $CILIUM_VERSION (about 3 minutes on 2 cores when cold)"
    start=$SECONDS
    # -mod=readonly: go.sum is checked in, so the build uses exactly the reviewed modules.
    # CGO_ENABLED=0: the policy engine is pure Go; no BPF or C toolchain is needed.
    (cd "$here" && CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
    mv "$bin.tmp" "$bin"
    log "built in $((SECONDS - start))s"
    # Older builds are 75 MB each and cheap to redo from Go's build cache: keep only this one.
    find "$dir" -mindepth 1 -maxdepth 1 -type f -name 'referee-*' ! -name "${bin##*/}" -delete
  fi
  echo "$bin"
}

[ $# -eq 1 ] || usage
mkdir -p "$dir"
exec 9>"$dir/.build.lock"
flock 9  # concurrent callers wait for one build instead of racing it

case $1 in
  crds) crds ;;
  referee) referee ;;
  *) usage ;;
esac
