#!/usr/bin/env bash
# The local control plane: etcd, kube-apiserver and kube-controller-manager on 127.0.0.1.
#
#   cluster.sh up       start it (idempotent), write $CLUSTER_DIR/kubeconfig
#   cluster.sh down     stop what `up` started (by pid) and remove its state
#   cluster.sh status   say whether it runs; exit 1 when it does not
#   cluster.sh bin      print the directory of the cached binaries (builds them if needed)
#   cluster.sh kill C   SIGKILL one component (etcd, kube-apiserver, kube-controller-manager), for
#                       fault tests; its state (data, certificates, port) stays
#   cluster.sh start C  start that component again with the same flags and port, wait until ready
#
#   CLUSTER_DIR  state directory (default <repo>/.cluster): kubeconfig, pki/, logs/, pids/, audit.log
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${CLUSTER_DIR:-$repo/.cluster}
pids=$state/pids
logs=$state/logs
pki=$state/pki
startup_timeout=${CLUSTER_STARTUP_TIMEOUT:-120}
# shellcheck source=versions.env
source "$here/versions.env"

log() { printf 'cluster: %s\n' "$*" >&2; }

# A recorded pid counts only while it is still that component (pids get reused).
alive() {
  local pid
  [ -f "$pids/$1" ] && pid=$(cat "$pids/$1") && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$1"
}

# The kubectl with the admin kubeconfig; quiet unless asked.
kc() { "$bin/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }

# Healthy: every component runs, the API answers, and it is the pinned version (a bump of
# versions.env replaces an older running cluster).
healthy() {
  alive etcd && alive kube-apiserver && alive kube-controller-manager \
    && [ -f "$state/kubeconfig" ] && [ "$(cat "$state/version" 2>/dev/null)" = "$KUBERNETES_VERSION/$ETCD_VERSION" ] \
    && kc get --raw /readyz >/dev/null 2>&1
}

# A free port below Linux's ephemeral range (32768+), so client connections cannot take it
# between this check and the bind; never one handed out earlier in this run.
taken=" "
free_port() {
  local p
  while :; do
    p=$(( (RANDOM % 12000) + 20000 ))
    case "$taken" in *" $p "*) continue ;; esac
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    taken="$taken$p "
    echo "$p"
    return
  done
}

stop_all() {
  local c pid
  for c in kube-controller-manager kube-apiserver etcd; do
    [ -f "$pids/$c" ] || continue
    pid=$(cat "$pids/$c")
    if alive "$c"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pids/$c"
  done
}

fail_start() {
  log "$1 did not become ready; last lines of its log ($logs/$1.log):"
  tail -n 40 "$logs/$1.log" >&2 || true
  stop_all
  exit 1
}

# Waits until "$@" succeeds or the component's process dies or the time runs out.
wait_for() {
  local component=$1; shift
  local deadline=$((SECONDS + startup_timeout))
  until "$@" >/dev/null 2>&1; do
    alive "$component" || fail_start "$component"
    [ $SECONDS -lt $deadline ] || fail_start "$component"
    sleep 0.5
  done
}

make_pki() {
  mkdir -p "$pki"
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt \
    -subj "/CN=kube-baseline-local-ca" 2>/dev/null
  sign() { # name subject [san]
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    # X.509 v3 with key usages: rustls (the operator's TLS stack) rejects v1 certificates.
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' >"$1.ext"
    if [ -n "${3:-}" ]; then printf 'subjectAltName=%s\n' "$3" >>"$1.ext"; fi
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
  }
  sign apiserver "/CN=kube-apiserver" \
    "DNS:localhost,IP:127.0.0.1,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  sign admin "/O=system:masters/CN=kube-baseline-admin"
  sign controller-manager "/CN=system:kube-controller-manager"
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  cd - >/dev/null
}

write_kubeconfig() { # file cert-name server
  cat >"$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $3
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: local
  context: {cluster: local, user: $2}
current-context: local
KUBECONFIG
}

up() {
  if healthy; then log "already running: KUBECONFIG=$state/kubeconfig"; return; fi
  if [ -d "$pids" ]; then log "cleaning up an earlier, unhealthy run"; stop_all; fi
  rm -rf "$state" && mkdir -p "$pids" "$logs"
  echo "$KUBERNETES_VERSION/$ETCD_VERSION" >"$state/version"
  make_pki

  local start=$SECONDS
  etcd_port=$(free_port); taken="$taken$etcd_port "
  etcd_peer=$(free_port); taken="$taken$etcd_peer "
  api_port=$(free_port)
  # Kept for `start`: a restarted component comes back on the same port.
  printf 'etcd_port=%s\netcd_peer=%s\napi_port=%s\n' "$etcd_port" "$etcd_peer" "$api_port" >"$state/ports"

  start_etcd
  start_kube_apiserver
  write_kubeconfig "$state/controller-manager.kubeconfig" controller-manager "https://127.0.0.1:$api_port"
  start_kube_controller_manager
  log "up in $((SECONDS - start))s: KUBECONFIG=$state/kubeconfig ($bin/kubectl)"
}

