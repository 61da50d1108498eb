//! `make bench`: scale and latency of the operator on the local control plane, measured, never
//! asserted (the machines are shared and noisy). Results are printed as Markdown rows for
//! BENCHMARKS.md. Ignored by `make test`.
//!
//! The yardstick is the **raw-write floor**: this client applying exactly the objects the
//! operator writes (same builders, server-side apply, the operator's concurrency), straight to
//! the same API server, with no operator logic. Operator ÷ floor holds across noisy machines.

#[path = "../harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::observer::Observer;
use harness::scenario::*;
use harness::*;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube_baseline::core::{desired, objects};

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11..13)
        .map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The floor's objects carry a managed-by value of their own (same size): with the operator's,
/// it would cache them as its own objects (of a baseline that does not exist), and its memory
/// would count twice the objects it manages.
fn floor_labels(meta: &mut kube::api::ObjectMeta) {
    if let Some(labels) = meta.labels.as_mut() {
        labels.insert(objects::MANAGED_BY_LABEL.into(), "kube-baseline-floor".into());
    }
}

/// The raw-write floor: the objects the baseline wants in each of `namespaces`, built by the
/// operator's own builders (without its ownerReference) and server-side applied by this client,
/// `concurrency` namespaces at a time. Returns how long it took.
async fn raw_write_floor(client: &kube::Client, namespaces: &[String], label: &str, concurrency: usize) -> Duration {
    let baseline = kube_baseline::api::SecurityBaseline::new("floor", aks_spec(label));
    let valid = desired::validate(&baseline).unwrap();
    let wanted = desired::wanted_objects(&baseline, &valid);
    let owner = desired::Owner {
        name: "floor".into(),
        uid: String::new(),
        mode: kube_baseline::api::Mode::Enforce,
    };
    let params = PatchParams::apply("bench-floor").force();
    let start = Instant::now();
    futures::stream::iter(namespaces)
        .for_each_concurrent(concurrency, |ns| {
            let (client, wanted, owner, params) = (client.clone(), wanted.clone(), owner.clone(), params.clone());
            async move {
                for (_, key, content) in wanted {
                    match (key, content) {
                        (desired::ObjectKey::NetworkPolicy(name), desired::Content::NetworkPolicy(spec)) => {
                            let mut np = objects::network_policy(ns, &name, &spec, &owner);
                            np.metadata.owner_references = None;
                            floor_labels(&mut np.metadata);
                            Api::<NetworkPolicy>::namespaced(client.clone(), ns)
                                .patch(&name, &params, &Patch::Apply(&np))
                                .await
                                .unwrap();
                        }
                        (
                            desired::ObjectKey::RoleBinding(name),
                            desired::Content::RoleBinding { role_ref, subjects },
                        ) => {
                            let mut rb = objects::role_binding(ns, &name, &role_ref, &subjects, &owner);
                            rb.metadata.owner_references = None;
                            floor_labels(&mut rb.metadata);
                            Api::<RoleBinding>::namespaced(client.clone(), ns)
                                .patch(&name, &params, &Patch::Apply(&rb))
                                .await
                                .unwrap();
                        }
                        (_, desired::Content::PodSecurityLabels(labels)) => {
                            let patch = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": ns, "labels": labels}});
                            Api::<Namespace>::all(client.clone())
                                .patch(ns, &params, &Patch::Apply(&patch))
                                .await
                                .unwrap();
                        }
                        _ => unreachable!("content matches its key"),
                    }
                }
            }
        })
        .await;
    start.elapsed()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test]
#[ignore = "benchmark: run with `make bench`"]
async fn scale_and_repair_latency() {
    let n: usize = std::env::var("BENCH_NAMESPACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    install();
    let kubeconfig = operator_kubeconfig("operator-bench.kubeconfig").await;
    let mut s = Scenario::without_shared_operator("bench").await;
    let foreign: bool = std::env::var("BENCH_FOREIGN_POLICIES").map_or(true, |v| v != "0");
    // The floor first, in namespaces no baseline selects, on the same API server.
    let floor_label = unique("bench-floor");
    let mut floor_namespaces = Vec::with_capacity(n);
    for _ in 0..n {
        floor_namespaces.push(create_namespace(&s.client, "floor", &[]).await);
    }
    let floor = raw_write_floor(&s.client, &floor_namespaces, &floor_label, 8).await;
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
    // Convergence: from the baseline's creation to every namespace compliant.
    let op = Operator::start("bench", &kubeconfig, &[]);
    eventually("operator ready", WAIT, || async {
        (op.http_get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let rss_before = rss_mib(op.pid());
    let cpu_before = cpu_seconds(op.pid());
    let start = Instant::now();
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let long = Duration::from_secs(600);
    eventually("all compliant", long, || async {
        s.status(&baseline)
            .await
            .filter(|st| st.namespaces.compliant == n as i64)
            .map(|_| ())
    })
    .await;
    let converge = start.elapsed();
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
    let op = Operator::start("bench-restart", &kubeconfig, &[]);
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
        (op.metric("kube_baseline_reconciles_total").await >= total_ns as f64).then_some(())
    })
    .await;
    let restart_pass = start.elapsed();
    let restart_writes = op.metric("kube_baseline_write_requests_total").await;

    println!(
        "\n| namespaces (foreign policies each) | {n} ({}) |",
        if foreign { 3 } else { 0 }
    );
    println!(
        "| raw-write floor: the same objects applied by a tight client (concurrency 8) | {:.1} s |",
        floor.as_secs_f64()
    );
    println!(
        "| converge: baseline created → all compliant | {:.1} s ({:.2} × the floor) |",
        converge.as_secs_f64(),
        converge.as_secs_f64() / floor.as_secs_f64()
    );
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
    println!("| status writes while converging | {status_writes} |");
    println!("| write requests by verb and kind | {} |", by_kind.join(", "));
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
    println!("| operator RSS idle-synced / after converging | {rss_before:.1} / {rss_after:.1} MiB |");
    println!(
        "| restart: ready / full pass over {total_ns} namespaces | {:.2} s / {:.2} s |",
        restart_ready.as_secs_f64(),
        restart_pass.as_secs_f64()
    );
    println!("| write requests after restart | {restart_writes} |");
    drop(op);
    // Deleted only now: the namespace controller's work must not overlap the measurements.
    for ns in &floor_namespaces {
        delete_namespace(&s.client, ns).await;
    }
    s.cleanup().await;
}
