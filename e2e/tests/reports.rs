//! `--policy-reports`: the operator keeps a wgpolicyk8s.io/v1alpha2 PolicyReport per selected
//! namespace and a ClusterPolicyReport summary, installed from their published CRDs (Kyverno's
//! Go module). Reports flip to fail on drift and back to pass on repair, are rebuilt when
//! deleted, and a restart writes none of them again.

#[path = "../harness/mod.rs"]
mod harness;

use std::process::Command;

use harness::scenario::*;
use harness::*;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use kube_baseline::api::Mode;

fn install_report_crds() {
    let out = Command::new(repo_root().join("e2e/scripts/policyreport-crds.sh"))
        .output()
        .expect("policyreport-crds.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = String::from_utf8(out.stdout).unwrap();
    kubectl(&[
        "apply",
        "--server-side",
        "--field-manager",
        FIELD_MANAGER,
        "-f",
        dir.trim(),
    ]);
    wait_established("policyreports.wgpolicyk8s.io");
    wait_established("clusterpolicyreports.wgpolicyk8s.io");
}

fn reports(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"));
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn cluster_reports(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "wgpolicyk8s.io",
        "v1alpha2",
        "ClusterPolicyReport",
    ));
    Api::all_with(client.clone(), &ar)
}

/// The cluster summary's result for `baseline`.
async fn summary_row(client: &kube::Client, baseline: &str) -> Option<serde_json::Value> {
    let r = cluster_reports(client).get_opt("kube-baseline").await.ok()??;
    let row = r.data["results"].as_array()?.iter().find(|x| x["policy"] == baseline)?;
    Some(row.clone())
}

/// (rule, result, resource name) of every result, and the summary.
fn results(report: &DynamicObject) -> (Vec<(String, String, String)>, serde_json::Value) {
    let rows = report.data["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["rule"].as_str().unwrap_or_default().to_string(),
                r["result"].as_str().unwrap_or_default().to_string(),
                r["resources"][0]["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    (rows, report.data["summary"].clone())
}

async fn report_where(
    client: &kube::Client,
    ns: &str,
    what: &str,
    pred: impl Fn(&[(String, String, String)], &serde_json::Value) -> bool,
) -> DynamicObject {
    eventually(what, WAIT, || async {
        let r = reports(client, ns).get_opt("kube-baseline").await.ok()??;
        let (rows, summary) = results(&r);
        pred(&rows, &summary).then_some(r)
    })
    .await
}

/// PolicyReport and ClusterPolicyReport writes the operator counted.
async fn report_writes(op: &Operator) -> f64 {
    let mut n = 0.0;
    for kind in ["PolicyReport", "ClusterPolicyReport"] {
        for verb in ["apply", "delete"] {
            n += op
                .try_metric(&format!(
                    "kube_baseline_write_requests_total{{verb=\"{verb}\",kind=\"{kind}\"}}"
                ))
                .await
                .unwrap_or(0.0);
        }
    }
    n
}

#[tokio::test]
async fn policy_reports_follow_drift_and_repair_and_a_restart_writes_none() {
    install();
    install_report_crds();
    let kubeconfig = operator_kubeconfig("operator-reports.kubeconfig").await;
    let mut s = Scenario::without_shared_operator("reports").await;
    let (a, b) = (s.namespace("reports-a").await, s.namespace("reports-b").await);
    let op = Operator::start("reports", &kubeconfig, &["--policy-reports"]);
    let mut spec = aks_spec(&s.label);
    let name = s.baseline("aks", spec.clone()).await;

    // Every control passes: one result per object, with the baseline as policy.
    for ns in [&a, &b] {
        let r = report_where(&s.client, ns, "a passing report", |rows, summary| {
            rows.len() == 4 && summary["pass"] == 4
        })
        .await;
        let (rows, _) = results(&r);
        assert!(
            rows.contains(&("metadataEgress".into(), "pass".into(), POLICY.into())),
            "{rows:?}"
        );
        assert!(
            rows.contains(&("roleBindings".into(), "pass".into(), "team-dev".into())),
            "{rows:?}"
        );
        assert_eq!(r.data["results"][0]["policy"], name);
        assert_eq!(r.data["scope"]["name"].as_str(), Some(ns.as_str()));
    }
    let summary = eventually("the cluster summary", WAIT, || async {
        let row = summary_row(&s.client, &name).await?;
        (row["result"] == "pass").then_some(row)
    })
    .await;
    assert_eq!(summary["message"], "2 of 2 selected namespaces comply");

    // Audit mode and a deleted policy: the report fails that result, and only that one.
    spec.mode = Mode::Audit;
    s.apply_baseline(&name, spec.clone()).await;
    eventually("Audit mode observed", WAIT, || async {
        (s.status(&name).await?.observed_generation == Some(2)).then_some(())
    })
    .await;
    s.policies(&a).delete(POLICY, &DeleteParams::default()).await.unwrap();
    let r = report_where(&s.client, &a, "the drift fails the report", |_, summary| {
        summary["fail"] == 1
    })
    .await;
    let (rows, summary) = results(&r);
    assert!(
        rows.contains(&("metadataEgress".into(), "fail".into(), POLICY.into())),
        "{rows:?}"
    );
    assert_eq!(summary["pass"], 3);
    eventually("the summary fails", WAIT, || async {
        let row = summary_row(&s.client, &name).await?;
        (row["result"] == "fail" && row["message"].as_str()?.contains(a.as_str())).then_some(())
    })
    .await;

    // Enforce again: repaired, and the report passes again.
    spec.mode = Mode::Enforce;
    s.apply_baseline(&name, spec).await;
    report_where(&s.client, &a, "the repair passes the report", |_, summary| {
        summary["pass"] == 4 && summary["fail"] == 0
    })
    .await;

    // A report someone deletes comes back.
    reports(&s.client, &b)
        .delete("kube-baseline", &DeleteParams::default())
        .await
        .unwrap();
    report_where(&s.client, &b, "the deleted report is rebuilt", |_, summary| {
        summary["pass"] == 4
    })
    .await;

    // A restart over the same outcomes writes no report. It runs with the default, Auto: the
    // CRDs are served, so it keeps the reports (the deleted baseline's go, below).
    drop(op);
    let op = Operator::start("reports-restart", &kubeconfig, &["--policy-reports=Auto"]);
    eventually("restarted and through a full pass", WAIT, || async {
        (op.try_metric("kube_baseline_first_pass_complete").await? == 1.0).then_some(())
    })
    .await;
    stays(
        "no report written after the restart",
        std::time::Duration::from_secs(5),
        || async { report_writes(&op).await == 0.0 },
    )
    .await;
    // A deleted baseline leaves the reports: no baseline selects the namespaces any more.
    s.baselines().delete(&name, &DeleteParams::default()).await.unwrap();
    eventually("the report goes with the baseline", WAIT, || async {
        reports(&s.client, &a)
            .get_opt("kube-baseline")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    drop(op);
    s.cleanup().await;
}
