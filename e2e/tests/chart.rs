//! The Helm chart (`charts/kube-baseline`), checked with a real helm built from its Go module:
//! it lints, its copies of the CRD, policies, rules and dashboard are current, it agrees with the
//! kustomization (`config/`) on RBAC, security context, flags and admission policies, and the API
//! server accepts what it renders. (The operator running under the chart's RBAC and fence is in
//! e2e/tests/install.rs.)

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/tools.rs"]
mod tools;

use harness::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::Value;
use tools::*;

const NS: &str = "kube-baseline-system";

/// Every optional part switched on (the monitoring objects need the Prometheus Operator's CRDs,
/// so they are rendered, not applied).
const EVERYTHING: &[&str] = &[
    "--set",
    "namespace.create=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
];

#[test]
fn chart_copies_match_their_sources() {
    let (ok, out, err) = run(&repo_root().join("charts/sync.sh"), &["--check"], None);
    assert!(ok, "{err}{out}");
}

#[test]
fn chart_lints_clean_with_defaults_and_with_every_option() {
    let helm = tool("helm");
    run_ok(&helm, &["lint", "--strict", "charts/kube-baseline"], None);
    let mut args = vec!["lint", "--strict", "charts/kube-baseline"];
    args.extend_from_slice(EVERYTHING);
    run_ok(&helm, &args, None);
    // values.schema.json catches what would render a broken or unsafe installation.
    for wrong in ["replicas=0", "operator.logFormat=xml", "replica=2"] {
        let (ok, ..) = run(
            &helm,
            &["lint", "--strict", "charts/kube-baseline", "--set", wrong],
            None,
        );
        assert!(!ok, "helm lint accepted {wrong}");
    }
    // cluster-admin on the allow-list: refused with a message that says why (a schema `not`
    // would only say "'not' failed").
    let (ok, _, stderr) = run(
        &helm,
        &[
            "template",
            "x",
            "charts/kube-baseline",
            "--kube-version",
            "1.36.0",
            "--set",
            "rbac.bindAllowlist={view,cluster-admin}",
        ],
        None,
    );
    assert!(!ok, "helm template accepted cluster-admin");
    assert!(
        stderr.contains(
            "rbac.bindAllowlist must not contain cluster-admin: a SecurityBaseline could then grant cluster-admin"
        ),
        "{stderr}"
    );
}

/// The objects both installations must agree on, by (kind, namespace, name).
fn keyed(docs: &[Value], kinds: &[&str]) -> Vec<(String, String, String)> {
    let mut keys: Vec<_> = docs
        .iter()
        .filter(|d| kinds.iter().any(|k| d["kind"] == *k))
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
                d["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    keys.sort();
    keys
}

fn get<'a>(docs: &'a [Value], kind: &str, namespace: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && d["metadata"]["namespace"].as_str().unwrap_or_default() == namespace
        })
        .unwrap_or_else(|| panic!("no {kind} {namespace}/{name}"))
}

const COMPARED: &[&str] = &[
    "CustomResourceDefinition",
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// Every string with its runs of whitespace made one space. kustomize's YAML writer turns the
/// line break before a more-indented line of a folded (`>-`) scalar into two (the source and the
/// chart have one); in CEL and messages that is the same expression.
fn squeeze(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.split_whitespace().collect::<Vec<_>>().join(" ")),
        Value::Array(items) => Value::Array(items.into_iter().map(squeeze).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, squeeze(v))).collect()),
        other => other,
    }
}

