#!/usr/bin/env bash
# Builds Kyverno's admission controller (cmd/kyverno) and background controller
# (cmd/background-controller) from the Go module proxy into a cache outside the checkout, keyed by
# the Kyverno version, and prints the cache directory (it holds `kyverno`, `background-controller`
# and `src`, a link to the module's source for its CRDs and ConfigMaps). A second call finds the
# cache and returns at once. Nothing of Kyverno's is written into the checkout.
#
# Cold: ~20 min on 2 shared cores (mostly background-controller); `go mod tidy` downloads ~100 s.
#
#   KYVERNO_VERSION      default v1.19.1 (the newest the proxy serves; same client-go as k8s v1.36.3)
#   KUBE_BASELINE_CACHE  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline)
set -euo pipefail

version=${KYVERNO_VERSION:-v1.19.1}
# Kyverno's single replace directive in its own go.mod at that version (see
# /work/shared/notes/kyverno-facts.md); checked against the module's go.mod below.
psa_replace='k8s.io/pod-security-admission => github.com/kyverno/pod-security-admission v0.0.0-20251031094455-46f20778634f'
cache_root=${KUBE_BASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline}
dir=$cache_root/kyverno-$version

log() { printf 'kyverno/build: %s\n' "$*" >&2; }

export GOTOOLCHAIN=${GOTOOLCHAIN_OVERRIDE:-auto}

mkdir -p "$dir"
exec 9>"$dir/.build.lock"
flock 9  # concurrent callers wait for one build instead of racing it

if [ ! -x "$dir/kyverno" ] || [ ! -x "$dir/background-controller" ] || [ ! -e "$dir/src/config/crds" ]; then
  start=$SECONDS
  # The helper module lives in a temp dir outside the checkout; only the binaries are kept.
  work=$(mktemp -d "${TMPDIR:-/tmp}/kyverno-build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  cat >"$work/go.mod" <<GOMOD
module kube-baseline.local/kyverno-build

go 1.25

require github.com/kyverno/kyverno $version

replace $psa_replace
GOMOD
  cat >"$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "github.com/kyverno/kyverno/cmd/background-controller"
	_ "github.com/kyverno/kyverno/cmd/kyverno"
)
GO
  log "resolving github.com/kyverno/kyverno $version (go mod tidy, ~100 s cold)"
  (cd "$work" && GOFLAGS=-mod=mod go mod download github.com/kyverno/kyverno@"$version")
  src=$(cd "$work" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' github.com/kyverno/kyverno@"$version")
  # Kyverno's own replace must still be the one copied above, or the build would differ from theirs.
  want=$(sed -n 's#^replace k8s.io/pod-security-admission => \(.*\)$#\1#p' "$src/go.mod")
  [ "k8s.io/pod-security-admission => $want" = "$psa_replace" ] ||
    { log "Kyverno's replace changed: '$want' (update build.sh)"; exit 1; }
  (cd "$work" && go mod tidy)
  ldflags="-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion=$version"
  for cmd in background-controller kyverno; do
    if [ ! -x "$dir/$cmd" ]; then
      log "building $cmd (background-controller ~20 min cold on 2 cores; kyverno ~2 min after it)"
      t=$SECONDS
      (cd "$work" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -buildvcs=false -trimpath \
        -ldflags "$ldflags" -o "$dir/$cmd.tmp" "github.com/kyverno/kyverno/cmd/$cmd")
      mv "$dir/$cmd.tmp" "$dir/$cmd"
      log "$cmd built in $((SECONDS - t))s"
    fi
  done
  ln -sfn "$src" "$dir/src"
  log "done in $((SECONDS - start))s"
fi
echo "$dir"
