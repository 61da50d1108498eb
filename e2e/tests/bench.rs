//! `make bench`: scale and latency of the operator on the local control plane, measured, never
//! asserted (the machines are shared and noisy). Results are printed as Markdown rows for
//! BENCHMARKS.md. Ignored by `make test`.
//!
//! The yardstick is the **raw-write floor**: this client writing exactly the objects the
//! operator writes (same builders, the operator's concurrency), straight to the same API server,
//! with no operator logic, twice: server-side applied, and created (POST) as the operator creates
//! what nobody has yet. Operator ÷ floor holds across noisy machines. The run ends with a
//! summary: both ratios, kube-apiserver CPU per write for the floors and for the operator, the
//! tax on every other writer (`foreign_writer_tax`) and the operator's CPU per namespace.

#[path = "../harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant, SystemTime};

use harness::bench::*;
use harness::observer::Observer;
use harness::scenario::*;
use harness::*;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams};

/// NetworkPolicies a team wrote, which the operator must watch (bypass detection) but not keep
/// whole: one ingress-only, one egress to pods only (both dropped from its cache) and one egress
/// rule to `0.0.0.0/0 except` IMDS on 443 (kept as a one-rule summary).
fn foreign_policies(ns: &str) -> Vec<k8s_openapi::api::networking::v1::NetworkPolicy> {
    let specs = [
        serde_json::json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "lb"}}}], "ports": [{"port": 8080}]}]}),
        serde_json::json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
        serde_json::json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}],
                        "ports": [{"port": 443, "protocol": "TCP"}]}]}),
    ];
    specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": format!("team-{i}"), "namespace": ns}, "spec": spec}),
            )
            .unwrap()
        })
        .collect()
}

/// The Event recorder publishes a summary at the end of a 10 s window: writes are counted as
/// converging until it has closed.
const EVENT_WINDOW: Duration = Duration::from_secs(12);
/// The operator logs as it ships (its default `--log-filter`), not as the tests run it (debug,
/// and kube-runtime's line per reconcile: 18 MB of log for 10,000 namespaces).
const SHIPPED_LOGGING: &[(&str, &str)] = &[("RUST_LOG", "info,kube_client=warn,kube_runtime=warn")];
/// How long a quiet interval lasts (steady state, after a restart).
const QUIET: Duration = Duration::from_secs(30);

