//! `make dist`, installed from dist/ alone: the checksums hold, the binary is static, says its
//! version and carries its dependency tree (cargo auditable), the SBOM describes it, the image
//! archive loads under the release's tag, the chart package renders with the release's image tag and the API server
//! accepts it, and the kubectl plugin validates a baseline.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use harness::*;
use serde_json::Value;
use tools::{documents, run, run_ok, tool};

/// The release version the test builds (not the crate's, to prove VERSION is what counts).
const VERSION: &str = "0.1.0-e2e.1";

/// Builds dist/ once for the whole binary (minutes when cold: the tools and a release build,
/// cached afterwards).
fn dist() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(repo_root().join("release/dist.sh"))
            .env("VERSION", VERSION)
            .current_dir(repo_root())
            .output()
            .expect("release/dist.sh runs");
        assert!(
            out.status.success(),
            "release/dist.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        repo_root().join("dist")
    })
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn every_file_of_dist_is_in_its_checksums_and_they_hold() {
    let dir = dist();
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let listed: Vec<&str> = sums.lines().map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    for name in [
        format!("kube-baseline-{VERSION}-linux-{}", arch()),
        format!("kube-baseline-{VERSION}.cdx.json"),
        format!("kube-baseline-{VERSION}.tgz"),
        format!("kubectl-baseline-{VERSION}-linux-{}.tar.gz", arch()),
        "baseline.yaml".to_string(),
        "crds/securitybaselines.kubebaseline.io.yaml".to_string(),
    ] {
        assert!(listed.contains(&name.as_str()), "{name} not in SHA256SUMS:\n{sums}");
    }
    let out = Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn the_binary_is_static_says_its_version_and_carries_its_dependency_tree() {
    let bin = dist().join(format!("kube-baseline-{VERSION}-linux-{}", arch()));
    let headers = run_ok(&PathBuf::from("readelf"), &["-lS", bin.to_str().unwrap()], None);
    assert!(
        !headers.contains("Requesting program interpreter"),
        "dynamically linked"
    );
    // cargo auditable's section: the dependency tree, compressed JSON.
    assert!(headers.contains(".dep-v0"), "no cargo auditable section:\n{headers}");
    let version = run_ok(&bin, &["--version"], None);
    assert!(version.starts_with("kube-baseline "), "{version}");
    // The SBOM describes the same crate and its dependencies.
    let sbom: Value = serde_json::from_str(
        &std::fs::read_to_string(dist().join(format!("kube-baseline-{VERSION}.cdx.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["metadata"]["component"]["name"], "kube-baseline");
    let components: Vec<&str> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for dep in ["kube", "k8s-openapi", "tokio", "rustls"] {
        assert!(components.contains(&dep), "{dep} missing from the SBOM");
    }
}

#[tokio::test]
async fn the_chart_package_installs_with_the_release_image_and_the_api_server_accepts_it() {
    let helm = tool("helm");
    let chart = dist().join(format!("kube-baseline-{VERSION}.tgz"));
    let kubernetes = kubernetes_version_arg();
    let yaml = run_ok(
        &helm,
        &[
            "template",
            "kube-baseline",
            chart.to_str().unwrap(),
            "--namespace",
            "kube-baseline-system",
            "--kube-version",
            &kubernetes,
        ],
        None,
    );
    let docs = documents(&yaml);
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert_eq!(image, format!("kube-baseline:{VERSION}"));
    // The API server accepts everything it renders (the CRD from dist/ first).
    install();
    kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        dist().join("crds").to_str().unwrap(),
    ]);
    let (ok, out, err) = run(
        &kubectl_path(),
        &[
            "--kubeconfig",
            kubeconfig_path().to_str().unwrap(),
            "apply",
            "--dry-run=server",
            "-f",
            "-",
        ],
        Some(&yaml),
    );
    assert!(ok, "the API server refused the chart from dist/:\n{err}\n{out}");
}

#[test]
fn the_kubectl_plugin_validates_a_baseline_and_its_manifest_names_the_archive() {
    let dir = dist();
    let archive = format!("kubectl-baseline-{VERSION}-linux-{}.tar.gz", arch());
    let manifest = std::fs::read_to_string(dir.join("baseline.yaml")).unwrap();
    let sha = run_ok(
        &PathBuf::from("sha256sum"),
        &[dir.join(&archive).to_str().unwrap()],
        None,
    );
    let sha = sha.split_whitespace().next().unwrap();
    assert!(manifest.contains(&format!("sha256: {sha}")), "{manifest}");
    assert!(manifest.contains(&format!("uri: {archive}")), "{manifest}");
    let unpacked = std::env::temp_dir().join(unique("kubectl-baseline"));
    std::fs::create_dir_all(&unpacked).unwrap();
    run_ok(
        &PathBuf::from("tar"),
        &[
            "-xzf",
            dir.join(&archive).to_str().unwrap(),
            "-C",
            unpacked.to_str().unwrap(),
        ],
        None,
    );
    // kubectl runs a plugin as kubectl-<name> with the remaining arguments.
    let plugin = unpacked.join("kubectl-baseline");
    let sample = repo_root().join("config/samples/aks-default.yaml");
    let out = run_ok(&plugin, &["validate", sample.to_str().unwrap()], None);
    assert!(out.contains("0 invalid"), "{out}");
    std::fs::remove_dir_all(unpacked).unwrap();
}

#[test]
fn the_image_archive_loads_under_the_release_tag() {
    let archive = dist().join(format!("kube-baseline-{VERSION}-image.oci.tar"));
    if !archive.exists() {
        panic!("no image archive in dist/ (podman missing?)");
    }
    let podman = PathBuf::from("podman");
    let loaded = run_ok(
        &podman,
        &["load", "--quiet", "--input", archive.to_str().unwrap()],
        None,
    );
    assert!(loaded.contains(&format!("kube-baseline:{VERSION}")), "{loaded}");
}

fn kubernetes_version_arg() -> String {
    tools::kubernetes_version().trim_start_matches('v').to_string()
}
