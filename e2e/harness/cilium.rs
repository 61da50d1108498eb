//! Cilium's CRDs on the local control plane, for tests that write CiliumNetworkPolicies.
//!
//! Only the CRDs (`e2e/cilium/build.sh crds`, Cilium v1.20.2), as a cluster where Cilium was
//! once installed has them: no agent runs, so `engine: Auto` writes a NetworkPolicy and says the
//! evidence disagrees. Nothing here creates a CiliumNode: one says an agent runs, which turns
//! every Auto baseline to Cilium, cluster-wide (only e2e_cilium's Auto test makes one, briefly).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::{FIELD_MANAGER, kubectl, repo_root, wait_established};

/// The CRD the tests need served.
pub const CNP_CRD: &str = "ciliumnetworkpolicies.cilium.io";

/// Applies Cilium's CRDs (server-side, idempotent) and waits until the API server serves
/// CiliumNetworkPolicies; once per test process.
pub fn install_cilium_crds() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = crds_dir();
        kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            FIELD_MANAGER,
            "-f",
            dir.to_str().unwrap(),
        ]);
        wait_established(CNP_CRD);
        wait_established("ciliumnodes.cilium.io");
    });
}

/// The directory of Cilium's CRD YAMLs, fetched into the cache on first use.
fn crds_dir() -> PathBuf {
    let out = Command::new(repo_root().join("e2e/cilium/build.sh"))
        .arg("crds")
        .output()
        .expect("e2e/cilium/build.sh runs");
    assert!(
        out.status.success(),
        "e2e/cilium/build.sh crds failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        dir.join("ciliumnetworkpolicies.yaml").is_file(),
        "no ciliumnetworkpolicies.yaml in {}",
        dir.display()
    );
    dir
}