#[tokio::test]
#[ignore = "benchmark: run with `make bench`"]
async fn scale_and_repair_latency() {
    let n = bench_namespaces();
    install();
    let kubeconfig = operator_kubeconfig("operator-bench.kubeconfig").await;
    let mut s = Scenario::without_shared_operator("bench").await;
    let foreign: bool = std::env::var("BENCH_FOREIGN_POLICIES").map_or(true, |v| v != "0");
    // The floor's namespaces, which no baseline selects, on the same API server.
    let floor_label = unique("bench-floor");
    let mut floor_namespaces = Vec::with_capacity(n);
    for _ in 0..n {
        floor_namespaces.push(create_namespace(&s.client, "floor", &[]).await);
    }
    let mut namespaces = Vec::with_capacity(n);
    for _ in 0..n {
        let ns = s.namespace("bench").await;
        if foreign {
            let api: Api<k8s_openapi::api::networking::v1::NetworkPolicy> = Api::namespaced(s.client.clone(), &ns);
            for p in foreign_policies(&ns) {
                api.create(&Default::default(), &p).await.unwrap();
            }
        }
        namespaces.push(ns);
    }
    // The floor runs once every namespace exists, so that it and the convergence meet an API
    // server holding the same objects (measured first, it met a cluster of N namespaces, the
    // convergence one of 2 N and their policies).
    // The baseline exists from here on, selecting no namespace until the convergence starts: the
    // API server then runs the protection policy (`config/admission`, one parameter per baseline)
    // on the floor's writes as on the operator's, and the floor's objects are owned by it as the
    // operator's are (an ownerReference each, which the garbage collector tracks).
    let baseline = s.baseline("aks", aks_spec(&unique("bench-none"))).await;
    let owner = owner_of(&s.client, &baseline).await;
    // Each phase starts on a quiet API server: kube-controller-manager's answer to the new
    // namespaces (a ServiceAccount and a ConfigMap each) is not any phase's cost.
    settle_apiserver().await;
    let (cp0, client0) = (control_plane_cpu(), cpu_seconds(std::process::id()));
    let profile = profile_apiserver(&s.client, "floor");
    let floor = raw_write_floor(
        &s.client,
        &floor_namespaces,
        &floor_label,
        8,
        FLOOR_MANAGED_BY,
        FloorWrites::Apply,
        Some(owner.clone()),
    )
    .await;
    let cp1 = control_plane_cpu();
    let floor_cpu = (control_plane_cell(cp0, cp1), cpu_seconds(std::process::id()) - client0);
    let floor_writes = (floor_writes_per_namespace() * n) as f64;
    let floor_ms_per_write = (cp1[0] - cp0[0]) * 1e3 / floor_writes;
    if let Some(p) = profile {
        p.await.unwrap();
    }
    // The creating floor: the same objects created (POST), as the operator creates what nobody
    // has yet, in N more namespaces.
    let mut created_namespaces = Vec::with_capacity(n);
    for _ in 0..n {
        created_namespaces.push(create_namespace(&s.client, "floor-created", &[]).await);
    }
    settle_apiserver().await;
    let policies0 = admission_policy_seconds(&s.client).await;
    let cp0 = control_plane_cpu();
    let profile = profile_apiserver(&s.client, "floor-created");
    let created_floor = raw_write_floor(
        &s.client,
        &created_namespaces,
        &floor_label,
        8,
        FLOOR_MANAGED_BY,
        FloorWrites::Create,
        Some(owner.clone()),
    )
    .await;
    let cp1 = control_plane_cpu();
    let created_cpu = control_plane_cell(cp0, cp1);
    let created_ms_per_write = (cp1[0] - cp0[0]) * 1e3 / floor_writes;
    let created_policy_ms = (admission_policy_seconds(&s.client).await - policies0) * 1e3 / floor_writes;
    if let Some(p) = profile {
        p.await.unwrap();
    }
    floor_namespaces.extend(created_namespaces);
    // Convergence: from the baseline selecting the namespaces to every one compliant.
    let op = Operator::start_with_env("bench", &kubeconfig, &[], SHIPPED_LOGGING);
    eventually("operator ready", WAIT, || async {
        (op.http_get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    settle_apiserver().await;
    let rss_before = rss_mib(op.pid());
    let (cpu_before, cp0) = (cpu_seconds(op.pid()), control_plane_cpu());
    let page = metrics_page(&s.client).await;
    let (requests_before, policies0) = (request_totals(&page), admission_policy_total(&page));
    let start = Instant::now();
    let start_wall = SystemTime::now();
    let profile = profile_apiserver(&s.client, "converge");
    s.baseline("aks", aks_spec(&s.label)).await;
    let long = Duration::from_secs(600);
    eventually("all compliant", long, || async {
        s.status(&baseline)
            .await
            .filter(|st| st.namespaces.compliant == n as i64)
            .map(|_| ())
    })
    .await;
    let converge = start.elapsed();
    let cp1 = control_plane_cpu();
    let converge_control_plane = control_plane_cell(cp0, cp1);
    let converge_apiserver_cpu = cp1[0] - cp0[0];
    let page = metrics_page(&s.client).await;
    let converge_reads = reads_between(&requests_before, &request_totals(&page));
    let converge_policy_seconds = admission_policy_total(&page) - policies0;
    if let Some(p) = profile {
        p.await.unwrap();
    }
    let writes = op.metric("kube_baseline_write_requests_total").await;
    let status_writes = op.metric("kube_baseline_status_writes_total").await;
    // Writes by verb and kind: every object should be written once.
    let by_kind: Vec<String> = op
        .http_get("/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("kube_baseline_write_requests_total{"))
        .map(|l| l.trim_start_matches("kube_baseline_write_requests_total").to_string())
        .collect();
    let rss_after = rss_mib(op.pid());
    let cpu = cpu_seconds(op.pid()) - cpu_before;
    let events = s.events(&baseline).await.len();
    // Every write request the operator made, from the API server's audit log: while converging
    // (until the 10 s Event summary window after the last change has closed), then over 30 quiet
    // seconds with nothing changing.
    tokio::time::sleep(EVENT_WINDOW).await;
    let steady_from = SystemTime::now();
    tokio::time::sleep(QUIET).await;
    let rss_steady = rss_mib(op.pid());
    let converge_writes = Writes::of(|u| u == OPERATOR_USER, start_wall, steady_from);
    let steady_writes = Writes::of(|u| u == OPERATOR_USER, steady_from, SystemTime::now());

    // Latencies from the client's write to a watch reporting the result.
    let observer = Observer::start(&s.client).await;
    // A new namespace, created one at a time while all the others exist: every object present.
    let mut fresh = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let ns = s.namespace("fresh").await;
        let objects = [
            ("NetworkPolicy", POLICY),
            ("RoleBinding", "team-dev"),
            ("RoleBinding", "team-read"),
            ("Namespace", ""),
        ];
        let done = observer.all_after(&ns, &objects, t, WAIT).await;
        fresh.push(done - t);
    }
    fresh.sort();
    // Drift repair: a deleted policy until the watch reports it again.
    let mut latencies = Vec::new();
    for ns in namespaces.iter().take(30) {
        let api: Api<NetworkPolicy> = Api::namespaced(s.client.clone(), ns);
        let t = Instant::now();
        api.delete(POLICY, &DeleteParams::default()).await.unwrap();
        let back = observer.all_after(ns, &[("NetworkPolicy", POLICY)], t, WAIT).await;
        latencies.push(back - t);
    }
    latencies.sort();

    // Bypass detection latency: an allow-all egress policy (created as the admin, whom admission
    // lets through) until the baseline's status reports the namespace bypassed (status debounce
    // of 200 ms included), then removed until it is compliant again.
    let mut detect = Vec::new();
    for ns in namespaces.iter().take(10) {
        let api: Api<k8s_openapi::api::networking::v1::NetworkPolicy> = Api::namespaced(s.client.clone(), ns);
        let open: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "allow-all-egress"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
        }))
        .unwrap();
        let t = Instant::now();
        api.create(&Default::default(), &open).await.unwrap();
        eventually("bypass reported", WAIT, || async {
            s.status(&baseline)
                .await
                .filter(|st| st.namespaces.bypassed == 1)
                .map(|_| ())
        })
        .await;
        detect.push(t.elapsed());
        api.delete("allow-all-egress", &DeleteParams::default()).await.unwrap();
        eventually("compliant again", WAIT, || async {
            s.status(&baseline)
                .await
                .filter(|st| st.namespaces.bypassed == 0)
                .map(|_| ())
        })
        .await;
    }
    detect.sort();

    // Restart: time to ready and to the first full pass over a compliant cluster.
    drop(op);
    let start = Instant::now();
    let restart_wall = SystemTime::now();
    let op = Operator::start_with_env("bench-restart", &kubeconfig, &[], SHIPPED_LOGGING);
    eventually("restarted ready", WAIT, || async {
        (op.http_get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let restart_ready = start.elapsed();
    let total_ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(s.client.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len();
    eventually("full pass", long, || async {
        (op.metric("kube_baseline_first_pass_complete").await == 1.0).then_some(())
    })
    .await;
    let restart_pass = start.elapsed();
    let restart_reconciles = op.metric("kube_baseline_reconciles_total").await;
    let restart_writes = op.metric("kube_baseline_write_requests_total").await;
    tokio::time::sleep(QUIET).await;
    let rss_restarted = rss_mib(op.pid());
    let restart_audited = Writes::of(|u| u == OPERATOR_USER, restart_wall, SystemTime::now());

    println!(
        "\n| namespaces (foreign policies each) | {n} ({}) |",
        if foreign { 3 } else { 0 }
    );
    println!(
        "| raw-write floor: the same objects (owned by the baseline, which selects nothing yet) applied by a tight client (concurrency 8) | {:.1} s |",
        floor.as_secs_f64()
    );
    println!(
        "| … kube-apiserver / etcd / kube-controller-manager CPU; the benchmark client's CPU | {}; {:.1} s |",
        floor_cpu.0, floor_cpu.1
    );
    println!(
        "| converge: baseline selects the namespaces → all compliant | {:.1} s ({:.2} × the floor) |",
        converge.as_secs_f64(),
        converge.as_secs_f64() / floor.as_secs_f64()
    );
    println!("| … kube-apiserver / etcd / kube-controller-manager CPU | {converge_control_plane} |");
    println!("| … read requests to the API server by every client (its request counter) | {converge_reads} |");
    println!(
        "| operator CPU while converging | {cpu:.1} s ({:.1} ms per namespace) |",
        cpu * 1e3 / n as f64
    );
    println!("| Events written for the baseline while converging | {events} |");
    println!(
        "| new namespace → every object present, p50 / p99 (30, watch-observed) | {:.0} / {:.0} ms |",
        percentile(&fresh, 0.5).as_secs_f64() * 1e3,
        percentile(&fresh, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "| write requests to converge (objects + labels) | {writes} ({:.1} per namespace) |",
        writes / n as f64
    );
    println!(
        "| status writes while converging (operator metric / audit log) | {status_writes} / {} |",
        converge_writes.count("securitybaselines/status")
    );
    println!(
        "| write requests by verb and kind (operator metric) | {} |",
        by_kind.join(", ")
    );
    println!(
        "| all write requests while converging, audit log (until {} s after compliant) | {} |",
        EVENT_WINDOW.as_secs(),
        converge_writes.summary(Some("securitybaselines/status"))
    );
    println!("| … by kind and verb | {} |", converge_writes.by_kind());
    println!(
        "| write requests in steady state, {} s with no changes (audit log) | {} |",
        QUIET.as_secs(),
        steady_writes.summary(Some("securitybaselines/status"))
    );
    println!(
        "| deleted policy → repaired, p50 / p99 / max (30, watch-observed) | {:.0} / {:.0} / {:.0} ms |",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "| bypass reported in status p50 / max (10 allow-all policies) | {:.0} / {:.0} ms |",
        percentile(&detect, 0.5).as_secs_f64() * 1e3,
        detect.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "| operator RSS idle-synced / when compliant / after {} s of steady state | {rss_before:.1} / {rss_after:.1} / {rss_steady:.1} MiB |",
        (EVENT_WINDOW + QUIET).as_secs()
    );
    println!(
        "| restart: ready / full pass ({restart_reconciles} reconciles: the namespaces in scope of {total_ns}) | {:.2} s / {:.2} s |",
        restart_ready.as_secs_f64(),
        restart_pass.as_secs_f64()
    );
    println!("| write requests after restart (operator metric: objects and labels) | {restart_writes} |");
    println!(
        "| operator RSS after a restart over the compliant cluster ({} s after its full pass) | {rss_restarted:.1} MiB |",
        QUIET.as_secs()
    );
    println!(
        "| all write requests from restart to {} s after the full pass (audit log) | {} |",
        QUIET.as_secs(),
        restart_audited.summary(Some("securitybaselines/status"))
    );
    if restart_audited.total_without_leases() > 0 {
        println!("| … by kind and verb | {} |", restart_audited.by_kind());
    }
    drop(op);
    drop(observer);
    // The tax on every other writer, with this baseline and with nine more (selecting nothing).
    let tax_per: usize = env_number("BENCH_TAX_NAMESPACES", 300);
    let (tax, tax_namespaces) = foreign_writer_tax(&s.client, 1, &[0, 9], false, tax_per, tax_rounds(3)).await;
    print_tax(&tax, tax_per);
    let taxes: Vec<String> = tax[1..]
        .iter()
        .map(|t| format!("{:+.1} % ({})", t.tax(&tax[0]), t.what))
        .collect();

    // The figures the goals are about, in one place.
    let operator_ms_per_write = converge_apiserver_cpu * 1e3 / writes.max(1.0);
    println!("\n| summary, {n} namespaces | measured |");
    println!("|---|---|");
    println!(
        "| converge against the creating floor / the server-side-apply floor | {:.2} × ({:.1} s against {:.1} s) / {:.2} × ({:.1} s) |",
        converge.as_secs_f64() / created_floor.as_secs_f64(),
        converge.as_secs_f64(),
        created_floor.as_secs_f64(),
        converge.as_secs_f64() / floor.as_secs_f64(),
        floor.as_secs_f64()
    );
    println!(
        "| kube-apiserver CPU per write: creating floor (admin) / apply floor (admin) / the operator converging (its token; every request it made, reads and status included, over its {writes} writes) | {created_ms_per_write:.2} / {floor_ms_per_write:.2} / {operator_ms_per_write:.2} ms ({:.2} × the creating floor's) |",
        operator_ms_per_write / created_ms_per_write
    );
    println!(
        "| … of which in the admission policies, by the API server's clock: creating floor / the operator converging | {created_policy_ms:.3} / {:.3} ms |",
        converge_policy_seconds * 1e3 / writes.max(1.0)
    );
    println!("| … kube-apiserver / etcd / kube-controller-manager CPU, creating floor | {created_cpu} |");
    println!(
        "| operator CPU per namespace converged | {:.2} ms ({cpu:.1} s) |",
        cpu * 1e3 / n as f64
    );
    println!("| operator RSS when compliant / after steady state | {rss_after:.1} / {rss_steady:.1} MiB |");
    println!(
        "| tax on a foreign writer's write outside every baseline's namespaces | {} |",
        taxes.join("; ")
    );
    floor_variants(&s.client, n, &kubeconfig, &owner, converge, &mut floor_namespaces).await;
    // Deleted only now: the namespace controller's work must not overlap the measurements.
    for ns in floor_namespaces.iter().chain(&tax_namespaces) {
        delete_namespace(&s.client, ns).await;
    }
    s.cleanup().await;
}

/// The floor variants `BENCH_FLOOR_VARIANTS` names (`all`, some of them comma-separated, or
/// `none`, the default: the creating floor is measured before the convergence), run after the operator has stopped, each in N fresh
/// namespaces: the policy and bindings created (POST) rather than applied, as the operator writes
/// objects nobody has yet (`created`, printed with the convergence's ratio to it); the floor
/// again (`again`); then with one thing changed, to tell what the API server pays for each
/// (printed with its CPU): without ownerReferences (`unowned`), while a client watches what is
/// written (`watched`), as the operator's ServiceAccount token (`operator`: RBAC, the
/// RoleBinding bind check, the fence), and as that token with the fence's binding removed for the
/// run (`operator-unfenced`).
const FLOOR_VARIANTS: [&str; 6] = [
    "created",
    "again",
    "unowned",
    "watched",
    "operator",
    "operator-unfenced",
];

async fn floor_variants(
    admin: &kube::Client,
    n: usize,
    kubeconfig: &std::path::Path,
    owner: &kube_baseline::core::desired::Owner,
    converge: Duration,
    namespaces: &mut Vec<String>,
) {
    let asked = std::env::var("BENCH_FLOOR_VARIANTS").unwrap_or_else(|_| "none".into());
    let variants: Vec<&str> = FLOOR_VARIANTS
        .into_iter()
        .filter(|v| asked == "all" || asked.split(',').any(|a| a.trim() == *v))
        .collect();
    if variants.is_empty() {
        return;
    }
    let label = unique("bench-floor");
    let operator = client_of(kubeconfig).await;
    let managed = kube_baseline::core::objects::MANAGED_BY_VALUE;
    // The token may write a baseline's objects only where that baseline selects (the fence):
    // its variants' namespaces carry the baseline's labels (the operator has stopped by now).
    let selecting: Vec<(String, String)> = Api::<kube_baseline::api::SecurityBaseline>::all(admin.clone())
        .get(&owner.name)
        .await
        .unwrap()
        .spec
        .namespace_selector
        .and_then(|s| s.match_labels)
        .unwrap_or_default()
        .into_iter()
        .collect();
    for variant in variants {
        let start = namespaces.len();
        let labels: Vec<(&str, &str)> = if variant.starts_with("operator") {
            selecting.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
        } else {
            Vec::new()
        };
        for _ in 0..n {
            namespaces.push(create_namespace(admin, "floor", &labels).await);
        }
        let mut observer = None;
        let owned = Some(owner.clone());
        let writes = if variant == "created" {
            FloorWrites::Create
        } else {
            FloorWrites::Apply
        };
        let (client, managed_by, owner, what) = match variant {
            "created" => (
                admin,
                FLOOR_MANAGED_BY,
                owned,
                "the floor with the policy and bindings created (POST), as the operator creates them",
            ),
            "again" => (admin, FLOOR_MANAGED_BY, owned, "the floor again"),
            "unowned" => (admin, FLOOR_MANAGED_BY, None, "… without ownerReferences"),
            "watched" => {
                observer = Some(harness::observer::Observer::start(admin).await);
                (
                    admin,
                    FLOOR_MANAGED_BY,
                    owned,
                    "… while a client watches NetworkPolicies, RoleBindings, Namespaces",
                )
            }
            "operator" => (&operator, managed, owned, "… as the operator's ServiceAccount (token)"),
            _ => {
                kubectl(&[
                    "delete",
                    "validatingadmissionpolicybinding",
                    "kube-baseline-fence",
                    "kube-baseline-fence-per-baseline",
                ]);
                // The API server drops a policy binding when its informer sees the delete.
                tokio::time::sleep(Duration::from_secs(3)).await;
                (
                    &operator,
                    managed,
                    owned,
                    "… as the operator's ServiceAccount, fence binding removed",
                )
            }
        };
        let (cp0, client0) = (control_plane_cpu(), cpu_seconds(std::process::id()));
        let profile = profile_apiserver(admin, &format!("floor-{variant}"));
        let took = raw_write_floor(client, &namespaces[start..], &label, 8, managed_by, writes, owner).await;
        let control_plane = control_plane_cell(cp0, control_plane_cpu());
        let client_cpu = cpu_seconds(std::process::id()) - client0;
        if let Some(p) = profile {
            p.await.unwrap();
        }
        drop(observer);
        if variant == "operator-unfenced" {
            install();
        }
        let ratio = if variant == "created" {
            format!(
                " (convergence {:.2} × this)",
                converge.as_secs_f64() / took.as_secs_f64()
            )
        } else {
            String::new()
        };
        println!(
            "| floor variant: {what} | {:.1} s{ratio}; kube-apiserver / etcd / kube-controller-manager CPU {control_plane}; client {client_cpu:.1} s |",
            took.as_secs_f64()
        );
    }
}

/// What the API server spends on one write, by how the floor's objects are written (created or
/// server-side applied) and by whom (the admin, or the operator's ServiceAccount token under its
/// RBAC and fence): `BENCH_STYLE_NAMESPACES` (default 500) fresh namespaces per style and round,
/// the four styles interleaved over `BENCH_TAX_ROUNDS` (default 5) rounds on one cluster, medians compared, so that the drift of a shared
/// machine falls on all of them alike. Each namespace gets a policy, two bindings and its Pod
/// Security labels (always applied), as the operator writes them. The operator is not running.
/// `make bench-writes`, on a control plane of its own: the namespace controller's deleting its
/// namespaces afterwards must not overlap another benchmark's measurements.
#[tokio::test]
#[ignore = "benchmark: run with `make bench-writes`"]
async fn cost_of_one_write_by_style_and_identity() {
    install();
    let kubeconfig = operator_kubeconfig("operator-bench-styles.kubeconfig").await;
    let operator = client_of(&kubeconfig).await;
    let mut s = Scenario::without_shared_operator("styles").await;
    // First the tax on everybody else's writes, while no other baseline exists.
    let tax_per: usize = env_number("BENCH_TAX_NAMESPACES", 300);
    let (tax, mut namespaces) = foreign_writer_tax(&s.client, 0, &[1, 10, 50], true, tax_per, tax_rounds(5)).await;
    // The namespaces carry the baseline's label (no operator runs to act on it): the fence lets
    // the token write a baseline's objects only where that baseline selects.
    let selected = unique("styles");
    let baseline = s.baseline("aks", aks_spec(&selected)).await;
    let owner = owner_of(&s.client, &baseline).await;
    let per: usize = env_number("BENCH_STYLE_NAMESPACES", 500);
    let label = unique("bench-floor");
    let operators = kube_baseline::core::objects::MANAGED_BY_VALUE;
    // Any identity but system:masters pays for authorization (RBAC, and the escalation check on
    // a RoleBinding); this one holds cluster-admin, so what the operator's token costs beyond it
    // is kube-baseline's.
    let non_superuser = foreign_writer(&s.client).await;
    let styles = [
        (
            "server-side apply, as the admin",
            &s.client,
            FloorWrites::Apply,
            FLOOR_MANAGED_BY,
        ),
        ("create, as the admin", &s.client, FloorWrites::Create, FLOOR_MANAGED_BY),
        (
            "server-side apply, as the operator's token",
            &operator,
            FloorWrites::Apply,
            operators,
        ),
        (
            "create, as the operator's token",
            &operator,
            FloorWrites::Create,
            operators,
        ),
        (
            "create, as a cluster-admin ServiceAccount (not system:masters)",
            &non_superuser,
            FloorWrites::Create,
            FLOOR_MANAGED_BY,
        ),
    ];
    let mut per_write: Vec<Vec<f64>> = vec![Vec::new(); styles.len()];
    let mut in_policies: Vec<Vec<f64>> = vec![Vec::new(); styles.len()];
    // The tax's namespaces stay until the end: deleting them would load the API server under
    // the styles measured next.
    let rounds = tax_rounds(5);
    for _round in 0..rounds {
        for (i, (_, client, writes, managed_by)) in styles.iter().enumerate() {
            let start = namespaces.len();
            for _ in 0..per {
                namespaces.push(create_namespace(&s.client, "style", &[(SUITE_LABEL, selected.as_str())]).await);
            }
            // kube-controller-manager's answer to the new namespaces (ServiceAccount, root CA
            // ConfigMap) must not fall on the measured batch.
            settle_apiserver().await;
            let policies0 = admission_policy_seconds(&s.client).await;
            let cp0 = control_plane_cpu();
            raw_write_floor(
                client,
                &namespaces[start..],
                &label,
                8,
                managed_by,
                *writes,
                Some(owner.clone()),
            )
            .await;
            let spent = control_plane_cpu()[0] - cp0[0];
            let writes = (floor_writes_per_namespace() * per) as f64;
            per_write[i].push(spent * 1e3 / writes);
            in_policies[i].push((admission_policy_seconds(&s.client).await - policies0) * 1e3 / writes);
        }
    }
    println!(
        "\n| write style ({per} namespaces × {} writes, per round) | kube-apiserver CPU per write, each of {rounds} rounds | median | in the admission policies by the API server's clock, median per write |",
        floor_writes_per_namespace()
    );
    println!("|---|---|---|---|");
    for (((what, ..), ms), policies) in styles.iter().zip(&per_write).zip(&in_policies) {
        let each: Vec<String> = ms.iter().map(|m| format!("{m:.2}")).collect();
        println!(
            "| {what} | {} ms | {:.2} ms | {:.3} ms |",
            each.join(" / "),
            median(ms),
            median(policies)
        );
    }
    println!(
        "| the operator's token against the admin (medians): create / server-side apply | {:.2} × / {:.2} × | | |",
        median(&per_write[3]) / median(&per_write[1]),
        median(&per_write[2]) / median(&per_write[0])
    );
    println!(
        "| create: a cluster-admin ServiceAccount against the admin / the operator's token against that ServiceAccount (medians) | {:.2} × / {:.2} × | | |",
        median(&per_write[4]) / median(&per_write[1]),
        median(&per_write[3]) / median(&per_write[4])
    );
    print_tax(&tax, tax_per);
    for ns in &namespaces {
        delete_namespace(&s.client, ns).await;
    }
    s.cleanup().await;
}

#[test]
fn the_admission_policy_time_is_the_validating_admission_policy_plugin_s_summed_over_operations() {
    let page = "apiserver_admission_controller_admission_duration_seconds_sum{name=\"ValidatingAdmissionPolicy\",operation=\"CREATE\",rejected=\"false\",type=\"validate\"} 1.5\n\
        apiserver_admission_controller_admission_duration_seconds_sum{name=\"ValidatingAdmissionPolicy\",operation=\"UPDATE\",rejected=\"true\",type=\"validate\"} 0.25\n\
        apiserver_admission_controller_admission_duration_seconds_count{name=\"ValidatingAdmissionPolicy\",operation=\"CREATE\",rejected=\"false\",type=\"validate\"} 99\n\
        apiserver_admission_controller_admission_duration_seconds_sum{name=\"NamespaceLifecycle\",operation=\"CREATE\",rejected=\"false\",type=\"validate\"} 7\n";
    assert_eq!(admission_policy_total(page), 1.75);
    assert_eq!(admission_policy_total(""), 0.0);
}

#[test]
fn request_counts_are_summed_by_verb_and_resource_and_only_reads_are_reported() {
    let page = |get_pods: u32, list_ns: u32| {
        format!(
            "# HELP apiserver_request_total Counter of apiserver requests\n\
             apiserver_request_total{{code=\"200\",component=\"apiserver\",resource=\"pods\",subresource=\"\",verb=\"GET\"}} {get_pods}\n\
             apiserver_request_total{{code=\"404\",component=\"apiserver\",resource=\"pods\",subresource=\"\",verb=\"GET\"}} 1\n\
             apiserver_request_total{{code=\"200\",component=\"apiserver\",resource=\"namespaces\",subresource=\"\",verb=\"LIST\"}} {list_ns}\n\
             apiserver_request_total{{code=\"200\",component=\"apiserver\",resource=\"securitybaselines\",subresource=\"status\",verb=\"PATCH\"}} 9\n\
             apiserver_request_duration_seconds_count{{resource=\"pods\",verb=\"GET\"}} 99\n"
        )
    };
    let before = request_totals(&page(3, 2));
    assert_eq!(
        before[&("GET".to_string(), "pods".to_string())],
        4.0,
        "codes are summed"
    );
    assert_eq!(
        before[&("PATCH".to_string(), "securitybaselines/status".to_string())],
        9.0
    );
    let after = request_totals(&page(10, 2));
    assert_eq!(
        reads_between(&before, &after),
        "GET pods 7",
        "unchanged and write counters are left out"
    );
    assert_eq!(reads_between(&after, &after), "none");
}
