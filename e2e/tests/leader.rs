//! Running as a replicated Deployment: exactly one replica leads (and writes), a standby takes
//! over when the leader dies, metrics and probes tell what happens, and SIGTERM hands the lease
//! over at once.

#[path = "../harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::scenario::*;
use harness::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};

const LEASE_SECS: u64 = 4;

/// Every operator here reconciles the whole cluster, so the tests take turns: otherwise one
/// test's operator could repair the drift another test expects its standby to repair.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Installs, and returns a kubeconfig for the operator's ServiceAccount and a fresh lease name.
async fn setup(kubeconfig_name: &str) -> (std::path::PathBuf, String) {
    install();
    (operator_kubeconfig(kubeconfig_name).await, unique("lease"))
}

fn election_flags<'a>(lease: &'a str, duration: &'a str) -> [&'a str; 7] {
    [
        "--leader-elect",
        "--lease-name",
        lease,
        "--lease-namespace",
        "kube-baseline-system",
        "--lease-duration",
        duration,
    ]
}

async fn leader_of<'a>(a: &'a Operator, b: &'a Operator) -> Option<(&'a Operator, &'a Operator)> {
    match (
        a.metric("kube_baseline_leader").await,
        b.metric("kube_baseline_leader").await,
    ) {
        (1.0, 0.0) => Some((a, b)),
        (0.0, 1.0) => Some((b, a)),
        _ => None,
    }
}

#[tokio::test]
async fn standby_takes_over_when_the_leader_is_killed_and_repairs_drift() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (kubeconfig, lease) = setup("operator-leader.kubeconfig").await;
    let duration = format!("{LEASE_SECS}s");
    let flags = election_flags(&lease, &duration);
    let mut s = Scenario::without_shared_operator("leader").await;
    let ns = s.namespace("team").await;
    s.baseline("aks", aks_spec(&s.label)).await;

    let a = Operator::start("leader-a", &kubeconfig, &flags);
    let b = Operator::start("leader-b", &kubeconfig, &flags);
    let (leader, standby) = eventually("exactly one leader", WAIT, || leader_of(&a, &b)).await;
    s.wait_all_objects(&ns).await;
    // A standby is ready (it can take over), and writes nothing.
    assert_eq!(standby.http_get("/readyz").await.map(|r| r.0), Some(200));
    assert_eq!(standby.metric("kube_baseline_write_requests_total").await, 0.0);
    let (leader_name, standby_name) = (leader.name.clone(), standby.name.clone());
    let (mut leader, standby) = if leader_name == a.name { (a, b) } else { (b, a) };
    assert_eq!(standby.name, standby_name);

    // The leader crashes; drift happens while nobody leads.
    leader.kill();
    let killed_at = Instant::now();
    s.policies(&ns).delete(POLICY, &DeleteParams::default()).await.unwrap();
    s.wait_policy(&ns).await;
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(LEASE_SECS + 10),
        "standby repaired after {took:?}"
    );
    assert_eq!(standby.metric("kube_baseline_leader").await, 1.0);
    eprintln!("failover: drift repaired {took:?} after the leader was killed (lease {LEASE_SECS}s)");
    drop(leader);

    // Metrics: a forced drift increases the repair counter; /readyz is ready after sync.
    eventually("new leader ready", WAIT, || async {
        (standby.http_get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let sample = "kube_baseline_repairs_total{kind=\"NetworkPolicy\"}";
    let before = standby.metric(sample).await;
    s.policies(&ns).delete(POLICY, &DeleteParams::default()).await.unwrap();
    eventually("repair counted", WAIT, || async {
        (standby.metric(sample).await > before).then_some(())
    })
    .await;
    // The per-baseline gauges appear with the first status computation after takeover.
    for name in [
        "kube_baseline_reconciles_total",
        "kube_baseline_reconcile_duration_seconds_bucket",
        "kube_baseline_drift_detected_total",
        "kube_baseline_namespaces{",
        "kube_baseline_leader",
        "kube_baseline_ready",
    ] {
        eventually(&format!("/metrics shows {name}"), WAIT, || async {
            standby
                .http_get("/metrics")
                .await
                .filter(|(_, body)| body.contains(name))
                .map(|_| ())
        })
        .await;
    }
    s.cleanup().await;
}

#[tokio::test]
async fn sigterm_releases_the_lease_for_an_immediate_takeover() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (kubeconfig, lease) = setup("operator-sigterm.kubeconfig").await;
    // A long lease: a takeover sooner than its expiry proves the lease was released.
    let flags = election_flags(&lease, "60s");
    let mut only = Operator::start("sigterm", &kubeconfig, &flags);
    eventually("leadership", WAIT, || async {
        (only.metric("kube_baseline_leader").await == 1.0).then_some(())
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client().await, "kube-baseline-system");
    let held = leases.get(&lease).await.unwrap();
    assert_eq!(
        held.spec.as_ref().and_then(|s| s.holder_identity.as_deref()),
        Some("sigterm")
    );

    assert!(only.terminate(Duration::from_secs(20)), "graceful exit on SIGTERM");
    let released = leases.get(&lease).await.unwrap();
    let holder = released.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    assert!(holder.is_empty(), "lease still held by {holder:?} after shutdown");

    let next = Operator::start("sigterm-next", &kubeconfig, &flags);
    let started = Instant::now();
    eventually("next replica leads", Duration::from_secs(30), || async {
        (next.metric("kube_baseline_leader").await == 1.0).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "takeover waited for expiry"
    );
    let _ = leases.delete(&lease, &DeleteParams::default()).await;
}
