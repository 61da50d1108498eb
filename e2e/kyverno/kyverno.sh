#!/usr/bin/env bash
# Kyverno v1.19.1 out of cluster against the local control plane (e2e/controlplane/cluster.sh),
# for the side-by-side benchmark (`make bench-kyverno`). Built by build.sh from the Go module
# proxy; nothing of Kyverno's is kept in the checkout: its CRDs and ConfigMaps are read from the
# module at run time.
#
#   kyverno.sh install   namespace `kyverno`, Kyverno's 22 CRDs (server-side apply), its ConfigMaps
#                        `kyverno` and `kyverno-metrics` copied unchanged, two ServiceAccounts bound
#                        to cluster-admin (a benchmark shortcut: Kyverno's own install grants less)
#                        and their token kubeconfigs
#   kyverno.sh start     the admission controller and the background controller as processes on
#                        127.0.0.1; waits until the webhooks are registered and ready
#   kyverno.sh stop      stops both (by pid) and deletes Kyverno's webhook configurations, which
#                        would otherwise fail closed with no Kyverno to answer
#   kyverno.sh status    pids and ports
#
# State under $CLUSTER_DIR/kyverno/ (pids, ports, kubeconfigs); logs in $CLUSTER_DIR/logs/.
#   KYVERNO_EXTRA_ARGS        extra flags for both processes (e.g. --clientRateLimitQPS=300)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${CLUSTER_DIR:-$repo/.cluster}
dir=$state/kyverno
logs=$state/logs
ns=kyverno

log() { printf 'kyverno: %s\n' "$*" >&2; }
kc() { "$kubectl" --kubeconfig "$state/kubeconfig" "$@"; }

setup() {
  [ -f "$state/kubeconfig" ] || { log "no local control plane in $state: run 'make cluster-up'"; exit 1; }
  kubectl=$("$repo/e2e/controlplane/cluster.sh" bin)/kubectl
  kyverno=$("$here/build.sh")
  mkdir -p "$dir" "$logs"
}

