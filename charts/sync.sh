#!/usr/bin/env bash
# The chart carries copies of files whose source of truth is elsewhere in the repository (Helm
# packages only the chart's own folder): the CRD, the admission policy, the fence, the alert
# rules and the dashboard. This script writes the copies, and the plain PrometheusRule manifest
# made from monitoring/alerts.yaml.
#
#   sync.sh          write them (`make chart-sync`)
#   sync.sh --check  fail when any differs from its source (`make check-chart`, in `make test`)
set -euo pipefail
cd "$(dirname "$0")/.."
chart=charts/kube-baseline
check=0
[ "${1:-}" = --check ] && check=1

# The PrometheusRule manifest: monitoring/alerts.yaml's groups under spec.
prometheus_rule() {
  cat <<'HEAD'
# Generated from monitoring/alerts.yaml by charts/sync.sh: edit that file, then `make chart-sync`.
# The alert rules as a Prometheus Operator object (`kubectl apply -n <prometheus namespace> -f`);
# the chart's prometheusRule.enabled renders the same rules.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: kube-baseline
  labels:
    app.kubernetes.io/name: kube-baseline
spec:
HEAD
  grep -v '^#' monitoring/alerts.yaml | sed -e 's/^\(.\)/  \1/'
}

stale=0
put() { # source-command target
  local target=$1 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$target"; then rm -f "$tmp"; return; fi
  if [ $check = 1 ]; then
    echo "$target is stale:" >&2
    diff -u "$target" "$tmp" >&2 || true
    rm -f "$tmp"
    stale=1
  else
    mv "$tmp" "$target"
    echo "wrote $target"
  fi
}

put "$chart/crds/securitybaselines.kubebaseline.io.yaml" <crds/securitybaselines.kubebaseline.io.yaml
put "$chart/files/admission-protection.yaml" <config/admission/policy/protection.yaml
put "$chart/files/fence-policy.yaml" <config/fence/policy.yaml
put "$chart/files/fence-system-namespaces.yaml" <config/fence/system-namespaces.yaml
put "$chart/files/fence-baselines.yaml" <config/fence/baselines.yaml
put "$chart/files/fence-per-baseline.yaml" <config/fence/per-baseline.yaml
put "$chart/files/team-visibility.yaml" <config/components/team-visibility/roles.yaml
put "$chart/files/alerts.yaml" <monitoring/alerts.yaml
put "$chart/files/dashboard.json" <monitoring/dashboard.json
prometheus_rule | put monitoring/prometheusrule.yaml

if [ $stale = 1 ]; then
  echo "the chart's copies are stale: run 'make chart-sync' and commit" >&2
  exit 1
fi
