#!/usr/bin/env bash
# `make bench-kyverno`: builds Kyverno (cached), starts a fresh local control plane of its own
# (state in .cluster-bench-kyverno/, so a cluster of `make run` or `make e2e` is left alone), runs
# e2e/tests/bench_kyverno.rs, and stops Kyverno and the control plane afterwards, also on failure.
#
#   BENCH_NAMESPACES       namespaces per side (default 1000)
#   BENCH_KYVERNO_TIMEOUT  seconds Kyverno may take to converge before the run reports how far it got (3600)
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
export CLUSTER_DIR=${BENCH_CLUSTER_DIR:-$repo/.cluster-bench-kyverno}
cluster=$repo/e2e/controlplane/cluster.sh
"$repo/e2e/kyverno/build.sh" >/dev/null || exit 1
# The audit log (every write request, by user) is kept beside the component logs for a look
# afterwards; `down` keeps logs/ and the next run starts afresh.
stop() {
  "$repo/e2e/kyverno/kyverno.sh" stop
  [ -f "$CLUSTER_DIR/audit.log" ] && mv "$CLUSTER_DIR/audit.log" "$CLUSTER_DIR/logs/audit.log"
  "$cluster" down
}
trap stop EXIT
trap 'exit 130' INT TERM
"$cluster" down >/dev/null 2>&1   # fresh: nothing left from an earlier run
"$cluster" up || exit 1
cd "$repo" && cargo test --release --test e2e_bench_kyverno -- --ignored --nocapture --test-threads 1
rc=$?
if [ $rc -ne 0 ]; then
  for f in "$CLUSTER_DIR"/logs/*.log; do
    [ -f "$f" ] || continue
    echo "----- last lines of $f" >&2
    tail -n 30 "$f" >&2
  done
fi
exit $rc