start_etcd() {
  "$bin/etcd" --name local --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "local=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync=true \
    >>"$logs/etcd.log" 2>&1 8>&- &
  echo $! >"$pids/etcd"
  wait_for etcd curl -fsS "http://127.0.0.1:$etcd_port/health"
}

start_kube_apiserver() {
  "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
    --audit-policy-file "$here/audit-policy.yaml" --audit-log-path "$state/audit.log" --audit-log-maxsize 2048 \
    >>"$logs/kube-apiserver.log" 2>&1 8>&- &
  echo $! >"$pids/kube-apiserver"
  write_kubeconfig "$state/kubeconfig" admin "https://127.0.0.1:$api_port"
  wait_for kube-apiserver kc get --raw /readyz
}

start_kube_controller_manager() {
  # Each controller's client is held to --kube-api-qps (default 20 a second): the root CA
  # publisher then wrote its ConfigMap into the benchmark's 30,000 new namespaces for 25 minutes,
  # under every phase it measured. With room to keep up, it is done as the namespaces are made.
  "$bin/kube-controller-manager" --kubeconfig "$state/controller-manager.kubeconfig" \
    --controllers namespace-controller,garbage-collector-controller,serviceaccount-controller,clusterrole-aggregation-controller,root-ca-certificate-publisher-controller \
    --root-ca-file "$pki/ca.crt" --use-service-account-credentials=true --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
    --kube-api-qps 1000 --kube-api-burst 2000 \
    >>"$logs/kube-controller-manager.log" 2>&1 8>&- &
  echo $! >"$pids/kube-controller-manager"
  # Ready means the controllers work: the ServiceAccount controller has run and the aggregated
  # ClusterRoles carry rules.
  wait_for kube-controller-manager kc -n default get serviceaccount default
  wait_for kube-controller-manager sh -c "'$bin/kubectl' --kubeconfig '$state/kubeconfig' get clusterrole edit -o jsonpath='{.rules[0].verbs}' | grep -q ."
}

# The component named on the command line, checked.
component() {
  case "${1:-}" in
    etcd|kube-apiserver|kube-controller-manager) echo "$1" ;;
    *) echo "usage: $0 kill|start etcd|kube-apiserver|kube-controller-manager" >&2; exit 2 ;;
  esac
}

kill_one() {
  local c pid
  c=$(component "$1")
  alive "$c" || { log "$c is not running"; return; }
  pid=$(cat "$pids/$c")
  kill -9 "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  log "killed $c (pid $pid)"
}

start_one() {
  local c start=$SECONDS
  c=$(component "$1")
  [ -f "$state/ports" ] || { log "no cluster state: run '$0 up' first"; exit 1; }
  if alive "$c"; then log "$c is already running"; return; fi
  # shellcheck disable=SC1091
  source "$state/ports"
  "start_${c//-/_}"
  log "started $c in $((SECONDS - start))s"
}

status() {
  if healthy; then
    log "running: KUBECONFIG=$state/kubeconfig, server $(kc config view -o jsonpath='{.clusters[0].cluster.server}')"
    for c in etcd kube-apiserver kube-controller-manager; do log "  $c pid $(cat "$pids/$c")"; done
  else
    log "not running"; return 1
  fi
}

# One up/down at a time per state directory.
mkdir -p "$(dirname "$state")"
exec 8>"$state.lock"
case "${1:-}" in
  up|down) flock 8 ;;
esac

case "${1:-}" in
  up) bin=$("$here/build.sh"); up ;;
  kill) kill_one "${2:-}" ;;
  start) bin=$("$here/build.sh" --dir); start_one "${2:-}" ;;
  # The logs stay for a post-mortem (the next `up` starts afresh).
  down) stop_all; find "$state" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} + 2>/dev/null; log "stopped" ;;
  status) bin=$("$here/build.sh" --dir); status ;;
  bin) "$here/build.sh" ;;
  *) echo "usage: $0 up|down|status|bin|kill C|start C" >&2; exit 2 ;;
esac
