//! The end-to-end harness: clients for the local control plane (`make cluster-up`), uniquely
//! named namespaces, identities for RBAC tests, polling, and operator processes.
//!
//! Each test binary includes this module; tests in a binary run in parallel, so everything a
//! test creates is named uniquely and nothing depends on order.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod bench;
pub mod cilium;
pub mod dataplane;
pub mod observer;
pub mod proxy;
pub mod scenario;

pub const FIELD_MANAGER: &str = "e2e";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The control plane's state directory (`cluster.sh` writes kubeconfig, pki/, logs/ there).
pub fn cluster_dir() -> PathBuf {
    std::env::var_os("CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cluster"))
}

pub fn kubeconfig_path() -> PathBuf {
    cluster_dir().join("kubeconfig")
}

/// The cached kubectl that matches the control plane.
pub fn kubectl_path() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(find_kubectl).clone()
}

fn find_kubectl() -> PathBuf {
    let out = Command::new(repo_root().join("e2e/controlplane/cluster.sh"))
        .arg("bin")
        .output()
        .expect("cluster.sh bin");
    assert!(
        out.status.success(),
        "cluster.sh bin failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("kubectl")
}

/// Runs the cached kubectl as the admin and returns stdout; panics with stderr on failure.
pub fn kubectl(args: &[&str]) -> String {
    let out = Command::new(kubectl_path())
        .env("KUBECONFIG", kubeconfig_path())
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn config() -> Config {
    config_of(&kubeconfig_path()).await
}

async fn config_of(path: &Path) -> Config {
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("no control plane at {}: run `make cluster-up` ({e})", path.display()));
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid")
}

/// A client with the admin identity (`system:masters`).
pub async fn client() -> Client {
    Client::try_from(config().await).expect("client")
}

/// A client with the identity of a kubeconfig file (e.g. [`operator_kubeconfig`]'s token).
pub async fn client_of(kubeconfig: &Path) -> Client {
    Client::try_from(config_of(kubeconfig).await).expect("client")
}

/// A client acting as a ServiceAccount, by impersonation: what that account may do, exactly.
pub async fn client_as_service_account(namespace: &str, name: &str) -> Client {
    let mut config = config().await;
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]);
    Client::try_from(config).expect("client")
}

/// A client acting as a person: user `name` in `groups` (and system:authenticated), by
/// impersonation, so RBAC and admission see exactly that identity.
pub async fn client_as_user(name: &str, groups: &[&str]) -> Client {
    let mut config = config().await;
    config.auth_info.impersonate = Some(name.into());
    let mut all: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    all.push("system:authenticated".into());
    config.auth_info.impersonate_groups = Some(all);
    Client::try_from(config).expect("client")
}

/// Runs the cached kubectl as the admin impersonating `user` in `groups`; returns whether it
/// succeeded, and its stdout and stderr (where kubectl prints admission warnings).
pub fn kubectl_as(user: &str, groups: &[&str], args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(kubectl_path());
    cmd.env("KUBECONFIG", kubeconfig_path()).arg("--as").arg(user);
    for g in groups.iter().chain(&["system:authenticated"]) {
        cmd.arg("--as-group").arg(g);
    }
    let out = output_with_stdin(cmd.args(args), stdin);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Runs `cmd` to completion with `stdin` (empty when None) and its output captured.
pub fn output_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{:?} runs: {e}", cmd.get_program()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A name no other test (in this run or an earlier one on the same cluster) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{:x}", (nanos / 1000) % 0xff_ffff_ffff, n)
}

