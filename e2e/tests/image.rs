//! The manager image (`make image`, from the `Dockerfile`): one static binary `FROM scratch`,
//! non-root, no shell; run with podman against the local control plane (host network) as a
//! non-root UID, with a read-only root filesystem and no capabilities, it converges a namespace,
//! serves `/readyz` and `/metrics`, and exits 0 on `podman stop`.
//!
//! podman on this machine (Debian 12's podman 4.3) needs two adjustments, both outside the image
//! (see docs/install.md, "The image"): the runtime `runc`, because Debian's crun refuses the machine's
//! hybrid cgroup layout ("cgroups in hybrid mode not supported, drop all controllers from
//! cgroupv2"), and explicit `--ulimit`s, because podman's defaults for root (nofile 1048576)
//! exceed the hard limits of a sandbox without CAP_SYS_RESOURCE ("setrlimit `RLIMIT_NOFILE`:
//! Operation not permitted").

#[path = "../harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use harness::scenario::*;
use harness::*;

const UID: u32 = 65532;

/// Builds the image once per test process (`image/build.sh`, what `make image` runs; the cargo
/// build and the podman layers are cached) and returns its reference.
fn image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let out = Command::new(repo_root().join("image/build.sh"))
                .output()
                .expect("image/build.sh runs");
            assert!(
                out.status.success(),
                "make image failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
        .clone()
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().expect("podman runs")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The image's configuration (`podman image inspect`).
fn image_config() -> serde_json::Value {
    let inspect: serde_json::Value = serde_json::from_str(&podman_ok(&["image", "inspect", &image()])).unwrap();
    inspect[0].clone()
}

/// Every file and directory in the image's root filesystem, relative to it.
fn image_files() -> Vec<String> {
    let root = PathBuf::from(podman_ok(&["image", "mount", &image()]).trim());
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            files.push(path.strip_prefix(&root).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            }
        }
    }
    podman_ok(&["image", "unmount", &image()]);
    files.sort();
    files
}

#[test]
fn image_is_one_static_binary_run_as_non_root_without_a_shell() {
    let config = image_config();
    assert_eq!(config["Config"]["User"], format!("{UID}:{UID}"), "{config:#}");
    assert_eq!(config["Config"]["Entrypoint"], serde_json::json!(["/kube-baseline"]));
    assert_eq!(config["Config"]["Cmd"], serde_json::json!(["run"]));
    assert!(config["Config"]["ExposedPorts"].get("8080/tcp").is_some(), "{config:#}");
    // FROM scratch: one layer, one file. No shell, no package manager, no libc to patch.
    assert_eq!(image_files(), vec!["kube-baseline".to_string()]);
    assert_eq!(
        config["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1),
        "{config:#}"
    );
    let size = config["Size"].as_u64().unwrap();
    assert!(size < 64 << 20, "the image is {size} bytes");
    // Statically linked: no program interpreter (a dynamic binary would not start in scratch).
    let binary = repo_root().join("image/kube-baseline");
    let header = Command::new("readelf").arg("-l").arg(&binary).output().unwrap();
    assert!(header.status.success());
    assert!(
        !String::from_utf8_lossy(&header.stdout).contains("program interpreter"),
        "{} is dynamically linked",
        binary.display()
    );
    // The binary in the image is the one built by image/static-build.sh.
    let out = Command::new(&binary).arg("--version").output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("0.1.0"),
        "{out:?}"
    );
}

/// A container that is removed (with its log shown) when the test ends.
struct Container {
    name: String,
}

impl Container {
    fn pid(&self) -> u32 {
        podman_ok(&["inspect", "--format", "{{.State.Pid}}", &self.name])
            .trim()
            .parse()
            .unwrap()
    }

