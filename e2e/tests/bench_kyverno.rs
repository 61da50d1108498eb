//! `make bench-kyverno`: the operator and Kyverno v1.19.1 doing the same work on the same API
//! server, one after the other, in one run. Measured, never asserted; prints one Markdown table.
//! Ignored by `make test`.
//!
//! Order and what exists in each phase (Kyverno's cost grows with the number of namespaces, so
//! both sides see the same cluster):
//! 0. setup, nothing running: N floor namespaces get the raw-write floor's objects (the yardstick
//!    of `make bench`); N namespaces labelled for the operator and N for Kyverno are created,
//!    so 3N namespaces (plus the system ones) exist during both phases;
//! 1. the operator (Kyverno not installed yet): baseline created → all objects observed, steady
//!    state, 30 new namespaces one at a time, 30 deleted policies; then it is stopped (SIGKILL;
//!    its baseline and objects stay);
//! 2. Kyverno (installed and started now; the operator stopped): ClusterPolicy created → all
//!    objects observed in its N namespaces (`generateExisting`, `mutateExistingOnPolicyUpdate`),
//!    the same steady state, new namespaces and repairs; then stopped.
//!
//! Write requests are counted for both sides the same way: the API server's audit log, by user.

#[path = "../harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use harness::bench::*;
use harness::observer::Observer;
use harness::scenario::*;
use harness::*;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams};

const KYVERNO_USERS: [&str; 2] = [
    "system:serviceaccount:kyverno:kyverno-admission-controller",
    "system:serviceaccount:kyverno:kyverno-background-controller",
];
const KYVERNO_PROCESSES: [&str; 2] = ["kyverno-admission-controller", "kyverno-background-controller"];
/// What each side must produce per namespace (a namespace's own entry: its Pod Security labels).
const OBJECTS: [(&str, &str); 4] = [
    ("NetworkPolicy", POLICY),
    ("RoleBinding", "team-dev"),
    ("RoleBinding", "team-read"),
    ("Namespace", ""),
];
/// Events may be published up to 10 s after a change (the operator's summaries): writes count as
/// converging until then.
const SETTLE: Duration = Duration::from_secs(12);
/// The quiet interval in which steady-state writes are counted.
const QUIET: Duration = Duration::from_secs(30);
const SAMPLES: usize = 30;

fn kyverno_script(command: &str) -> bool {
    Command::new(repo_root().join("e2e/kyverno/kyverno.sh"))
        .arg(command)
        .env("CLUSTER_DIR", cluster_dir())
        .status()
        .expect("kyverno.sh runs")
        .success()
}

/// Kyverno's two processes (started by `kyverno.sh start`), stopped when dropped.
struct Kyverno;

impl Kyverno {
    fn start() -> Self {
        assert!(
            kyverno_script("start"),
            "kyverno.sh start failed (see the cluster's logs/)"
        );
        Kyverno
    }

    fn pids(&self) -> Vec<u32> {
        KYVERNO_PROCESSES
            .iter()
            .map(|p| {
                std::fs::read_to_string(cluster_dir().join(format!("kyverno/{p}.pid")))
                    .expect("Kyverno pid file")
                    .trim()
                    .parse()
                    .unwrap()
            })
            .collect()
    }
}

impl Drop for Kyverno {
    fn drop(&mut self) {
        kyverno_script("stop");
    }
}

