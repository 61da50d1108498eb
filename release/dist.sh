#!/usr/bin/env bash
# `make dist`: a release a platform team can install from, in dist/ (checksums in SHA256SUMS):
#
#   kube-baseline-$VERSION-linux-$ARCH        the static binary, with `cargo auditable` metadata
#                                             (its dependency tree, readable by cargo audit)
#   kube-baseline-$VERSION.cdx.json           a CycloneDX SBOM of the same crate graph
#   kube-baseline-$VERSION-image.oci.tar      the manager image (FROM scratch, that binary) as an
#                                             OCI archive: `podman load`, then push to a registry
#   kube-baseline-$VERSION.tgz                the Helm chart, appVersion $VERSION (the image tag)
#   kubectl-baseline-$VERSION-linux-$ARCH.tar.gz, baseline.yaml
#                                             the binary as a kubectl plugin and its krew-style
#                                             manifest (`kubectl baseline validate|render|audit`)
#   crds/, config/                            the CRD and the kustomize installation
#
# The tools come from crates.io and Go modules, built once into the version-keyed cache:
# cargo-auditable and cargo-cyclonedx (release/versions.env), helm (e2e/tools). The release build
# has its own cargo target directory in the cache, so it never invalidates `make test`'s.
#
#   VERSION              the release version (default: Cargo.toml's)
#   KUBE_BASELINE_CACHE  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline)
set -euo pipefail
cd "$(dirname "$0")/.."
here=release
# shellcheck source=versions.env
source "$here/versions.env"
crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
version=${VERSION:-$crate_version}
cache_root=${KUBE_BASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline}
tools=$cache_root/dist-tools-auditable-$CARGO_AUDITABLE_VERSION-cyclonedx-$CARGO_CYCLONEDX_VERSION
arch=$(uname -m); case $arch in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
log() { printf 'dist: %s\n' "$*" >&2; }
# Started from `cargo test` (e2e/tests/dist.rs), the environment carries the test's CARGO_*
# variables: they must not reach the cargo commands below.
for v in $(compgen -e); do
  case $v in
    CARGO_HOME | CARGO_NET_* | CARGO_HTTP_* | CARGO_REGISTRIES_*) ;;
    CARGO_* | OUT_DIR | RUSTC_WRAPPER | RUSTC_WORKSPACE_WRAPPER) unset "$v" ;;
  esac
done
start=$SECONDS

# The tools, once (cargo install --locked: their own lock files pin what they build).
mkdir -p "$tools"
exec 8>"$tools/.lock"
flock 8
for tool in "cargo-auditable:$CARGO_AUDITABLE_VERSION" "cargo-cyclonedx:$CARGO_CYCLONEDX_VERSION"; do
  name=${tool%%:*} v=${tool#*:}
  if [ ! -x "$tools/bin/$name" ]; then
    log "building $name $v from crates.io into $tools (once)"
    cargo install --quiet --locked --root "$tools" --version "$v" "$name"
  fi
done
export PATH=$tools/bin:$PATH
flock -u 8

out=dist
rm -rf "$out" && mkdir -p "$out"

# The binary: image/static-build.sh's static build, through cargo auditable.
export CARGO_TARGET_DIR=$cache_root/dist-target
mkdir -p "$CARGO_TARGET_DIR"
exec 9>"$CARGO_TARGET_DIR/.build.lock"
flock 9
AUDITABLE=1 image/static-build.sh "$out/kube-baseline-$version-linux-$arch" >/dev/null
flock -u 9

# The SBOM of the same graph (all features as built; no dev-dependencies).
cargo cyclonedx --quiet --format json --spec-version 1.5 --override-filename "kube-baseline-$version.cdx" >/dev/null
mv "kube-baseline-$version.cdx.json" "$out/"

# The image, from that binary (the Dockerfile's prebuilt stage), as an OCI archive.
if command -v podman >/dev/null; then
  install -m 0755 "$out/kube-baseline-$version-linux-$arch" image/kube-baseline
  image=localhost/kube-baseline:$version
  podman build --quiet --target prebuilt --tag "$image" --file Dockerfile . >/dev/null
  podman save --quiet --format oci-archive --output "$out/kube-baseline-$version-image.oci.tar" "$image"
else
  log "podman not found: no image archive"
fi

# The chart: appVersion is the image tag it installs.
helm=$(e2e/tools/build.sh helm)
"$helm" package charts/kube-baseline --version "$version" --app-version "$version" --destination "$out" >/dev/null

# The kubectl plugin: the same binary named kubectl-baseline, and its krew-style manifest.
plugin=kubectl-baseline-$version-linux-$arch.tar.gz
staging=$(mktemp -d)
install -m 0755 "$out/kube-baseline-$version-linux-$arch" "$staging/kubectl-baseline"
cp LICENSE "$staging/" 2>/dev/null || true
tar -C "$staging" -czf "$out/$plugin" .
rm -rf "$staging"
sha=$(sha256sum "$out/$plugin" | cut -d' ' -f1)
cat >"$out/baseline.yaml" <<MANIFEST
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: baseline
spec:
  version: v$version
  shortDescription: Validate, render and audit kube-baseline SecurityBaselines
  description: |
    kubectl baseline validate FILE|DIR   check SecurityBaseline files offline, as the API server would
    kubectl baseline render -f FILE ...  the objects a baseline makes in given namespaces (--diff: against the cluster)
    kubectl baseline audit               is every selected namespace compliant (exit code 1 if not)
  platforms:
    - selector:
        matchLabels: {os: linux, arch: $arch}
      # Install from this directory: kubectl krew install --manifest=baseline.yaml --archive=$plugin
      # (or host the archive and put its address here).
      uri: $plugin
      sha256: $sha
      bin: kubectl-baseline
MANIFEST

# What kustomize installs, for a team that does not use Helm.
cp -r crds "$out/crds"
mkdir -p "$out/config" && cp -r config/* "$out/config/"

(cd "$out" && find . -type f ! -name SHA256SUMS | sed 's#^\./##' | sort | xargs sha256sum > SHA256SUMS)
log "dist/ for $version in $((SECONDS - start))s"
ls "$out"
