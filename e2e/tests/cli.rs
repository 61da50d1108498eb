//! The subcommands beside the operator (docs/gitops.md): `audit` judges a live cluster
//! read-only and tells pipelines by exit code; `render` prints exactly what the operator then
//! writes; their errors say what to do.

#[path = "../harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use harness::scenario::*;
use harness::*;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams};
use kube_baseline::api::{Mode, SecurityBaseline, SecurityBaselineSpec};

fn cli(args: &[&str]) -> Output {
    cli_with(&kubeconfig_path(), args)
}

fn cli_with(kubeconfig: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kube-baseline"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run kube-baseline")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A baseline file, as a GitOps repository would hold it.
fn baseline_file(name: &str, spec: &SecurityBaselineSpec) -> PathBuf {
    let path = cluster_dir().join(format!("{}.yaml", unique(name)));
    let b = SecurityBaseline::new(name, spec.clone());
    std::fs::write(&path, serde_saphyr::to_string(&b).unwrap()).unwrap();
    path
}

fn audit_json(baseline: &str) -> (Option<i32>, serde_json::Value) {
    let out = cli(&["audit", "--baseline", baseline, "-o", "json"]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("audit JSON: {}", text(&out)));
    (out.status.code(), json)
}

fn state_of<'a>(report: &'a serde_json::Value, ns: &str) -> &'a str {
    report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["namespace"] == ns)
        .and_then(|r| r["state"].as_str())
        .unwrap_or("<absent>")
}

#[tokio::test]
async fn audit_passes_a_compliant_cluster_and_fails_after_drift_in_audit_mode() {
    let mut s = Scenario::new("cli-audit").await;
    let (a, b) = (s.namespace("audit-a").await, s.namespace("audit-b").await);
    let mut spec = aks_spec(&s.label);
    let name = s.baseline("aks", spec.clone()).await;
    s.wait_all_objects(&a).await;
    s.wait_all_objects(&b).await;
    let (code, report) = eventually("audit exits 0", WAIT, || async {
        let (code, report) = audit_json(&name);
        (code == Some(0)).then_some((code, report))
    })
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(report["compliant"], true);
    assert_eq!(
        (state_of(&report, &a), state_of(&report, &b)),
        ("compliant", "compliant")
    );

    // Audit mode: the operator only reports; a deleted policy stays deleted and audit fails.
    spec.mode = Mode::Audit;
    s.apply_baseline(&name, spec.clone()).await;
    eventually("baseline is in Audit mode in the cache", WAIT, || async {
        let st = s.status(&name).await?;
        (st.observed_generation == Some(2)).then_some(())
    })
    .await;
    s.policies(&a).delete(POLICY, &DeleteParams::default()).await.unwrap();
    let (code, report) = eventually("audit sees the drift", WAIT, || async {
        let (code, report) = audit_json(&name);
        (code == Some(1)).then_some((code, report))
    })
    .await;
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(state_of(&report, &a), "drifted");
    assert_eq!(state_of(&report, &b), "compliant");
    let row = report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["namespace"] == a)
        .unwrap();
    let problem = &row["problems"][0];
    assert_eq!(problem["object"], format!("NetworkPolicy/{POLICY}"));
    assert_eq!(problem["reason"], "Drift");
    assert!(problem["message"].as_str().unwrap().starts_with("missing"), "{problem}");

    // The table says the same to a person, and the same baseline from a file gives the same answer.
    let table = cli(&["audit", "--baseline", &name]);
    let shown = String::from_utf8_lossy(&table.stdout);
    assert_eq!(table.status.code(), Some(1), "{}", text(&table));
    assert!(
        shown.contains(&a) && shown.contains("drifted") && shown.contains("NOT COMPLIANT"),
        "{shown}"
    );
    let file = baseline_file(&name, &spec);
    let from_file = cli(&["audit", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(from_file.status.code(), Some(1), "{}", text(&from_file));
    let report: serde_json::Value = serde_json::from_slice(&from_file.stdout).unwrap();
    assert_eq!(state_of(&report, &a), "drifted");
    s.cleanup().await;
}

#[tokio::test]
async fn audit_wait_blocks_until_the_operator_has_repaired() {
    let mut s = Scenario::new("cli-wait").await;
    let ns = s.namespace("wait").await;
    let mut spec = aks_spec(&s.label);
    spec.mode = Mode::Audit;
    let name = s.baseline("aks", spec.clone()).await;
    // Audit mode writes nothing: the namespace stays without its objects.
    eventually("audit reports the namespace", WAIT, || async {
        (state_of(&audit_json(&name).1, &ns) == "drifted").then_some(())
    })
    .await;

    // A pipeline that waits too little fails (exit 1) after about its deadline.
    let started = Instant::now();
    let short = cli(&["audit", "--baseline", &name, "--wait", "3s"]);
    assert_eq!(short.status.code(), Some(1), "{}", text(&short));
    assert!(started.elapsed() >= Duration::from_secs(3));

    // A pipeline that waits long enough returns 0 once the operator has made it true.
    let mut waiting = Command::new(env!("CARGO_BIN_EXE_kube-baseline"))
        .args(["audit", "--baseline", &name, "--wait", "90s"])
        .env("KUBECONFIG", kubeconfig_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "audit --wait returned while drifted"
    );
    spec.mode = Mode::Enforce;
    s.apply_baseline(&name, spec).await;
    let out = tokio::task::spawn_blocking(move || waiting.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        s.policy(&ns).await.is_some(),
        "the operator repaired before audit returned"
    );
    s.cleanup().await;
}

#[tokio::test]
async fn render_prints_exactly_what_the_operator_then_writes() {
    let mut s = Scenario::new("cli-render").await;
    let ns = s.namespace("render").await;
    let name = format!("render-{}", s.label);
    let spec = aks_spec(&s.label);
    let file = baseline_file(&name, &spec);
    let labels = format!("{SUITE_LABEL}={}", s.label);
    let out = cli(&[
        "render",
        "-f",
        file.to_str().unwrap(),
        "--namespace",
        &ns,
        "--labels",
        &labels,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rendered = String::from_utf8(out.stdout).unwrap();
    assert!(rendered.contains(&format!("#   selected by {name}")), "{rendered}");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&rendered).unwrap();
    let docs: Vec<serde_json::Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["NetworkPolicy", "RoleBinding", "RoleBinding", "Namespace"]);

    // Before the baseline exists, --diff says everything is to be created (exit 1).
    let diff = cli(&["render", "-f", file.to_str().unwrap(), "--diff", "--namespace", &ns]);
    assert_eq!(diff.status.code(), Some(1), "{}", text(&diff));
    assert!(String::from_utf8_lossy(&diff.stdout).contains(&format!("NetworkPolicy/{POLICY} in {ns}: create")));

    assert_eq!(s.baseline("render", spec).await, name);
    s.wait_all_objects(&ns).await;
    let live_np = serde_json::to_value(s.policy(&ns).await.unwrap()).unwrap();
    assert_eq!(live_np["spec"], docs[0]["spec"]);
    for (k, v) in docs[0]["metadata"]["labels"].as_object().unwrap() {
        assert_eq!(&live_np["metadata"]["labels"][k], v);
    }
    for doc in &docs[1..3] {
        let rb_name = doc["metadata"]["name"].as_str().unwrap();
        let live = serde_json::to_value(s.binding(&ns, rb_name).await.unwrap()).unwrap();
        assert_eq!(live["roleRef"], doc["roleRef"]);
        assert_eq!(live["subjects"], doc["subjects"]);
    }
    let live_labels = s.namespace_labels(&ns).await;
    for (k, v) in docs[3]["metadata"]["labels"].as_object().unwrap() {
        assert_eq!(live_labels.get(k).map(String::as_str), v.as_str(), "{k}");
    }
    let diff = cli(&["render", "-f", file.to_str().unwrap(), "--diff", "--namespace", &ns]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));
    assert!(String::from_utf8_lossy(&diff.stdout).contains("0 change(s)"));
    s.cleanup().await;
}

