#!/usr/bin/env bash
# `make image`: the manager image, from the Dockerfile, with podman (buildah underneath).
# The binary is built on the host by image/static-build.sh — the script the Dockerfile's Rust
# stage runs — into a cargo target directory in the cache outside the checkout (a fresh clone
# on the same machine reuses it), and the Dockerfile takes it (--target prebuilt): no base
# image is pulled (the runtime stage is FROM scratch). Prints the image reference.
#
#   IMAGE                image reference (default localhost/kube-baseline:<Cargo.toml version>)
#   KUBE_BASELINE_CACHE  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline)
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
image=${IMAGE:-localhost/kube-baseline:$version}
cache_root=${KUBE_BASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-baseline}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache_root/image-target}
command -v podman >/dev/null || { echo "image/build: podman is required (apt-get install podman)" >&2; exit 1; }

mkdir -p "$CARGO_TARGET_DIR"
exec 9>"$CARGO_TARGET_DIR/.build.lock"
flock 9  # two checkouts share the target directory: one build at a time

start=$SECONDS
image/static-build.sh image/kube-baseline >/dev/null
podman build --quiet --target prebuilt --tag "$image" --file Dockerfile . >/dev/null
printf 'image/build: %s in %ss\n' "$image" "$((SECONDS - start))" >&2
echo "$image"
