#!/usr/bin/env bash
# Runs a command with the local control plane up: starts it when none runs and stops it
# afterwards (only if it started it, also on Ctrl-C or a cancelled CI job). Shows the tails of
# the logs when the command fails; the logs stay in .cluster/logs/.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cluster=$repo/e2e/controlplane/cluster.sh
started=0
stop() { [ $started = 1 ] && "$cluster" down; started=0; }
trap stop EXIT
trap 'exit 130' INT TERM
if ! "$cluster" status >/dev/null 2>&1; then
  "$cluster" up || exit 1
  started=1
fi
"$@"
rc=$?
if [ $rc -ne 0 ]; then
  for f in "${CLUSTER_DIR:-$repo/.cluster}"/logs/*.log; do
    [ -f "$f" ] || continue
    echo "----- last lines of $f" >&2
    tail -n 30 "$f" >&2
  done
fi
exit $rc