    fn logs(&self) -> String {
        let out = podman(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- log of container {}:\n{}", self.name, self.logs());
        }
        let _ = podman(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// The hard limit of a resource of this process.
fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
    limit.rlim_max
}

/// podman flags for this machine, none of which change what runs in the container: runc (crun
/// refuses the hybrid cgroup layout) when installed, and limits the sandbox lets it set.
fn machine_flags() -> Vec<String> {
    let mut flags = Vec::new();
    if Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        flags.extend(["--runtime".into(), "runc".into()]);
    }
    let nofile = hard_limit(libc::RLIMIT_NOFILE).min(1 << 20);
    // podman lowers its own RLIMIT_NPROC to kernel.pid_max; asking for more is refused.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let nproc = hard_limit(libc::RLIMIT_NPROC).min(pid_max);
    flags.push(format!("--ulimit=nofile={nofile}:{nofile}"));
    flags.push(format!("--ulimit=nproc={nproc}:{nproc}"));
    flags
}

/// A kubeconfig for the operator's ServiceAccount whose CA path is the one mounted in the
/// container.
fn container_kubeconfig(token: &str, dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: https://{}, certificate-authority: /etc/kube-baseline/ca.crt}}\n\
             users:\n- name: token\n  user: {{token: {token}}}\ncontexts:\n- name: local\n  context: {{cluster: local, user: token}}\n\
             current-context: local\n",
            api_server()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn image_runs_read_only_as_non_root_without_capabilities_and_converges_a_namespace() {
    let image = image();
    install();
    let admin = client().await;
    let token = service_account_token(&admin, "kube-baseline-system", "kube-baseline").await;
    let name = unique("kube-baseline-image");
    let dir = cluster_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = container_kubeconfig(&token, &dir);
    let ca = cluster_dir().join("pki/ca.crt");
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();

    let mut args: Vec<String> = vec!["run".into(), "--detach".into(), "--name".into(), name.clone()];
    args.extend(machine_flags());
    args.extend(
        [
            "--network=host",
            "--read-only",
            "--cap-drop=all",
            "--security-opt=no-new-privileges",
            "--env=KUBECONFIG=/etc/kube-baseline/kubeconfig",
        ]
        .map(String::from),
    );
    args.push(format!(
        "--volume={}:/etc/kube-baseline/kubeconfig:ro",
        kubeconfig.display()
    ));
    args.push(format!("--volume={}:/etc/kube-baseline/ca.crt:ro", ca.display()));
    // No --user: the image's own USER is what runs.
    args.push(image.clone());
    args.extend(
        [
            "run",
            "--metrics-addr",
            &metrics_addr.to_string(),
            "--instance",
            &name,
            "--status-debounce",
            "200ms",
            "--log-format",
            "json",
            // The same settings as every other operator of the suite (see harness::Operator).
            "--system-namespace",
            "e2e-platform-system",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman_ok(&args);
    let container = Container { name: name.clone() };

    // What the kernel says about the container's process, not what podman was asked.
    let status = std::fs::read_to_string(format!("/proc/{}/status", container.pid())).unwrap();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), vec![UID.to_string(); 4], "{status}");
    assert_eq!(field("Gid:"), vec![UID.to_string(); 4], "{status}");
    for caps in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(field(caps), vec!["0000000000000000"], "{caps} {status}");
    }
    assert_eq!(field("NoNewPrivs:"), vec!["1"], "{status}");
    let inspect: serde_json::Value = serde_json::from_str(&podman_ok(&["container", "inspect", &name])).unwrap();
    assert_eq!(inspect[0]["HostConfig"]["ReadonlyRootfs"], true);

    eventually("the container's /readyz", WAIT, || async {
        (http_get(metrics_addr, "/readyz").await?.0 == 200).then_some(())
    })
    .await;

    let mut s = Scenario::without_shared_operator("image").await;
    let ns = s.namespace("team").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    s.wait_all_objects(&ns).await;
    s.wait_condition(&baseline, "Ready", "True").await;
    let (code, body) = http_get(metrics_addr, "/metrics").await.expect("/metrics answers");
    assert_eq!(code, 200);
    assert!(body.contains("kube_baseline_ready 1"), "{body}");
    assert!(
        metric(metrics_addr, "kube_baseline_repairs_total").await >= 4.0,
        "{body}"
    );

    // A deleted policy is put back by the containerised operator.
    s.policies(&ns).delete(POLICY, &Default::default()).await.unwrap();
    eventually("the policy is recreated", WAIT, || async {
        s.policy(&ns).await.filter(|p| p.metadata.deletion_timestamp.is_none())
    })
    .await;
    s.cleanup().await;

    // SIGTERM to PID 1 of the container: a graceful stop, exit status 0.
    podman_ok(&["stop", "--time", "20", &name]);
    let exit = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(exit.trim(), "0", "{}", container.logs());
    assert!(
        container
            .logs()
            .lines()
            .any(|l| l.starts_with('{') && l.contains("stopped")),
        "JSON logs on stdout: {}",
        container.logs()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