#[tokio::test]
async fn render_diff_of_an_audit_baseline_shows_what_enforce_would_write() {
    let mut s = Scenario::new("cli-audit-diff").await;
    let ns = s.namespace("audited").await;
    let mut spec = aks_spec(&s.label);
    spec.mode = kube_baseline::api::Mode::Audit;
    let name = s.baseline("audit", spec.clone()).await;
    s.wait_status(&name, "the namespace reported", |st| st.namespaces.selected == 1)
        .await;
    let file = baseline_file(&name, &spec);
    let diff = cli(&["render", "-f", file.to_str().unwrap(), "--diff", "--namespace", &ns]);
    // Nothing is written by an Audit baseline, so everything differs, and a CI gate on --diff
    // sees it.
    assert_eq!(diff.status.code(), Some(1), "{}", text(&diff));
    let out = String::from_utf8_lossy(&diff.stdout);
    assert!(
        out.contains(&format!(
            "NetworkPolicy/{POLICY} in {ns} (Audit baseline {name}: not written; what Enforce would write): create"
        )),
        "{out}"
    );
    assert!(!out.contains("0 change(s)"), "{out}");
    s.cleanup().await;
}

#[tokio::test]
async fn errors_say_what_to_do() {
    let client = client().await;
    // No kubeconfig at all.
    let out = cli_with(std::path::Path::new("/nonexistent/kubeconfig"), &["audit"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kubeconfig"),
        "{}",
        text(&out)
    );

    // An identity without the read rights audit needs.
    let ns = create_namespace(&client, "cli-rbac", &[]).await;
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": "nobody"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&Default::default(), &sa)
        .await
        .unwrap();
    let token = service_account_token(&client, &ns, "nobody").await;
    let kubeconfig = token_kubeconfig(&token, &format!("{}.kubeconfig", unique("nobody")));
    let out = cli_with(&kubeconfig, &["audit"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RBAC denied") && err.contains("list securitybaselines"),
        "{err}"
    );

    // A file that is not a baseline.
    let path = cluster_dir().join(format!("{}.yaml", unique("not-a-baseline")));
    std::fs::write(&path, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").unwrap();
    let out = cli(&["render", "-f", path.to_str().unwrap(), "--namespace", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a SecurityBaseline") && err.contains("ConfigMap"),
        "{}",
        text(&out)
    );
    delete_namespace(&client, &ns).await;
}
