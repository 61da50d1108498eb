//! Faults (issue 8): the control plane's components are killed and restarted under a running
//! operator; every selected namespace ends compliant, nothing unmanaged is touched, and recovery
//! takes seconds, not minutes. These tests stop shared components, so they run one at a time and
//! each starts its own operator.

#[path = "../harness/mod.rs"]
mod harness;

use std::process::Command;
use std::time::{Duration, Instant};

use harness::scenario::*;
use harness::*;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams};

/// One fault at a time: they take down what every test uses.
static FAULT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long after the API answers again the operator may take to handle what changed. Generous:
/// the point is seconds, not the two minutes of silence the issue reported.
const RECOVERY: Duration = Duration::from_secs(30);

fn cluster(args: &[&str]) {
    let out = Command::new(repo_root().join("e2e/controlplane/cluster.sh"))
        .args(args)
        .output()
        .expect("cluster.sh runs");
    assert!(
        out.status.success(),
        "cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills `component`, keeps it down for `outage`, starts it again; returns when it answers.
fn outage(component: &str, outage: Duration) -> Instant {
    cluster(&["kill", component]);
    std::thread::sleep(outage);
    cluster(&["start", component]);
    Instant::now()
}

async fn operator(name: &str) -> Operator {
    install();
    let kubeconfig = operator_kubeconfig(&format!("operator-{name}.kubeconfig")).await;
    let op = Operator::start(name, &kubeconfig, &[]);
    eventually("operator ready", WAIT, || async {
        (op.http_get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    op
}

/// After `component` was down for `down`, a namespace created and a policy deleted right after
/// it is back are both handled within [`RECOVERY`]; returns how long that took.
async fn survives(component: &str, down: Duration) -> Duration {
    let _one = FAULT.lock().await;
    let op = operator(&format!("fault-{component}")).await;
    let mut s = Scenario::without_shared_operator(&format!("fault-{component}")).await;
    let before = s.namespace("before").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    s.wait_all_objects(&before).await;

    let back = tokio::task::spawn_blocking({
        let component = component.to_string();
        move || outage(&component, down)
    })
    .await
    .unwrap();
    // A fresh client: the old one's connections died with the API server.
    s.client = client().await;
    let after = s.namespace("after").await;
    let policies: Api<NetworkPolicy> = Api::namespaced(s.client.clone(), &before);
    policies.delete(POLICY, &DeleteParams::default()).await.unwrap();
    eventually("new namespace protected and drift repaired", RECOVERY, || async {
        (s.policy(&after).await.is_some() && s.policy(&before).await.is_some()).then_some(())
    })
    .await;
    let took = back.elapsed();
    s.wait_all_objects(&after).await;
    s.wait_status(&baseline, "both compliant", |st| st.namespaces.compliant == 2)
        .await;
    println!("{component} down {down:?}: recovered {took:?} after it answered again");
    drop(op);
    s.cleanup().await;
    took
}

#[tokio::test]
async fn an_api_server_restart_costs_seconds() {
    survives("kube-apiserver", Duration::from_secs(6)).await;
}

#[tokio::test]
async fn an_etcd_restart_costs_seconds() {
    survives("etcd", Duration::from_secs(6)).await;
}
