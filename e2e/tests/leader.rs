//! Running as a replicated Deployment: exactly one replica leads (and writes), a standby takes
//! over when the leader dies, metrics and probes tell what happens, SIGTERM hands the lease over
//! at once. (A leader cut off or slowed down is in e2e/tests/faults.rs.)

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

/// Which replica leads, once both answer and exactly one says it leads.
async fn leader_of<'a>(a: &'a Operator, b: &'a Operator) -> Option<(&'a Operator, &'a Operator)> {
    match (
        a.try_metric("kube_baseline_leader").await?,
        b.try_metric("kube_baseline_leader").await?,
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
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;

    let a = Operator::start("leader-a", &kubeconfig, &flags);
    let b = Operator::start("leader-b", &kubeconfig, &flags);
    let (leader, standby) = eventually("exactly one leader", WAIT, || leader_of(&a, &b)).await;
    let (leader_name, standby_name) = (leader.name.clone(), standby.name.clone());
    s.wait_all_objects(&ns).await;
    // It stays that way for longer than a lease, and only the leader reconciles.
    stays("exactly one leader", Duration::from_secs(LEASE_SECS + 2), || async {
        leader_of(&a, &b).await.is_some_and(|(l, _)| l.name == leader_name)
    })
    .await;
    let (mut leader, standby) = if leader_name == a.name { (a, b) } else { (b, a) };
    assert_eq!(standby.name, standby_name);
    assert!(leader.metric("kube_baseline_reconciles_total").await > 0.0);
    assert_eq!(
        standby.metric("kube_baseline_reconciles_total").await,
        0.0,
        "a standby does not reconcile"
    );
    // A standby is ready: it can take over, and a rollout must not wait for it.
    assert_eq!(standby.http_get("/readyz").await.map(|r| r.0), Some(200));

    // The leader crashes; drift happens while nobody leads; the standby repairs it.
    let repairs = "kube_baseline_repairs_total{kind=\"NetworkPolicy\"}";
    assert_eq!(standby.metric(repairs).await, 0.0);
    leader.kill();
    let killed_at = Instant::now();
    s.policies(&ns).delete(POLICY, &DeleteParams::default()).await.unwrap();
    s.wait_policy(&ns).await;
    let took = killed_at.elapsed();
    eventually("the standby counted the repair", WAIT, || async {
        (standby.metric(repairs).await >= 1.0).then_some(())
    })
    .await;
    // The bound: within the lease duration plus a few seconds (generous for 2 busy cores).
    assert!(
        took < Duration::from_secs(LEASE_SECS + 10),
        "standby repaired after {took:?}"
    );
    assert_eq!(standby.metric("kube_baseline_leader").await, 1.0);
    eprintln!("failover: drift repaired {took:?} after the leader was killed (lease {LEASE_SECS}s)");
    drop(leader);

    // /readyz is ready after sync; a forced drift increases the repair counter.
    eventually("new leader ready", WAIT, || async {
        (standby.http_get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(standby.metric("kube_baseline_ready").await, 1.0);
    let before = standby.metric(repairs).await;
    s.policies(&ns).delete(POLICY, &DeleteParams::default()).await.unwrap();
    eventually("repair counted", WAIT, || async {
        (standby.metric(repairs).await > before).then_some(())
    })
    .await;
    assert!(
        standby
            .metric("kube_baseline_drift_detected_total{kind=\"NetworkPolicy\"}")
            .await
            >= 2.0
    );
    assert!(standby.metric("kube_baseline_reconcile_duration_seconds_count").await > 0.0);
    // The per-baseline gauge appears with the first status computation after takeover.
    let compliant = format!("kube_baseline_namespaces{{baseline=\"{baseline}\",state=\"compliant\"}}");
    eventually("namespaces gauge", WAIT, || async {
        (standby.metric(&compliant).await == 1.0).then_some(())
    })
    .await;
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
        (only.try_metric("kube_baseline_leader").await? == 1.0).then_some(())
    })
    .await;
    eventually("leader synced", WAIT, || async {
        (only.http_get("/readyz").await?.0 == 200).then_some(())
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
        (next.try_metric("kube_baseline_leader").await? == 1.0).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "takeover waited for expiry"
    );
    let _ = leases.delete(&lease, &DeleteParams::default()).await;
}

#[tokio::test]
async fn sigterm_right_after_start_exits_cleanly_within_the_grace_period() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (kubeconfig, _) = setup("operator-early-term.kubeconfig").await;
    let mut op = Operator::start("early-term", &kubeconfig, &[]);
    eventually("serving", WAIT, || async { op.http_get("/healthz").await.map(|_| ()) }).await;
    // Caches may not have synced yet: shutdown must not wait for a sync that will not come.
    assert!(op.terminate(Duration::from_secs(20)), "exit 0 after SIGTERM");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_rust_log_filters_them() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (kubeconfig, _) = setup("operator-json.kubeconfig").await;
    let op = Operator::start_with_env(
        "json-logs",
        &kubeconfig,
        &["--log-format", "json"],
        &[("RUST_LOG", "warn,kube_baseline=info")],
    );
    eventually("operator ready", WAIT, || async {
        (op.http_get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let lines: Vec<serde_json::Value> = op
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let synced = lines
        .iter()
        .find(|l| l["message"] == "caches synced")
        .expect("a 'caches synced' line");
    assert_eq!(synced["level"], "INFO");
    assert!(synced["timestamp"].is_string());
    // RUST_LOG keeps kube_runtime's INFO lines ("reconciling object") out.
    assert!(
        lines
            .iter()
            .all(|l| l["level"] != "DEBUG" && l["target"].as_str().is_none_or(|t| !t.starts_with("kube_runtime")))
    );
}
