//! The Grafana dashboard and the Prometheus alert rules (`monitoring/`), checked with a real
//! promtool built from its Go module: the rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`: each alert fires on the series meant to fire it and not on the
//! look-alikes), every dashboard query is valid PromQL, and every metric either of them uses is
//! one a running operator exports on `/metrics`.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/tools.rs"]
mod tools;

use std::collections::BTreeSet;

use harness::scenario::*;
use harness::*;
use kube_baseline::api::BaselineRoleBinding;
use serde_json::Value;
use tools::*;

/// Metrics the rules use that the operator does not export yet: each needs the src/ change named
/// here. The test fails once one is exported, so that it leaves this list.
const AWAITING: &[(&str, &str)] = &[];

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo_root().join("monitoring/dashboard.json")).unwrap())
        .expect("dashboard.json is JSON")
}

/// Every query of the dashboard, with Grafana's variables replaced by values Prometheus takes.
fn dashboard_queries() -> Vec<String> {
    let mut queries = Vec::new();
    for panel in dashboard()["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            queries.push(
                expr.replace("$__rate_interval", "5m")
                    .replace("$__interval", "1m")
                    .replace("$baseline", ".*"),
            );
        }
    }
    queries
}

fn rule_expressions() -> Vec<String> {
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo_root().join("monitoring/alerts.yaml")).unwrap()).unwrap();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect()
}

/// The metric names an expression refers to (the operator's metrics all start with kube_baseline_).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("kube_baseline_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = tool("promtool");
    let out = run_ok(&promtool, &["check", "rules", "monitoring/alerts.yaml"], None);
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");
    let out = run_ok(&promtool, &["test", "rules", "monitoring/alerts.test.yaml"], None);
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test that expects it to fire.
    let tests = std::fs::read_to_string(repo_root().join("monitoring/alerts.test.yaml")).unwrap();
    let rules = std::fs::read_to_string(repo_root().join("monitoring/alerts.yaml")).unwrap();
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(
            tests.contains(&format!("alertname: {alert}\n        exp_alerts:\n          - ")),
            "no unit test fires {alert}"
        );
    }
}

#[test]
fn a_broken_rule_fails_promtool() {
    // The checks are real: promtool refuses a rule with a syntax error, and a unit test that
    // expects an alert the series do not fire.
    let promtool = tool("promtool");
    let dir = std::env::temp_dir().join(unique("promtool"));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum(rate(kube_baseline_errors_total[5m]) > 0\n",
    )
    .unwrap();
    let (ok, ..) = run(&promtool, &["check", "rules", broken.to_str().unwrap()], None);
    assert!(!ok, "promtool accepted a syntax error");
    let rules = repo_root().join("monitoring/alerts.yaml");
    let wrong = dir.join("wrong.test.yaml");
    std::fs::write(
        &wrong,
        format!(
            "rule_files: [{}]\ntests:\n- interval: 1m\n  input_series:\n  - series: 'kube_baseline_ready{{pod=\"a\"}}'\n    values: '1x30'\n  alert_rule_test:\n  - eval_time: 20m\n    alertname: KubeBaselineNoLeader\n    exp_alerts: [{{exp_labels: {{severity: critical}}}}]\n",
            rules.display()
        ),
    )
    .unwrap();
    let (ok, ..) = run(&promtool, &["test", "rules", wrong.to_str().unwrap()], None);
    assert!(!ok, "promtool passed an alert that cannot fire");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 12, "{} queries", queries.len());
    // promtool parses them as recording rules.
    let mut rules = String::from("groups:\n- name: dashboard\n  rules:\n");
    for (i, q) in queries.iter().enumerate() {
        rules += &format!(
            "  - record: dashboard_query_{i}\n    expr: {}\n",
            serde_json::to_string(q).unwrap()
        );
    }
    let file = std::env::temp_dir().join(format!("{}.yaml", unique("dashboard-queries")));
    std::fs::write(&file, rules).unwrap();
    let out = run_ok(&tool("promtool"), &["check", "rules", file.to_str().unwrap()], None);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "kube-baseline");
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "baseline"]);
    let mut ids = BTreeSet::new();
    for panel in d["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "duplicate panel id");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        assert!(
            panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "{} has no query",
            panel["title"]
        );
        let grid = &panel["gridPos"];
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24);
    }
    // What the issue asks the dashboard to show.
    let titles: Vec<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for wanted in [
        "compliant",
        "drift",
        "repairs",
        "problems",
        "latency",
        "errors",
        "leader",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted}: {titles:?}"
        );
    }
}

/// The sample names a `/metrics` body can contain, from its `# TYPE` lines (a labelled family
/// with no sample yet still has one).
fn exported(body: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count", "_created"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

#[tokio::test]
async fn dashboard_and_rules_use_only_metrics_the_operator_exports() {
    install();
    let kubeconfig = operator_kubeconfig("operator-monitoring.kubeconfig").await;
    let operator = Operator::start("monitoring", &kubeconfig, &[]);
    eventually("a ready operator", WAIT, || async {
        (operator.try_metric("kube_baseline_ready").await? == 1.0).then_some(())
    })
    .await;
    // A labelled family shows on /metrics once it has a sample: give every one a reason to.
    // Repairs, drift and writes from converging a namespace and repairing a deleted policy;
    // an error from a binding to a role the operator may not grant (Forbidden).
    let mut s = Scenario::without_shared_operator("monitoring").await;
    let ns = s.namespace("team").await;
    let mut spec = aks_spec(&s.label);
    spec.role_bindings.push(BaselineRoleBinding {
        name: "team-root".into(),
        cluster_role: "cluster-admin".into(),
        groups: vec![GROUP_DEV.into()],
    });
    s.baseline("aks", spec).await;
    s.wait_all_objects(&ns).await;
    s.policies(&ns).delete(POLICY, &Default::default()).await.unwrap();
    s.wait_policy(&ns).await;

    let mut used = BTreeSet::new();
    for expr in dashboard_queries().iter().chain(&rule_expressions()) {
        used.extend(metric_names(expr));
    }
    assert!(used.len() >= 9, "{used:?}");
    let awaiting: BTreeSet<&str> = AWAITING.iter().map(|(name, _)| *name).collect();
    let exported = eventually("every family used has a sample", WAIT, || async {
        let (200, body) = operator.http_get("/metrics").await? else {
            return None;
        };
        let exported = exported(&body);
        used.iter()
            .all(|n| exported.contains(n) || awaiting.contains(n.as_str()))
            .then_some(exported)
    })
    .await;
    s.cleanup().await;
    for name in &used {
        if awaiting.contains(name.as_str()) {
            continue;
        }
        assert!(
            exported.contains(name),
            "{name} is used by monitoring/ but the operator does not export it: {exported:?}"
        );
    }
    for (name, change) in AWAITING {
        assert!(used.contains(*name), "{name} is awaited but no longer used");
        assert!(
            !exported.contains(*name),
            "{name} is exported now: remove it from AWAITING ({change})"
        );
    }
}
