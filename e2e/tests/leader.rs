//! Running as a replicated Deployment: exactly one replica leads (and writes), a standby takes
//! over when the leader dies, metrics and probes tell what happens, SIGTERM hands the lease over
//! at once, and a leader that cannot confirm its lease in time stops before the standby starts.

#[path = "../harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::proxy::Proxy;
use harness::scenario::*;
use harness::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
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

/// A write the API server's audit log recorded: when the request arrived and when it was answered.
struct Write {
    received: Timestamp,
    answered: Timestamp,
}

/// The writes of the replica named `instance` (its User-Agent says it) that the audit log
/// recorded from byte `offset` on.
fn writes_by(instance: &str, offset: u64) -> Vec<Write> {
    audit_writes_by(instance, offset)
        .into_iter()
        .filter_map(|e| {
            Some(Write {
                received: e["requestReceivedTimestamp"].as_str()?.parse().ok()?,
                answered: e["stageTimestamp"].as_str()?.parse().ok()?,
            })
        })
        .collect()
}

/// The leader's link turns slow, not dead: its requests (writes and lease renewals) still land at
/// once, but every answer comes a third of a lease late, so it learns of its renewals too late
/// to vouch for them. It fences itself, and the API server has answered its last write before
/// the standby's first write arrives.
#[tokio::test]
async fn a_leader_whose_answers_come_late_stops_writing_before_the_standby_starts() {
    let _turn = ONE_AT_A_TIME.lock().await;
    install();
    let mut s = Scenario::without_shared_operator("leader-slow").await;
    let ns = s.namespace("team").await;
    let token = service_account_token(&s.client, "kube-baseline-system", "kube-baseline").await;
    let proxy = Proxy::start(api_server());
    let slow = token_kubeconfig_via(&token, "operator-leader-slow-a.kubeconfig", proxy.addr);
    let direct = token_kubeconfig(&token, "operator-leader-slow-b.kubeconfig");
    let lease = unique("slow-lease");
    let duration = format!("{LEASE_SECS}s");
    let flags = election_flags(&lease, &duration);
    let offset = std::fs::metadata(cluster_dir().join("audit.log")).unwrap().len();
    let a_name = unique("slow-leader-a");
    let a_flags = [&flags[..], &["--log-format", "json"]].concat();
    let mut a = Operator::start(&a_name, &slow, &a_flags);
    eventually("a leads", WAIT, || async {
        (a.try_metric("kube_baseline_leader").await == Some(1.0)).then_some(())
    })
    .await;
    let b_name = unique("slow-leader-b");
    let b = Operator::start(&b_name, &direct, &flags);
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    s.wait_all_objects(&ns).await;
    s.wait_status(&baseline, "compliant, generation observed", |st| {
        st.namespaces.compliant == 1 && st.observed_generation == Some(1)
    })
    .await;
    assert_eq!(b.metric("kube_baseline_leader").await, 0.0, "b is the standby");

    let slowed = Instant::now();
    proxy.delay_answers(Duration::from_millis(LEASE_SECS * 1000 / 3));
    let code = eventually("the slowed leader fences itself", Duration::from_secs(15), || {
        let code = a.exit_code();
        async move { code }
    })
    .await;
    let fenced_after = slowed.elapsed();
    assert_ne!(code, 0, "a leader that cannot confirm its lease exits non-zero");
    eventually("b leads", WAIT, || async {
        (b.try_metric("kube_baseline_leader").await == Some(1.0)).then_some(())
    })
    .await;
    let took_over = slowed.elapsed();
    // Drift that only the new leader can repair, so that it writes.
    s.policies(&ns).delete(POLICY, &DeleteParams::default()).await.unwrap();
    s.wait_policy(&ns).await;

    // Everything each wrote since it started: the writes the old leader had on the wire when
    // it was slowed land at once, but it may not get another one out (a new connection waits
    // for the server's half of its handshake).
    let a_last = writes_by(&a_name, offset)
        .iter()
        .map(|w| w.answered)
        .max()
        .expect("the old leader wrote");
    let b_first = writes_by(&b_name, offset)
        .iter()
        .map(|w| w.received)
        .min()
        .expect("the new leader wrote");
    assert!(
        a_last < b_first,
        "the old leader's last write was answered at {a_last}, after the standby's first arrived at {b_first}"
    );
    let why = a
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"].as_str().is_some_and(|m| m.starts_with("leadership lost")))
        .map(|l| l["why"].to_string());
    println!(
        "leader slowed: it exited after {fenced_after:?} ({}), the standby led after {took_over:?}; \
         {:?} passed between the old leader's last write and the new one's first",
        why.unwrap_or_default(),
        b_first.duration_since(a_last)
    );
    drop(b);
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
