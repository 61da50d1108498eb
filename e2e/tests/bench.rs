//! `make bench`: scale and latency of the operator on the local control plane, measured, never
//! asserted (the machines are shared and noisy). Results are printed as Markdown rows for
//! BENCHMARKS.md. Ignored by `make test`.

#[path = "../harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::scenario::*;
use harness::*;
use kube::api::{Api, DeleteParams};

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
        .unwrap_or(500);
    install();
    let kubeconfig = operator_kubeconfig("operator-bench.kubeconfig").await;
    let mut s = Scenario::without_shared_operator("bench").await;
    let foreign: bool = std::env::var("BENCH_FOREIGN_POLICIES").map_or(true, |v| v != "0");
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

    // Drift repair latency: delete one policy, time until it is back (seen by this client).
    let mut latencies = Vec::new();
    for ns in namespaces.iter().take(30) {
        let api: Api<k8s_openapi::api::networking::v1::NetworkPolicy> = Api::namespaced(s.client.clone(), ns);
        api.delete(POLICY, &DeleteParams::default()).await.unwrap();
        let t = Instant::now();
        // Poll every 2 ms: the latency measured is the operator's, not the poll interval's.
        while api.get_opt(POLICY).await.unwrap().is_none() {
            assert!(t.elapsed() < WAIT, "not repaired");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(t.elapsed());
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
        "| converge: baseline created → all compliant | {:.1} s |",
        converge.as_secs_f64()
    );
    println!(
        "| write requests to converge (objects + labels) | {writes} ({:.1} per namespace) |",
        writes / n as f64
    );
    println!("| status writes while converging | {status_writes} |");
    println!("| write requests by verb and kind | {} |", by_kind.join(", "));
    println!(
        "| drift repair latency p50 / p95 / max (30 deletes) | {:.0} / {:.0} / {:.0} ms |",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.95).as_secs_f64() * 1e3,
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
    s.cleanup().await;
}