/// Creates a namespace named `<prefix>-<unique>` with `labels`; returns its name.
pub async fn create_namespace(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let name = unique(prefix);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// A namespace enforcing Pod Security `restricted` with a ServiceAccount named `account` (the
/// ServiceAccount admission plugin wants a pod's account to exist), for dry-run pod admission.
pub async fn restricted_namespace_with_account(client: &Client, prefix: &str, account: &str) -> String {
    let ns = create_namespace(
        client,
        prefix,
        &[
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ],
    )
    .await;
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": account}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    ns
}

pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` saying what
/// was awaited.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Holds for `duration`: `check` must stay true all along (used to prove nothing happens).
pub async fn stays<F, Fut>(what: &str, duration: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        assert!(check().await, "no longer true: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Applies an object with server-side apply as the test's own field manager.
pub async fn apply<K>(api: &Api<K>, name: &str, obj: &K) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj))
        .await
        .expect("apply")
}

/// A token for a ServiceAccount from the TokenRequest API.
pub async fn service_account_token(client: &Client, namespace: &str, name: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let response: TokenRequest = api
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("token request");
    response.status.expect("token status").token
}

/// The API server's address (from the admin kubeconfig).
pub fn api_server() -> SocketAddr {
    let admin = std::fs::read_to_string(kubeconfig_path()).unwrap();
    let server = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("server in kubeconfig");
    server.parse().expect("host:port")
}

/// Writes a kubeconfig that authenticates with `token` against the local control plane.
pub fn token_kubeconfig(token: &str, file_name: &str) -> PathBuf {
    token_kubeconfig_via(token, file_name, api_server())
}

/// Like [`token_kubeconfig`], reaching the API server at `addr` (a proxy in front of it).
pub fn token_kubeconfig_via(token: &str, file_name: &str, addr: SocketAddr) -> PathBuf {
    let server = format!("https://{addr}");
    let ca = cluster_dir().join("pki/ca.crt");
    let path = cluster_dir().join(file_name);
    let mut f = std::fs::File::create(&path).unwrap();
    write!(
        f,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: {server}, certificate-authority: {}}}\n\
         users:\n- name: token\n  user: {{token: {token}}}\ncontexts:\n- name: local\n  context: {{cluster: local, user: token}}\n\
         current-context: local\n",
        ca.display()
    )
    .unwrap();
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Installs kube-baseline the way a platform team does: `kubectl apply -k config/default`.
/// Idempotent; waits for the CRD to be served.
pub fn install() {
    kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        FIELD_MANAGER,
        "-k",
        repo_root().join("config/default").to_str().unwrap(),
    ]);
    wait_established("securitybaselines.kubebaseline.io");
    cilium::install_cilium_crds();
}

/// Waits (up to a minute) until the API server serves the CRD `name`.
pub fn wait_established(name: &str) {
    // `kubectl wait` gives up at once, not after its timeout, on a CRD created so recently that
    // it has no status conditions yet ("<nil> is of the type <nil>"): ask again until a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(kubectl_path())
            .env("KUBECONFIG", kubeconfig_path())
            .args([
                "wait",
                "--for",
                "condition=established",
                "--timeout",
                "60s",
                &format!("crd/{name}"),
            ])
            .output()
            .expect("kubectl runs");
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "crd/{name} not established: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A kubeconfig for the installed operator's own ServiceAccount (`config/rbac`).
pub async fn operator_kubeconfig(file_name: &str) -> PathBuf {
    let client = client().await;
    let token = service_account_token(&client, "kube-baseline-system", "kube-baseline").await;
    token_kubeconfig(&token, file_name)
}

/// An operator process (`kube-baseline run`), killed when dropped.
pub struct Operator {
    child: Child,
    pub name: String,
    pub metrics_addr: SocketAddr,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator binary with `kubeconfig` and extra flags; its log goes to
    /// `.cluster/logs/operator-<name>-<unique>.log`.
    pub fn start(name: &str, kubeconfig: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(name, kubeconfig, extra, &[("RUST_LOG", "info,kube_baseline=debug")])
    }

    /// Like [`Operator::start`], with its own environment (RUST_LOG, ...).
    pub fn start_with_env(name: &str, kubeconfig: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = cluster_dir()
            .join("logs")
            .join(format!("{}.log", unique(&format!("operator-{name}"))));
        let out = std::fs::File::create(&log).expect("operator log");
        // `OPERATOR_WRAPPER` (a profiler's launcher, say) is run with the binary's path first;
        // it must exec the binary, so that signals and the process id stay the operator's.
        let mut cmd = match std::env::var_os("OPERATOR_WRAPPER") {
            Some(wrapper) => {
                let mut cmd = Command::new(wrapper);
                cmd.arg(env!("CARGO_BIN_EXE_kube-baseline"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_kube-baseline")),
        };
        cmd.arg("run")
            .args([
                "--metrics-addr",
                &metrics_addr.to_string(),
                "--status-debounce",
                "200ms",
                "--instance",
                name,
                // Every operator of the suite runs with the same settings: two that disagree
                // (on system namespaces, say) would rewrite each other's admission bindings.
                "--system-namespace",
                "e2e-platform-system",
            ])
            // PolicyReports only where a test asks: their CRDs, once e2e_reports installs them,
            // would otherwise turn them on (Auto) in every later operator.
            .args((!extra.iter().any(|a| a.starts_with("--policy-reports"))).then_some("--policy-reports=Off"))
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // The operator must not outlive the test process, even when a test panics.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("operator starts");
        Self {
            child,
            name: name.into(),
            metrics_addr,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: a crash, no cleanup.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit; returns whether it exited successfully in time.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The exit code once the process has ended (None while it runs or when a signal ended it).
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_addr, path).await
    }

    pub async fn metric(&self, sample: &str) -> f64 {
        metric(self.metrics_addr, sample).await
    }

    pub async fn try_metric(&self, sample: &str) -> Option<f64> {
        try_metric(self.metrics_addr, sample).await
    }
}

/// GET on an operator's HTTP port: (status code, body); None while it does not answer.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// The sum of a metric's samples whose name-and-labels start with `sample` (0 when no sample
/// exists); None while the endpoint does not answer.
pub async fn try_metric(addr: SocketAddr, sample: &str) -> Option<f64> {
    let Some((200, body)) = http_get(addr, "/metrics").await else {
        return None;
    };
    let sum = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(sample))
        .filter(|rest| rest.starts_with(' ') || rest.starts_with('{') || rest.starts_with(','))
        .filter_map(|rest| rest.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum::<f64>();
    Some(sum + 0.0) // an empty sum is -0.0
}

/// Like [`try_metric`], but the operator must be answering: a dead operator fails the test
/// instead of reading as zero.
pub async fn metric(addr: SocketAddr, sample: &str) -> f64 {
    try_metric(addr, sample)
        .await
        .unwrap_or_else(|| panic!("{addr}/metrics does not answer (reading {sample})"))
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Labels as a map, for comparisons.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The audit log's write requests (create, update, patch, delete) from byte `offset` on, sent by
/// the operator replica named `instance` (each names itself in its User-Agent).
pub fn audit_writes_by(instance: &str, offset: u64) -> Vec<serde_json::Value> {
    let text = std::fs::read(cluster_dir().join("audit.log")).unwrap_or_default();
    let from = (offset as usize).min(text.len());
    String::from_utf8_lossy(&text[from..])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["userAgent"]
                .as_str()
                .is_some_and(|ua| ua.contains(&format!("({instance})")))
        })
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "update" | "patch" | "delete")))
        .collect()
}
