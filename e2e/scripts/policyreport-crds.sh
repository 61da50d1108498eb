#!/usr/bin/env bash
# Prints the directory holding the published wgpolicyk8s.io/v1alpha2 PolicyReport and
# ClusterPolicyReport CRDs, as shipped in Kyverno's Go module (config/crds/policyreport), fetched
# from the Go module proxy into the module cache once (about 11 MB) and reused afterwards.
set -euo pipefail
version=${KYVERNO_MODULE_VERSION:-v1.19.1}
dir=$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod GO111MODULE=on go mod download -json "github.com/kyverno/kyverno@$version" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] && [ -d "$dir/config/crds/policyreport" ] || {
  echo "could not get github.com/kyverno/kyverno@$version from the Go module proxy" >&2
  exit 1
}
echo "$dir/config/crds/policyreport"
