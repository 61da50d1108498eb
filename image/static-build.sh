#!/usr/bin/env bash
# Builds the manager binary the image carries: release, statically linked (glibc with
# crt-static; the TLS stack is rustls with ring, so nothing else is linked), for an image
# `FROM scratch`. The Dockerfile's build stage and `make image` both run this script, so the
# binary in a user's image and the one tested here come from the same command.
#
#   static-build.sh [OUT]   builds and copies the binary to OUT (default image/kube-baseline)
set -euo pipefail
cd "$(dirname "$0")/.."
# The host's own triple (x86_64- or aarch64-unknown-linux-gnu): no target to install.
target=$(rustc -vV | sed -n 's/^host: //p')
out=${1:-image/kube-baseline}
target_dir=${CARGO_TARGET_DIR:-target}
# Started from `cargo test` (e2e/tests/image.rs), the environment carries the test's CARGO_*
# variables, and ring's build script reruns when those change: the cached build would be redone.
for v in $(compgen -e); do
  case $v in
    CARGO_HOME | CARGO_TARGET_DIR | CARGO_NET_* | CARGO_HTTP_* | CARGO_REGISTRIES_*) ;;
    CARGO_* | OUT_DIR) unset "$v" ;;
  esac
done
# --target keeps RUSTFLAGS off the build scripts and proc macros (they run on the host) and the
# artefacts apart from the usual target/release. AUDITABLE=1 (release/dist.sh) builds through
# `cargo auditable`, which embeds the dependency tree in the binary.
RUSTFLAGS="-C target-feature=+crt-static ${RUSTFLAGS:-}" \
  cargo ${AUDITABLE:+auditable} build --release --locked --target "$target" --bin kube-baseline
bin=$target_dir/$target/release/kube-baseline
# A dynamic binary would start nowhere in a scratch image: refuse it here, not at run time.
if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
  echo "static-build: $bin is dynamically linked" >&2
  exit 1
fi
install -m 0755 "$bin" "$out.tmp" && mv "$out.tmp" "$out"
echo "$out"
