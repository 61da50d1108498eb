//! Level-triggered and idempotent (DESIGN.md D3): an operator restarted over a compliant cluster
//! re-derives everything from the cluster and sends zero write requests. Writes are counted in
//! the API server's audit log, by the operator's own identity.

#[path = "../harness/mod.rs"]
mod harness;

use std::time::Duration;

use harness::scenario::*;
use harness::*;

const OPERATOR_USER: &str = "system:serviceaccount:kube-baseline-system:kube-baseline";

/// Write requests (create/update/patch/delete) the operator made after `offset` in the audit log.
fn operator_writes_since(offset: u64) -> Vec<String> {
    let log = std::fs::read(cluster_dir().join("audit.log")).expect("audit log (cluster.sh enables it)");
    let tail = String::from_utf8_lossy(&log[offset as usize..]).into_owned();
    tail.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["user"]["username"] == OPERATOR_USER && e["stage"] == "ResponseComplete")
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            )
        })
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect()
}

#[tokio::test]
async fn restart_over_a_compliant_cluster_makes_zero_write_requests() {
    install();
    let kubeconfig = operator_kubeconfig("operator-restart.kubeconfig").await;
    let mut s = Scenario::without_shared_operator("restart").await;
    let mut namespaces = Vec::new();
    for _ in 0..3 {
        namespaces.push(s.namespace("team").await);
    }
    let mut spec = aks_spec(&s.label);
    spec.pod_security.as_mut().unwrap().audit = Some(kube_baseline::api::PodSecurityLevel::Restricted);
    let baseline = s.baseline("aks", spec).await;

    let mut first = Operator::start("restart-first", &kubeconfig, &[]);
    for ns in &namespaces {
        s.wait_all_objects(ns).await;
    }
    s.wait_status(&baseline, "3 compliant", |st| st.namespaces.compliant == 3)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await; // let status and events settle
    assert!(first.terminate(Duration::from_secs(20)), "graceful shutdown");
    assert!(
        !operator_writes_since(0).is_empty(),
        "the audit log records the operator's writes"
    );

    let offset = std::fs::metadata(cluster_dir().join("audit.log")).unwrap().len();
    let second = Operator::start("restart-second", &kubeconfig, &[]);
    eventually("second operator ready", WAIT, || async {
        (second.http_get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    // Every namespace in scope reconciled at least once (this test's three among them), then
    // time for a status write to happen if any would.
    eventually("first pass over the namespaces in scope", WAIT, || async {
        (second.metric("kube_baseline_first_pass_complete").await == 1.0).then_some(())
    })
    .await;
    assert!(second.metric("kube_baseline_reconciles_total").await >= namespaces.len() as f64);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let writes = operator_writes_since(offset);
    assert!(
        writes.is_empty(),
        "a restart over a compliant cluster wrote:\n{}",
        writes.join("\n")
    );
    assert_eq!(second.metric("kube_baseline_write_requests_total").await, 0.0);
    assert_eq!(second.metric("kube_baseline_status_writes_total").await, 0.0);
    drop(second);
    s.cleanup().await;
}

/// A restart queues only the namespaces a reconcile can change (runtime::scope): one that a
/// baseline stopped selecting while no operator ran is no longer selected, and is still cleaned
/// up, because it holds the baseline's objects and the operator's labels.
#[tokio::test]
async fn a_namespace_that_stopped_matching_while_the_operator_was_down_is_cleaned_up_after_a_restart() {
    install();
    let kubeconfig = operator_kubeconfig("operator-restart-left.kubeconfig").await;
    let mut s = Scenario::without_shared_operator("restart-left").await;
    let ns = s.namespace_with("team", &[("team", "payments")]).await;
    s.baseline("aks", aks_spec(&s.label)).await;
    let mut first = Operator::start("restart-left-first", &kubeconfig, &[]);
    s.wait_all_objects(&ns).await;
    assert!(first.terminate(Duration::from_secs(20)), "graceful shutdown");

    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(s.client.clone());
    let unlabel = serde_json::json!({"metadata": {"labels": {SUITE_LABEL: null}}});
    namespaces
        .patch(
            &ns,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&unlabel),
        )
        .await
        .unwrap();

    let second = Operator::start("restart-left-second", &kubeconfig, &[]);
    eventually("the baseline's objects and labels pruned", WAIT, || async {
        let labels = s.namespace_labels(&ns).await;
        (s.policy(&ns).await.is_none()
            && s.binding(&ns, "team-dev").await.is_none()
            && s.binding(&ns, "team-read").await.is_none()
            && !labels.contains_key("kubebaseline.io/guarded")
            && !labels.keys().any(|k| k.starts_with("pod-security.kubernetes.io/")))
        .then_some(())
    })
    .await;
    assert_eq!(
        s.namespace_labels(&ns).await.get("team").map(String::as_str),
        Some("payments"),
        "a label the operator does not own stays"
    );
    eventually("first pass complete", WAIT, || async {
        (second.metric("kube_baseline_first_pass_complete").await == 1.0).then_some(())
    })
    .await;
    drop(second);
    s.cleanup().await;
}