/// Fails on any difference between the chart (rendered with `values`) and the kustomization
/// `dir` in what matters for security and behaviour. Labels may differ (Helm adds its own).
fn assert_agree(values: &[&str], dir: &str) {
    let mut args = vec!["--set", "namespace.create=true"];
    args.extend_from_slice(values);
    let chart: Vec<Value> = helm_template(NS, &args).into_iter().map(squeeze).collect();
    let kust: Vec<Value> = kustomize(dir).into_iter().map(squeeze).collect();
    assert_eq!(
        keyed(&chart, COMPARED),
        keyed(&kust, COMPARED),
        "the chart and {dir} install different objects"
    );
    let mut compared = 0;
    for (kind, ns, name) in keyed(&kust, COMPARED) {
        let (c, k) = (get(&chart, &kind, &ns, &name), get(&kust, &kind, &ns, &name));
        let what = format!("{kind} {ns}/{name}: chart vs {dir}");
        match kind.as_str() {
            "ClusterRole" | "Role" => assert_eq!(c["rules"], k["rules"], "{what}"),
            "ClusterRoleBinding" | "RoleBinding" => {
                assert_eq!(c["roleRef"], k["roleRef"], "{what}");
                assert_eq!(c["subjects"], k["subjects"], "{what}");
            }
            "CustomResourceDefinition" | "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding" => {
                assert_eq!(c["spec"], k["spec"], "{what}")
            }
            "Namespace" => {
                let psa = |d: &Value| {
                    d["metadata"]["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .filter(|(l, _)| l.starts_with("pod-security.kubernetes.io/"))
                        .map(|(l, v)| (l.clone(), v.clone()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(psa(c), psa(k), "{what}");
            }
            "Deployment" => {
                assert_eq!(c["spec"]["replicas"], k["spec"]["replicas"], "{what}");
                assert_eq!(
                    c["spec"]["selector"], k["spec"]["selector"],
                    "{what}: the selector is immutable"
                );
                let (cp, kp) = (&c["spec"]["template"]["spec"], &k["spec"]["template"]["spec"]);
                for field in [
                    "securityContext",
                    "serviceAccountName",
                    "automountServiceAccountToken",
                    "terminationGracePeriodSeconds",
                ] {
                    assert_eq!(cp[field], kp[field], "{what}: {field}");
                }
                // The whole container: image, flags, env, probes, resources, security context.
                assert_eq!(cp["containers"], kp["containers"], "{what}");
                let anti = |p: &Value| {
                    p["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
                        ["podAffinityTerm"]["topologyKey"]
                        .clone()
                };
                assert_eq!(anti(cp), "kubernetes.io/hostname", "{what}");
                assert_eq!(anti(cp), anti(kp), "{what}");
            }
            "Service" | "PodDisruptionBudget" => {
                for field in ["ports", "selector", "maxUnavailable"] {
                    assert_eq!(c["spec"][field], k["spec"][field], "{what}: {field}");
                }
            }
            _ => {}
        }
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} objects compared");
}

#[test]
fn chart_and_kustomization_agree_on_rbac_security_context_flags_and_policies() {
    assert_agree(&[], "config/default");
}

#[test]
fn chart_and_allow_admin_overlay_agree() {
    assert_agree(
        &["--set", "rbac.bindAllowlist={view,edit,admin}"],
        "config/overlays/allow-admin",
    );
}

#[test]
fn the_drift_check_sees_a_difference() {
    // The comparison is real: a chart rendered with a weaker security context, or another
    // allow-list, disagrees with config/default.
    for values in [
        "securityContext.readOnlyRootFilesystem=false",
        "rbac.bindAllowlist={view,edit,admin}",
        "podSecurityContext.runAsUser=0",
    ] {
        let result = std::panic::catch_unwind(|| assert_agree(&["--set", values], "config/default"));
        assert!(result.is_err(), "{values} went unnoticed");
    }
}

#[test]
fn a_narrower_allow_list_narrows_the_fences_routine_too() {
    // The fence lets the operator's routine bindings through without its rules: only roles the
    // allow-list keeps may be in it.
    for (allow, routine) in [
        ("rbac.bindAllowlist={view}", "object.roleRef.name in ['view']"),
        (
            "rbac.bindAllowlist={view,edit,admin}",
            "object.roleRef.name in ['view', 'edit']",
        ),
    ] {
        let docs = helm_template(NS, &["--set", allow]);
        let fence = find(&docs, "ValidatingAdmissionPolicy", "kube-baseline-fence").expect("the fence");
        let condition = fence["spec"]["matchConditions"][0]["expression"].as_str().unwrap();
        assert!(condition.contains(routine), "{allow}: {condition}");
    }
}

#[test]
fn chart_ships_the_alert_rules_and_dashboard_of_monitoring() {
    let docs = helm_template(NS, EVERYTHING);
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo_root().join("monitoring/alerts.yaml")).unwrap()).unwrap();
    let rule = find(&docs, "PrometheusRule", "kube-baseline").expect("PrometheusRule");
    assert_eq!(rule["spec"], rules);
    let plain: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo_root().join("monitoring/prometheusrule.yaml")).unwrap())
            .unwrap();
    assert_eq!(plain["spec"], rules, "monitoring/prometheusrule.yaml");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("monitoring/dashboard.json")).unwrap()).unwrap();
    let cm = find(&docs, "ConfigMap", "kube-baseline-dashboard").expect("dashboard ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(cm["data"]["kube-baseline.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard);
    // The ServiceMonitor selects the metrics Service by labels it carries, on its port.
    let monitor = find(&docs, "ServiceMonitor", "kube-baseline").expect("ServiceMonitor");
    let service = find(&docs, "Service", "kube-baseline-metrics").unwrap();
    for (label, value) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][label], value, "{label}");
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
}

#[tokio::test]
async fn api_server_accepts_everything_the_chart_renders() {
    install();
    let yaml = helm_template_yaml(NS, EVERYTHING);
    // `helm template | kubectl apply --dry-run=server`, less the Prometheus Operator's kinds,
    // which this control plane does not serve.
    let applicable: Vec<&str> = yaml
        .split("\n---\n")
        .filter(|doc| !doc.contains("\napiVersion: monitoring.coreos.com/v1\n"))
        .collect();
    assert!(applicable.len() >= 20, "{} objects", applicable.len());
    let out = run_ok(
        &kubectl_path(),
        &[
            "--kubeconfig",
            kubeconfig_path().to_str().unwrap(),
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "e2e-chart",
            "--dry-run=server",
            "-f",
            "-",
        ],
        Some(&applicable.join("\n---\n")),
    );
    for kind in [
        "deployment.apps",
        "validatingadmissionpolicy",
        "clusterrole",
        "configmap",
    ] {
        assert!(out.contains(kind), "{kind} not applied: {out}");
    }

    // The chart's pod passes Pod Security Admission at restricted, like config/default's.
    let admin = client().await;
    let ns = restricted_namespace_with_account(&admin, "chart-psa", "kube-baseline").await;
    let deployment = find(&documents(&yaml), "Deployment", "kube-baseline").unwrap().clone();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "manager"},
        "spec": deployment["spec"]["template"]["spec"],
    }))
    .unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    Api::<Pod>::namespaced(admin.clone(), &ns)
        .create(&dry_run, &pod)
        .await
        .expect("the chart's manager pod passes restricted");
    delete_namespace(&admin, &ns).await;
}
