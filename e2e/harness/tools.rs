//! The packaging tools built from their Go modules into the cache (`e2e/tools/build.sh`), and the
//! manifests they render: `helm template` of the chart, `kubectl kustomize` of config/.
//!
//! Included by the test binaries that need it (`#[path = "../harness/tools.rs"] mod tools;`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use super::harness::{kubectl_path, repo_root};

/// The path of a cached tool (`helm` or `promtool`), built on first use.
pub fn tool(name: &str) -> PathBuf {
    static PATHS: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let paths = PATHS.get_or_init(Default::default);
    let mut paths = paths.lock().unwrap();
    paths
        .entry(name.to_string())
        .or_insert_with(|| {
            let out = Command::new(repo_root().join("e2e/tools/build.sh"))
                .arg(name)
                .output()
                .expect("e2e/tools/build.sh runs");
            assert!(
                out.status.success(),
                "building {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        })
        .clone()
}

/// Runs a command in the repository root; returns (success, stdout, stderr).
pub fn run(program: &PathBuf, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let out = crate::harness::output_with_stdin(Command::new(program).current_dir(repo_root()).args(args), stdin);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Like [`run`], panicking with the command's stderr when it fails; returns stdout.
pub fn run_ok(program: &PathBuf, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = run(program, args, stdin);
    assert!(ok, "{} {args:?} failed:\n{err}\n{out}", program.display());
    out
}

/// YAML documents as JSON values (empty documents dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("rendered YAML parses");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The Kubernetes version of the local control plane (e2e/controlplane/versions.env).
pub fn kubernetes_version() -> String {
    let env = std::fs::read_to_string(repo_root().join("e2e/controlplane/versions.env")).unwrap();
    env.lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .expect("KUBERNETES_VERSION in versions.env")
        .trim()
        .to_string()
}

/// `helm template` of charts/kube-baseline as release `kube-baseline` in `namespace`, CRDs
/// included, for the control plane's Kubernetes version (the chart's kubeVersion is checked
/// against it); returns the YAML.
pub fn helm_template_yaml(namespace: &str, args: &[&str]) -> String {
    let version = kubernetes_version();
    let mut all = vec![
        "template",
        "kube-baseline",
        "charts/kube-baseline",
        "--namespace",
        namespace,
        "--include-crds",
        "--kube-version",
        &version,
    ];
    all.extend_from_slice(args);
    run_ok(&tool("helm"), &all, None)
}

pub fn helm_template(namespace: &str, args: &[&str]) -> Vec<Value> {
    documents(&helm_template_yaml(namespace, args))
}

/// `kubectl kustomize <dir>` (a directory of the repository).
pub fn kustomize(dir: &str) -> Vec<Value> {
    documents(&run_ok(&kubectl_path(), &["kustomize", dir], None))
}

/// The object of `kind` named `name`, if any.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}
