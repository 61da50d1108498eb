#!/usr/bin/env bash
# Builds the referee (main.go: cyclonus's NetworkPolicy matcher behind a JSON filter) into a cache
# outside the checkout, keyed by the cyclonus version, and prints the binary's path. A second call
# (or a fresh clone on the same machine) finds the cache and returns at once.
#
#   KUBE_BASELINE_CACHE  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cyclonus_version=$(sed -n 's#^\tgithub.com/mattfenwick/cyclonus \(v[^ ]*\)$#\1#p' "$here/go.mod")
[ -n "$cyclonus_version" ] || { echo "referee/build: no cyclonus requirement in $here/go.mod" >&2; exit 1; }
cache_root=${KUBE_BASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline}
dir=$cache_root/referee-cyclonus-$cyclonus_version
# The binary's name carries a hash of its sources, so an edited main.go is rebuilt rather than
# served stale.
sources_hash=$(cd "$here" && cat go.mod go.sum main.go | sha256sum | cut -c1-12)
bin=$dir/referee-$sources_hash

log() { printf 'referee/build: %s\n' "$*" >&2; }

# A go older than the one go.mod asks for fetches that toolchain (a module on the Go module
# proxy) instead of failing.
export GOTOOLCHAIN=${GOTOOLCHAIN_OVERRIDE:-auto}

mkdir -p "$dir"
exec 9>"$dir/.build.lock"
flock 9  # concurrent callers wait for one build instead of racing it

if [ ! -x "$bin" ]; then
  log "building the referee with cyclonus $cyclonus_version (about 2 minutes on 2 cores when cold)"
  start=$SECONDS
  # -mod=readonly: go.sum is checked in, so the build uses exactly the reviewed modules.
  (cd "$here" && CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
  log "built in $((SECONDS - start))s"
  # Older builds are 30 MB each and cheap to redo from Go's build cache: keep only this one.
  find "$dir" -mindepth 1 -maxdepth 1 -type f -name 'referee-*' ! -name "${bin##*/}" -delete
fi
echo "$bin"