# A free port below the ephemeral range, as cluster.sh picks them.
free_port() {
  local p
  while :; do
    p=$(( (RANDOM % 12000) + 20000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    echo "$p"; return
  done
}

# One document of a multi-document YAML file: the ConfigMap named $2.
configmap() {
  awk -v name="$2" '
    /^---/ { if (doc ~ /\nkind: ConfigMap\n/ && doc ~ "\n  name: " name "\n") printf "%s", doc; doc = "\n"; next }
    { doc = doc $0 "\n" }
    END { if (doc ~ /\nkind: ConfigMap\n/ && doc ~ "\n  name: " name "\n") printf "%s", doc }' "$1"
}

token_kubeconfig() { # service-account file
  local server token
  server=$(kc config view -o jsonpath='{.clusters[0].cluster.server}')
  token=$(kc -n "$ns" create token "$1" --duration=24h)
  cat >"$2" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: $server, certificate-authority: $state/pki/ca.crt}
users:
- name: $1
  user: {token: $token}
contexts:
- name: local
  context: {cluster: local, user: $1}
current-context: local
KUBECONFIG
}

install() {
  local src=$kyverno/src
  kc create namespace "$ns" --dry-run=client -o yaml | kc apply --server-side -f - >/dev/null
  # Two CRDs are ~1.4 MB: client-side apply would exceed the last-applied annotation's limit.
  kc apply --server-side --force-conflicts -R -f "$src/config/crds/" >/dev/null
  kc wait --for condition=established --timeout 60s crd/clusterpolicies.kyverno.io crd/updaterequests.kyverno.io >/dev/null
  for cm in kyverno kyverno-metrics; do
    configmap "$src/config/install-latest-testing.yaml" "$cm" | kc apply --server-side --force-conflicts -f - >/dev/null
  done
  for sa in kyverno-admission-controller kyverno-background-controller; do
    kc -n "$ns" create serviceaccount "$sa" --dry-run=client -o yaml | kc apply --server-side -f - >/dev/null
    kc create clusterrolebinding "bench:$sa" --clusterrole cluster-admin --serviceaccount "$ns:$sa" \
      --dry-run=client -o yaml | kc apply --server-side -f - >/dev/null
    token_kubeconfig "$sa" "$dir/$sa.kubeconfig"
  done
  log "installed: namespace $ns, $(find "$src/config/crds" -name '*.yaml' | wc -l) CRDs, ConfigMaps, ServiceAccounts (cluster-admin)"
}

alive() { [ -f "$dir/$1.pid" ] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

start_one() { # name port-args...
  local name=$1; shift
  if alive "$name"; then log "$name already runs (pid $(cat "$dir/$name.pid"))"; return; fi
  KYVERNO_NAMESPACE=$ns KYVERNO_SERVICEACCOUNT_NAME=$name KYVERNO_DEPLOYMENT=$name \
    KYVERNO_POD_NAME=$name-local INIT_CONFIG=kyverno METRICS_CONFIG=kyverno-metrics \
    "$kyverno/${binary[$name]}" --kubeconfig "$dir/$name.kubeconfig" --enableReporting= \
    --controllerRuntimeMetricsAddress=0 --metricsHost=127.0.0.1 --disableLogColor "$@" ${KYVERNO_EXTRA_ARGS:-} \
    >>"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

start() {
  [ -f "$dir/kyverno-admission-controller.kubeconfig" ] || install
  declare -gA binary=([kyverno-admission-controller]=kyverno [kyverno-background-controller]=background-controller)
  local webhook admission_metrics background_metrics
  if [ -f "$dir/ports" ] && ! alive kyverno-admission-controller; then rm -f "$dir/ports"; fi
  if [ ! -f "$dir/ports" ]; then
    webhook=$(free_port); admission_metrics=$(free_port); background_metrics=$(free_port)
    printf 'webhook=%s\nadmission_metrics=%s\nbackground_metrics=%s\n' "$webhook" "$admission_metrics" "$background_metrics" >"$dir/ports"
  fi
  # shellcheck disable=SC1091
  source "$dir/ports"
  # --serverIP: webhooks registered by URL (no Service, no pods, no Deployment checks).
  start_one kyverno-admission-controller --serverIP="127.0.0.1:$webhook" \
    --webhookServerHost=127.0.0.1 --webhookServerPort="$webhook" \
    --caSecretName=kyverno-tls-ca --tlsSecretName=kyverno-tls-pair \
    --backgroundServiceAccountName=system:serviceaccount:kyverno:kyverno-background-controller \
    --admissionReports=false --generateValidatingAdmissionPolicy=false --metricsPort="$admission_metrics"
  start_one kyverno-background-controller --metricsPort="$background_metrics"
  local deadline=$((SECONDS + ${KYVERNO_STARTUP_TIMEOUT:-120}))
  until curl -ksf "https://127.0.0.1:$webhook/health/readiness" >/dev/null 2>&1 \
      && kc get validatingwebhookconfigurations -o name 2>/dev/null | grep -q kyverno; do
    for p in kyverno-admission-controller kyverno-background-controller; do
      alive "$p" || { log "$p exited; last lines of $logs/$p.log:"; tail -n 30 "$logs/$p.log" >&2; stop; exit 1; }
    done
    [ $SECONDS -lt $deadline ] || { log "not ready in time; see $logs/kyverno-*.log"; stop; exit 1; }
    sleep 0.5
  done
  log "ready: webhook https://127.0.0.1:$webhook, metrics :$admission_metrics (admission) :$background_metrics (background)"
}

stop() {
  local name pid
  for name in kyverno-background-controller kyverno-admission-controller; do
    alive "$name" || { rm -f "$dir/$name.pid"; continue; }
    pid=$(cat "$dir/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/$name.pid"
  done
  if [ -f "$state/kubeconfig" ] && kc get --raw /readyz >/dev/null 2>&1; then
    kc delete validatingwebhookconfigurations,mutatingwebhookconfigurations \
      -l webhook.kyverno.io/managed-by=kyverno --ignore-not-found >/dev/null 2>&1 || true
  fi
  log "stopped"
}

status() {
  local name rc=0
  for name in kyverno-admission-controller kyverno-background-controller; do
    if alive "$name"; then log "$name pid $(cat "$dir/$name.pid")"; else log "$name not running"; rc=1; fi
  done
  [ -f "$dir/ports" ] && cat "$dir/ports" >&2
  return $rc
}

case "${1:-}" in
  install) setup; install ;;
  start) setup; start ;;
  stop) kubectl=$("$repo/e2e/controlplane/cluster.sh" bin 2>/dev/null)/kubectl || true; stop ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
