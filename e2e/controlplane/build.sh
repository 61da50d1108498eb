#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl and etcd from their Go modules into a
# cache outside the checkout, keyed by version, and prints the directory holding them.
# A second call (or a fresh clone on the same machine) finds the cache and returns at once.
#
#   build.sh --dir       print the directory without building
#   KUBE_BASELINE_CACHE  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache_root=${KUBE_BASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline}
k8s_dir=$cache_root/k8s-$KUBERNETES_VERSION
etcd_dir=$cache_root/etcd-$ETCD_VERSION
bin_dir=$cache_root/bin-$KUBERNETES_VERSION-etcd-$ETCD_VERSION

log() { printf 'controlplane/build: %s\n' "$*" >&2; }

# A go older than the one Kubernetes' go.mod asks for fetches that toolchain (a module on the
# Go module proxy) instead of failing.
export GOTOOLCHAIN=${GOTOOLCHAIN_OVERRIDE:-auto}

# --dir: only say where the binaries are (or would be); build nothing.
if [ "${1:-}" = --dir ]; then echo "$bin_dir"; exit 0; fi

build_kubernetes() {
  local src=$k8s_dir/src minor gomod replaces=() m
  rm -rf "$src" && mkdir -p "$src"
  cp "$here/kubernetes/go.mod" "$here/kubernetes/tools.go" "$src/"
  cd "$src"
  # The release's own go.mod lists its staging modules (replaced by local paths there, which
  # a dependent module ignores): replace each with the matching v0.<minor>.<patch> release.
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || { log "cannot download k8s.io/kubernetes@$KUBERNETES_VERSION"; exit 1; }
  local staging_version=v0.${KUBERNETES_VERSION#v1.}
  while read -r m; do
    replaces+=("-replace=$m=$m@$staging_version")
  done < <(sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
  [ ${#replaces[@]} -gt 20 ] || { log "found only ${#replaces[@]} staging modules in $gomod"; exit 1; }
  log "k8s.io/kubernetes@$KUBERNETES_VERSION with ${#replaces[@]} staging modules at $staging_version"
  go mod edit "-require=k8s.io/kubernetes@$KUBERNETES_VERSION" "${replaces[@]}"
  go mod tidy -e >/dev/null
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  mkdir -p "$k8s_dir/bin"
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    log "building $cmd (a cold build takes many minutes on 2 cores)"
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$k8s_dir/bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$k8s_dir/bin/$cmd.tmp" "$k8s_dir/bin/$cmd"
  done
}

build_etcd() {
  local src=$etcd_dir/src
  rm -rf "$src" && mkdir -p "$src"
  cp "$here/etcd/go.mod" "$here/etcd/main.go" "$src/"
  cd "$src"
  go mod edit "-require=go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy >/dev/null
  mkdir -p "$etcd_dir/bin"
  log "building etcd $ETCD_VERSION"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$etcd_dir/bin/etcd.tmp" .
  mv "$etcd_dir/bin/etcd.tmp" "$etcd_dir/bin/etcd"
}

mkdir -p "$cache_root"
exec 9>"$cache_root/.build.lock"
flock 9  # concurrent callers wait for one build instead of racing it

have() { for b in "$@"; do [ -x "$b" ] || return 1; done; }
if ! have "$k8s_dir/bin/kube-apiserver" "$k8s_dir/bin/kube-controller-manager" "$k8s_dir/bin/kubectl"; then
  start=$SECONDS; build_kubernetes; log "kubernetes built in $((SECONDS - start))s"
fi
if ! have "$etcd_dir/bin/etcd"; then
  start=$SECONDS; build_etcd; log "etcd built in $((SECONDS - start))s"
fi
mkdir -p "$bin_dir"
for b in "$k8s_dir"/bin/kube-apiserver "$k8s_dir"/bin/kube-controller-manager "$k8s_dir"/bin/kubectl "$etcd_dir"/bin/etcd; do
  ln -sfn "$b" "$bin_dir/$(basename "$b")"
done
echo "$bin_dir"
