#!/usr/bin/env bash
# `make run`: the operator in the foreground against $KUBECONFIG, or against the local control
# plane (started if needed) when KUBECONFIG is unset. Installs the CRD, a sample baseline and
# demo namespaces first. METRICS_ADDR (default 127.0.0.1:8080) is where /metrics is served.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
if [ -z "${KUBECONFIG:-}" ]; then
  e2e/controlplane/cluster.sh up
  export KUBECONFIG=${CLUSTER_DIR:-$repo/.cluster}/kubeconfig
  kubectl=$(e2e/controlplane/cluster.sh bin)/kubectl
else
  # Your own cluster: your kubectl (the cached one is built only when there is none).
  kubectl=$(command -v kubectl || echo "$(e2e/controlplane/cluster.sh bin)/kubectl")
fi
metrics=${METRICS_ADDR:-127.0.0.1:8080}
cargo build --bins
"$kubectl" apply --server-side -k crds
"$kubectl" wait --for condition=established --timeout 60s crd/securitybaselines.kubebaseline.io
# Prevention in the API server (docs/protection.md): the ValidatingAdmissionPolicy and its bindings.
"$kubectl" apply --server-side -k config/admission
"$kubectl" apply -f config/samples/demo-namespaces.yaml
"$kubectl" apply -k config/samples
cat <<MSG

kube-baseline runs below (Ctrl-C stops it). In another shell:
  export KUBECONFIG=$KUBECONFIG
  $kubectl get sbl                      # mode, selected, compliant, ready
  $kubectl get sbl aks-default -o yaml  # conditions, counts, problems, exemptions
  $kubectl get networkpolicy,rolebinding -A -l app.kubernetes.io/managed-by=kube-baseline
  $kubectl get ns --show-labels         # Pod Security labels on team-a, team-b, legacy-batch
  $kubectl delete networkpolicy -n team-a restrict-instance-metadata   # watch it come back
  # as a team member (not system:masters), re-opening IMDS is refused:
  $kubectl --as dev@example.com --as-group 3f2504e0-4f89-11d3-9a0c-0305e82c3301 -n team-a create -f - <<< \
    '{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"open"},"spec":{"podSelector":{},"policyTypes":["Egress"],"egress":[{}]}}'
  $kubectl events -n default --for securitybaseline/aks-default

  # Later, to run it from the Helm chart instead (it takes over the CRD and policies applied here):
  #   helm install kube-baseline charts/kube-baseline -n kube-baseline-system --create-namespace --take-ownership

MSG
exec target/debug/kube-baseline run --metrics-addr "$metrics"