fn cpu(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

/// Peak resident memory (`VmHWM`) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn rss_list(pids: &[u32], f: fn(u32) -> f64) -> String {
    pids.iter()
        .map(|p| format!("{:.1}", f(*p)))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Waits until the watch has reported every object of every namespace after `since`; returns
/// the instant of the last one, or, after `timeout`, how many namespaces were complete.
async fn all_observed(
    observer: &Observer,
    namespaces: &[String],
    since: Instant,
    timeout: Duration,
) -> Result<Instant, usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut latest = since;
        let mut complete = 0;
        for ns in namespaces {
            let times: Option<Vec<Instant>> = OBJECTS
                .iter()
                .map(|(kind, name)| observer.first_after(kind, ns, name, since))
                .collect();
            if let Some(times) = times {
                complete += 1;
                latest = latest.max(times.into_iter().max().unwrap_or(since));
            }
        }
        if complete == namespaces.len() {
            return Ok(latest);
        }
        if Instant::now() > deadline {
            return Err(complete);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn namespace_count(client: &kube::Client) -> usize {
    Api::<Namespace>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .items
        .len()
}

/// When the watch had reported every (kind, name) of `ns` after `since`; None after `timeout`
/// (a side that falls behind is reported, not a failed run).
async fn observed_within(
    observer: &Observer,
    ns: &str,
    objects: &[(&'static str, &str)],
    since: Instant,
    timeout: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let times: Option<Vec<Instant>> = objects
            .iter()
            .map(|(kind, name)| observer.first_after(kind, ns, name, since))
            .collect();
        if let Some(times) = times {
            return times.into_iter().max();
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Latencies observed (sorted) and how many were not observed within `WAIT`.
struct Latencies(Vec<Duration>, usize);

impl Latencies {
    fn cell(&self) -> String {
        let missed = if self.1 > 0 {
            format!(" ({} of {SAMPLES} not observed within {} s)", self.1, WAIT.as_secs())
        } else {
            String::new()
        };
        if self.0.is_empty() {
            return format!("none observed{missed}");
        }
        format!("{}{missed}", p50_p99_ms(&self.0))
    }
}

/// New namespaces labelled `label`, created one at a time: from the create request until the
/// watch has reported every object.
async fn new_namespace_latency(client: &kube::Client, observer: &Observer, label: &str) -> Latencies {
    let (mut out, mut missed) = (Vec::new(), 0);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let ns = create_namespace(client, "fresh", &[(SUITE_LABEL, label)]).await;
        match observed_within(observer, &ns, &OBJECTS, t, WAIT).await {
            Some(done) => out.push(done - t),
            None => missed += 1,
        }
    }
    out.sort();
    Latencies(out, missed)
}

/// The policy deleted in `namespaces`, one at a time, until the watch reports it again.
async fn repair_latency(client: &kube::Client, observer: &Observer, namespaces: &[String]) -> Latencies {
    let (mut out, mut missed) = (Vec::new(), 0);
    for ns in namespaces.iter().take(SAMPLES) {
        let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
        let t = Instant::now();
        if api.delete(POLICY, &DeleteParams::default()).await.is_err() {
            missed += 1; // never created: counted as not repaired
            continue;
        }
        match observed_within(observer, ns, &[("NetworkPolicy", POLICY)], t, WAIT).await {
            Some(back) => out.push(back - t),
            None => missed += 1,
        }
    }
    out.sort();
    Latencies(out, missed)
}

/// Kyverno's pending UpdateRequests.
fn update_requests() -> usize {
    kubectl(&["get", "updaterequests.kyverno.io", "-n", "kyverno", "-o", "name"])
        .lines()
        .count()
}

/// What one side measured; printed as one column.
#[derive(Default)]
struct Side {
    namespaces_present: usize,
    converge: String,
    converge_cpu: String,
    control_plane_cpu: String,
    writes: String,
    writes_by_kind: String,
    steady: String,
    fresh: String,
    repair: String,
    rss: String,
    cpu_total: String,
    extra: String,
}

fn converge_cell(result: Result<Instant, usize>, start: Instant, n: usize, floor: Duration) -> String {
    match result {
        Ok(last) => {
            let secs = (last - start).as_secs_f64();
            format!("{secs:.1} s ({:.2} × the floor)", secs / floor.as_secs_f64())
        }
        Err(complete) => format!("not within the timeout: {complete} of {n} namespaces complete"),
    }
}

#[tokio::test]
#[ignore = "benchmark: run with `make bench-kyverno`"]
async fn operator_and_kyverno_side_by_side() {
    let n = bench_namespaces();
    let kyverno_timeout = Duration::from_secs(env_number("BENCH_KYVERNO_TIMEOUT", 3600));
    install();
    let kubeconfig = operator_kubeconfig("operator-bench-kyverno.kubeconfig").await;
    let mut s = Scenario::without_shared_operator("bench-op").await;
    let client = s.client.clone();

    // 0. Setup: the floor, then both sides' namespaces, before anything runs.
    let floor_label = unique("bench-floor");
    let mut floor_namespaces = Vec::with_capacity(n);
    for _ in 0..n {
        floor_namespaces.push(create_namespace(&client, "floor", &[]).await);
    }
    // The watch that times both sides runs during the floor too, so all three pay its fan-out.
    let observer = Observer::start(&client).await;
    let cp0 = control_plane_cpu();
    let floor = raw_write_floor(
        &client,
        &floor_namespaces,
        &floor_label,
        8,
        FLOOR_MANAGED_BY,
        FloorWrites::Apply,
        None,
    )
    .await;
    let floor_control_plane = control_plane_cell(cp0, control_plane_cpu());
    let mut op_namespaces = Vec::with_capacity(n);
    for _ in 0..n {
        op_namespaces.push(s.namespace("bench").await);
    }
    let kyverno_label = unique("bench-kyverno");
    let mut kyverno_namespaces = Vec::with_capacity(n);
    for _ in 0..n {
        kyverno_namespaces.push(create_namespace(&client, "kyv", &[(SUITE_LABEL, &kyverno_label)]).await);
    }

    // 1. The operator.
    let mut op_side = Side::default();
    {
        let op = Operator::start("bench-kyverno", &kubeconfig, &[]);
        eventually("operator ready", WAIT, || async {
            (op.http_get("/readyz").await?.0 == 200).then_some(())
        })
        .await;
        let pid = op.pid();
        op_side.namespaces_present = namespace_count(&client).await;
        let rss_idle = rss_mib(pid);
        let (cpu0, cp0) = (cpu_seconds(pid), control_plane_cpu());
        let (start, wall) = (Instant::now(), SystemTime::now());
        let baseline = s.baseline("aks", aks_spec(&s.label)).await;
        let converged = all_observed(&observer, &op_namespaces, start, Duration::from_secs(600)).await;
        let (cpu1, cp1) = (cpu_seconds(pid), control_plane_cpu());
        op_side.converge = converge_cell(converged, start, n, floor);
        eventually("all compliant", Duration::from_secs(600), || async {
            s.status(&baseline)
                .await
                .filter(|st| st.namespaces.compliant == n as i64)
                .map(|_| ())
        })
        .await;
        op_side.extra = format!(
            "status says all compliant at {:.1} s; {} status writes (operator metric)",
            start.elapsed().as_secs_f64(),
            op.metric("kube_baseline_status_writes_total").await
        );
        op_side.converge_cpu = format!("{:.1} s", cpu1 - cpu0);
        op_side.control_plane_cpu = control_plane_cell(cp0, cp1);
        let rss_converged = rss_mib(pid);
        tokio::time::sleep(SETTLE).await;
        let steady_from = SystemTime::now();
        tokio::time::sleep(QUIET).await;
        let writes = Writes::of(|u| u == OPERATOR_USER, wall, steady_from);
        op_side.writes = writes.summary(Some("securitybaselines/status"));
        op_side.writes_by_kind = writes.by_kind();
        op_side.steady = Writes::of(|u| u == OPERATOR_USER, steady_from, SystemTime::now()).summary(None);
        op_side.fresh = new_namespace_latency(&client, &observer, &s.label).await.cell();
        op_side.repair = repair_latency(&client, &observer, &op_namespaces).await.cell();
        op_side.rss = format!("{rss_idle:.1} / {rss_converged:.1} / {:.1} MiB", peak_rss_mib(pid));
        op_side.cpu_total = format!("{:.1} s", cpu_seconds(pid) - cpu0);
        drop(op);
    }

    // 2. Kyverno, the operator stopped.
    let mut kyv_side = Side::default();
    {
        let kyverno = Kyverno::start();
        let pids = kyverno.pids();
        kyv_side.namespaces_present = namespace_count(&client).await;
        let rss_idle = rss_list(&pids, rss_mib);
        let (cpu0, cp0) = (cpu(&pids), control_plane_cpu());
        let per_process0: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
        let policy = std::fs::read_to_string(repo_root().join("e2e/kyverno/baseline-policy.yaml")).unwrap();
        let selector = format!("{{{SUITE_LABEL}: kyverno}}");
        assert!(policy.contains(&selector), "the policy selects {selector}");
        let policy = policy.replace(&selector, &format!("{{{SUITE_LABEL}: {kyverno_label}}}"));
        let policy_file: PathBuf = cluster_dir().join("kyverno/bench-policy.yaml");
        std::fs::write(&policy_file, policy).unwrap();
        let (start, wall) = (Instant::now(), SystemTime::now());
        kubectl(&["apply", "--server-side", "-f", policy_file.to_str().unwrap()]);
        let converged = all_observed(&observer, &kyverno_namespaces, start, kyverno_timeout).await;
        let (cpu1, cp1) = (cpu(&pids), control_plane_cpu());
        kyv_side.converge = converge_cell(converged, start, n, floor);
        // Writes count until the background controller's queue is empty.
        let drained = Instant::now();
        while update_requests() > 0 && drained.elapsed() < Duration::from_secs(600) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        kyv_side.extra = format!("UpdateRequests drained at {:.1} s", start.elapsed().as_secs_f64());
        kyv_side.converge_cpu = format!(
            "{:.1} s (admission + background: {})",
            cpu1 - cpu0,
            pids.iter()
                .zip(&per_process0)
                .map(|(p, before)| format!("{:.1}", cpu_seconds(*p) - before))
                .collect::<Vec<_>>()
                .join(" + ")
        );
        kyv_side.control_plane_cpu = control_plane_cell(cp0, cp1);
        let rss_converged = rss_list(&pids, rss_mib);
        tokio::time::sleep(SETTLE).await;
        let steady_from = SystemTime::now();
        tokio::time::sleep(QUIET).await;
        let writes = Writes::of(|u| KYVERNO_USERS.contains(&u), wall, steady_from);
        let of = |user: &str| {
            writes
                .all
                .iter()
                .filter(|w| w.user == user && w.resource != "leases")
                .count()
        };
        kyv_side.writes = format!(
            "{}; admission controller {}, background controller {}",
            writes.summary(None),
            of(KYVERNO_USERS[0]),
            of(KYVERNO_USERS[1])
        );
        kyv_side.writes_by_kind = writes.by_kind();
        kyv_side.steady = Writes::of(|u| KYVERNO_USERS.contains(&u), steady_from, SystemTime::now()).summary(None);
        kyv_side.fresh = new_namespace_latency(&client, &observer, &kyverno_label).await.cell();
        kyv_side.repair = repair_latency(&client, &observer, &kyverno_namespaces).await.cell();
        kyv_side.rss = format!("{rss_idle} / {rss_converged} / {} MiB", rss_list(&pids, peak_rss_mib));
        kyv_side.cpu_total = format!("{:.1} s", cpu(&pids) - cpu0);
        drop(kyverno);
    }

    let row = |measure: &str, op: &str, kyv: &str| println!("| {measure} | {op} | {kyv} |");
    println!("\n| measure | kube-baseline | Kyverno v1.19.1 |");
    println!("|---|---|---|");
    row(
        "configuration",
        "one process, `--concurrency 8` (default), `--status-debounce 200ms`, no leader election, \
         `config/default` RBAC; SecurityBaseline `aks_spec`: NetworkPolicy + 2 RoleBindings + Pod Security \
         labels, admission Deny (default)",
        "admission controller + background controller, out of cluster, defaults (client QPS 100 / burst 200, \
         10 generate workers, GOMEMLIMIT 90 % of host memory), ConfigMaps of install-latest-testing.yaml \
         unchanged, ServiceAccounts bound to cluster-admin; ClusterPolicy e2e/kyverno/baseline-policy.yaml: \
         3 generate rules (synchronize, generateExisting), Pod Security labels by mutate (inline) and \
         mutateExistingOnPolicyUpdate",
    );
    row(
        "selected namespaces / namespaces in the cluster during the phase",
        &format!("{n} / {}", op_side.namespaces_present),
        &format!("{n} / {}", kyv_side.namespaces_present),
    );
    let floor_cell = format!("{:.1} s", floor.as_secs_f64());
    row(
        &format!(
            "raw-write floor: {} objects applied by a tight client (concurrency 8), measured once",
            4 * n
        ),
        &floor_cell,
        &floor_cell,
    );
    row(
        "converge: baseline / ClusterPolicy created → every object observed by a watch",
        &op_side.converge,
        &kyv_side.converge,
    );
    row("… done by its own account", &op_side.extra, &kyv_side.extra);
    row(
        "process CPU while converging",
        &op_side.converge_cpu,
        &kyv_side.converge_cpu,
    );
    row(
        "kube-apiserver / etcd / kube-controller-manager CPU during the floor",
        &floor_control_plane,
        &floor_control_plane,
    );
    row(
        "kube-apiserver / etcd / kube-controller-manager CPU while converging",
        &op_side.control_plane_cpu,
        &kyv_side.control_plane_cpu,
    );
    row(
        &format!(
            "write requests while converging, audit log (until {} s after; Leases apart)",
            SETTLE.as_secs()
        ),
        &op_side.writes,
        &kyv_side.writes,
    );
    row("… by kind and verb", &op_side.writes_by_kind, &kyv_side.writes_by_kind);
    row(
        &format!("write requests in steady state ({} s, no changes)", QUIET.as_secs()),
        &op_side.steady,
        &kyv_side.steady,
    );
    row(
        &format!("new namespace → every object observed, p50 / p99 ({SAMPLES}, one at a time)"),
        &op_side.fresh,
        &kyv_side.fresh,
    );
    row(
        &format!("deleted NetworkPolicy → observed again, p50 / p99 ({SAMPLES})"),
        &op_side.repair,
        &kyv_side.repair,
    );
    row("RSS idle / after converging / peak", &op_side.rss, &kyv_side.rss);
    row(
        "process CPU over the whole phase",
        &op_side.cpu_total,
        &kyv_side.cpu_total,
    );
    // No cleanup: `make bench-kyverno` runs on its own control plane and stops it.
}
