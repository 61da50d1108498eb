//! What the benchmarks (`make bench`, `make bench-kyverno`) share: the raw-write floor, CPU and
//! memory of a process read from /proc, percentiles, and write requests counted in the API
//! server's audit log by user, so every side is counted the same way whatever it reports itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_baseline::core::{desired, objects};

use super::scenario::aks_spec;

/// The operator's identity in the benchmarks (the ServiceAccount `config/default` installs).
pub const OPERATOR_USER: &str = "system:serviceaccount:kube-baseline-system:kube-baseline";

/// A number the benchmark reads from the environment (`default` when unset or not a number).
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `BENCH_NAMESPACES` (default 1000).
pub fn bench_namespaces() -> usize {
    env_number("BENCH_NAMESPACES", 1000)
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
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

/// Resident memory (`VmRSS`) of a process, in MiB; 0 when it is gone.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The pid a control-plane component was started with (`$CLUSTER_DIR/pids/<component>`), 0 if none.
pub fn control_plane_pid(component: &str) -> u32 {
    std::fs::read_to_string(super::cluster_dir().join("pids").join(component))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU seconds of kube-apiserver, etcd and kube-controller-manager (whose garbage collector
/// tracks every object with an ownerReference): the other side of every request.
pub fn control_plane_cpu() -> [f64; 3] {
    ["kube-apiserver", "etcd", "kube-controller-manager"].map(|c| cpu_seconds(control_plane_pid(c)))
}

/// "a / b / c s": the control plane's CPU seconds between two readings of [`control_plane_cpu`].
pub fn control_plane_cell(before: [f64; 3], after: [f64; 3]) -> String {
    format!(
        "{:.1} / {:.1} / {:.1} s",
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2]
    )
}

/// kube-apiserver's `/metrics` page ("" when it cannot be read).
pub async fn metrics_page(client: &kube::Client) -> String {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    client.request_text(request).await.unwrap_or_default()
}

/// Seconds kube-apiserver has spent in its ValidatingAdmissionPolicy plugin, every request
/// summed (its own clock: `apiserver_admission_controller_admission_duration_seconds`): what the
/// admission policies cost, which other work on a shared machine does not enter.
pub async fn admission_policy_seconds(client: &kube::Client) -> f64 {
    admission_policy_total(&metrics_page(client).await)
}

/// [`admission_policy_seconds`] from the text of a `/metrics` page.
pub fn admission_policy_total(text: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_admission_controller_admission_duration_seconds_sum{")
                && l.contains("name=\"ValidatingAdmissionPolicy\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The API server's request counters (`apiserver_request_total`) from a [`metrics_page`],
/// summed over response codes by (verb, resource).
pub fn request_totals(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        // name="value",name="value"... (these values hold no `",`).
        let labels: BTreeMap<&str, &str> = labels
            .trim_start_matches("apiserver_request_total{")
            .trim_end_matches('}')
            .split("\",")
            .filter_map(|pair| pair.split_once("=\""))
            .map(|(name, value)| (name, value.trim_end_matches('"')))
            .collect();
        let label = |name: &str| labels.get(name).copied().unwrap_or_default().to_string();
        let resource = match label("subresource").as_str() {
            "" => label("resource"),
            sub => format!("{}/{sub}", label("resource")),
        };
        *out.entry((label("verb"), resource)).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// "VERB resource N, ..." for the reads (GET, LIST, WATCH) between two [`request_totals`]
/// readings, most first.
pub fn reads_between(before: &BTreeMap<(String, String), f64>, after: &BTreeMap<(String, String), f64>) -> String {
    let mut rows: Vec<(f64, &str, &str)> = after
        .iter()
        .filter(|((verb, _), _)| matches!(verb.as_str(), "GET" | "LIST" | "WATCH"))
        .map(|((verb, resource), n)| {
            (
                n - before.get(&(verb.clone(), resource.clone())).unwrap_or(&0.0),
                verb.as_str(),
                resource.as_str(),
            )
        })
        .filter(|(n, _, _)| *n > 0.0)
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    if rows.is_empty() {
        return "none".into();
    }
    rows.iter()
        .map(|(n, verb, resource)| format!("{verb} {resource} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `BENCH_APISERVER_PROFILE=DIR`: a CPU profile of kube-apiserver over the next
/// `BENCH_APISERVER_PROFILE_SECONDS` (default 3) seconds (its `/debug/pprof/profile`, on by
/// default, read as the admin), written to `DIR/<phase>.pprof` for `go tool pprof`. Returns the
/// task to await, or `None` when profiling is off.
pub fn profile_apiserver(client: &kube::Client, phase: &str) -> Option<tokio::task::JoinHandle<()>> {
    let dir = std::path::PathBuf::from(std::env::var_os("BENCH_APISERVER_PROFILE")?);
    let secs: u64 = env_number("BENCH_APISERVER_PROFILE_SECONDS", 3);
    let (client, path) = (client.clone(), dir.join(format!("{phase}.pprof")));
    Some(tokio::spawn(async move {
        use futures::AsyncReadExt;
        let request = http::Request::get(format!("/debug/pprof/profile?seconds={secs}"))
            .body(Vec::new())
            .unwrap();
        let mut bytes = Vec::new();
        match client.request_stream(request).await {
            Ok(mut body) => {
                let _ = body.read_to_end(&mut bytes).await;
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, bytes).unwrap();
            }
            Err(e) => eprintln!("apiserver profile {}: {e}", path.display()),
        }
    }))
}

/// The `p` quantile (0..=1) of sorted durations, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// "p50 / p99" of sorted durations in milliseconds.
pub fn p50_p99_ms(sorted: &[Duration]) -> String {
    format!(
        "{:.0} / {:.0} ms",
        percentile(sorted, 0.5).as_secs_f64() * 1e3,
        percentile(sorted, 0.99).as_secs_f64() * 1e3
    )
}

/// The managed-by value of the floor's objects (same size as the operator's): with the
/// operator's, it would cache them as its own objects (of a baseline that does not exist), and
/// its memory would count twice the objects it manages.
pub const FLOOR_MANAGED_BY: &str = "kube-baseline-floor";

/// A SecurityBaseline as the owner the operator's builders put in an ownerReference.
pub async fn owner_of(client: &kube::Client, baseline: &str) -> desired::Owner {
    let b = Api::<kube_baseline::api::SecurityBaseline>::all(client.clone())
        .get(baseline)
        .await
        .unwrap();
    desired::Owner {
        name: baseline.to_string(),
        uid: b.metadata.uid.unwrap(),
        mode: kube_baseline::api::Mode::Enforce,
    }
}

/// How the floor writes its policy and bindings (the Pod Security labels are always applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorWrites {
    /// Server-side apply, forced: the floor issue 9 defines.
    Apply,
    /// Create (POST), as the operator writes an object nobody has yet.
    Create,
}

/// The raw-write floor: the objects the baseline wants in each of `namespaces`, built by the
/// operator's own builders (labelled `managed_by`, normally [`FLOOR_MANAGED_BY`]) and written by
/// this client as `writes` says, `concurrency` namespaces at a time. With an `owner` (a
/// SecurityBaseline that exists: the garbage collector deletes objects of a missing owner) they
/// carry its ownerReference as the operator's do; without one, none. Returns how long it took.
pub async fn raw_write_floor(
    client: &kube::Client,
    namespaces: &[String],
    label: &str,
    concurrency: usize,
    managed_by: &str,
    writes: FloorWrites,
    owner: Option<desired::Owner>,
) -> Duration {
    let wanted = floor_objects(label);
    // Without a uid the builders set no ownerReference.
    let owner = owner.unwrap_or_else(|| desired::Owner {
        name: "floor".into(),
        uid: String::new(),
        mode: kube_baseline::api::Mode::Enforce,
    });
    let params = PatchParams::apply(FLOOR_FIELD_MANAGER).force();
    let relabel = |meta: &mut kube::api::ObjectMeta| {
        if let Some(labels) = meta.labels.as_mut() {
            labels.insert(objects::MANAGED_BY_LABEL.into(), managed_by.into());
        }
    };
    let start = Instant::now();
    futures::stream::iter(namespaces)
        .for_each_concurrent(concurrency, |ns| {
            let (client, wanted, owner, params) = (client.clone(), wanted.clone(), owner.clone(), params.clone());
            async move {
                for (_, key, content) in wanted {
                    match (key, content) {
                        (desired::ObjectKey::NetworkPolicy(name), desired::Content::NetworkPolicy(spec)) => {
                            let mut np = objects::network_policy(ns, &name, &spec, &owner);
                            relabel(&mut np.metadata);
                            write(
                                &Api::<NetworkPolicy>::namespaced(client.clone(), ns),
                                &name,
                                &np,
                                writes,
                            )
                            .await;
                        }
                        (
                            desired::ObjectKey::RoleBinding(name),
                            desired::Content::RoleBinding { role_ref, subjects },
                        ) => {
                            let mut rb = objects::role_binding(ns, &name, &role_ref, &subjects, &owner);
                            relabel(&mut rb.metadata);
                            write(&Api::<RoleBinding>::namespaced(client.clone(), ns), &name, &rb, writes).await;
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

/// What the floor writes in each namespace: what the benchmark's baseline (`aks_spec`) wants.
fn floor_objects(label: &str) -> Vec<(kube_baseline::api::Control, desired::ObjectKey, desired::Content)> {
    let baseline = kube_baseline::api::SecurityBaseline::new("floor", aks_spec(label));
    let valid = desired::validate(&baseline).unwrap();
    // The local control plane is single-stack IPv4, and the operator renders for that.
    let families = kube_baseline::core::families::ClusterFamilies::from_api(Some(&["IPv4".to_string()]), &[])
        .expect("IPv4 is a family");
    let cluster = kube_baseline::core::cluster::Cluster {
        families,
        engine: Default::default(),
    };
    desired::wanted_objects(&baseline, &valid, &cluster)
}

/// How many write requests the floor makes in each namespace (the labels are one).
pub fn floor_writes_per_namespace() -> usize {
    floor_objects("any").len()
}

/// One of the floor's writes, as `writes` says.
async fn write<K>(api: &Api<K>, name: &str, object: &K, writes: FloorWrites)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match writes {
        FloorWrites::Apply => api
            .patch(
                name,
                &PatchParams::apply(FLOOR_FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .map(drop),
        FloorWrites::Create => {
            let params = PostParams {
                field_manager: Some(FLOOR_FIELD_MANAGER.into()),
                ..Default::default()
            };
            api.create(&params, object).await.map(drop)
        }
    }
    .unwrap();
}

const FLOOR_FIELD_MANAGER: &str = "bench-floor";

/// One write request as the API server's audit log recorded it (`e2e/controlplane/audit-policy.yaml`
/// records create, update, patch, delete and deletecollection at the Metadata level).
#[derive(Debug, Clone)]
pub struct AuditedWrite {
    pub user: String,
    pub verb: String,
    /// `resource` or `resource/subresource`, e.g. `securitybaselines/status`.
    pub resource: String,
    pub code: u16,
    pub received: SystemTime,
}

/// Write requests the API server received in `[from, to]` (wall clock), from `$CLUSTER_DIR/audit.log`
/// and the files it was rotated into (`audit-<time>.log`: the API server's log writer rotates at
/// `--audit-log-maxsize`, which a 10,000-namespace run can pass).
pub fn audited_writes(from: SystemTime, to: SystemTime) -> Vec<AuditedWrite> {
    let dir = super::cluster_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit") && n.ends_with(".log"))
        })
        .collect();
    files.sort();
    let text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter_map(|e| {
            let received: k8s_openapi::jiff::Timestamp = e["requestReceivedTimestamp"].as_str()?.parse().ok()?;
            let received = SystemTime::from(received);
            if received < from || received > to {
                return None;
            }
            let object = &e["objectRef"];
            let resource = match object["subresource"].as_str() {
                Some(sub) => format!("{}/{sub}", object["resource"].as_str().unwrap_or("?")),
                None => object["resource"].as_str().unwrap_or("?").to_string(),
            };
            Some(AuditedWrite {
                user: e["user"]["username"].as_str().unwrap_or_default().to_string(),
                verb: e["verb"].as_str().unwrap_or_default().to_string(),
                resource,
                code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
                received,
            })
        })
        .collect()
}

/// Write requests of some users over a time window, by kind.
pub struct Writes {
    pub all: Vec<AuditedWrite>,
}

impl Writes {
    /// The writes of users for which `is_user` holds, in `[from, to]`.
    pub fn of(is_user: impl Fn(&str) -> bool, from: SystemTime, to: SystemTime) -> Self {
        Self {
            all: audited_writes(from, to)
                .into_iter()
                .filter(|w| is_user(&w.user))
                .collect(),
        }
    }

    /// Every write except Lease renewals (leader election), which are counted apart.
    pub fn total_without_leases(&self) -> usize {
        self.all.iter().filter(|w| w.resource != "leases").count()
    }

    pub fn count(&self, resource: &str) -> usize {
        self.all.iter().filter(|w| w.resource == resource).count()
    }

    /// Events written in either API group (`events` is the resource name in both).
    pub fn events(&self) -> usize {
        self.count("events")
    }

    pub fn leases(&self) -> usize {
        self.count("leases")
    }

    /// Requests the API server refused (conflicts, not found, ...).
    pub fn failed(&self) -> usize {
        self.all.iter().filter(|w| w.code >= 400).count()
    }

    /// "resource verb count" for every kind, most first: `networkpolicies create 1000, ...`.
    pub fn by_kind(&self) -> String {
        let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
        for w in &self.all {
            *counts.entry((w.resource.clone(), w.verb.clone())).or_default() += 1;
        }
        let mut rows: Vec<_> = counts.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if rows.is_empty() {
            return "none".into();
        }
        rows.iter()
            .map(|((resource, verb), n)| format!("{resource} {verb} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// "N (Events E, status S, leases L, failed F)" — the summary both benchmarks print.
    pub fn summary(&self, status_resource: Option<&str>) -> String {
        let status = status_resource.map_or(String::new(), |r| format!(", status {}", self.count(r)));
        format!(
            "{} (Events {}{status}; plus {} Lease renewals; {} refused)",
            self.total_without_leases(),
            self.events(),
            self.leases(),
            self.failed()
        )
    }
}

/// Waits (at most 30 s) until kube-apiserver spends less than a fifth of a core for a second:
/// what it still does after a change (compiling policies, the garbage collector's and the
/// namespace controller's requests) must not fall on the next measured batch.
pub async fn settle_apiserver() {
    for _ in 0..30 {
        let before = control_plane_cpu()[0];
        tokio::time::sleep(Duration::from_secs(1)).await;
        if control_plane_cpu()[0] - before < 0.2 {
            return;
        }
    }
}

/// Namespaces written before each tax sample is measured.
const WARM_UP: usize = 20;

/// The tax sample with only `kube-baseline-fence` bound (its one match condition on the user
/// name runs on every foreign write it matches, whatever the baselines).
const FENCE_ONLY: usize = usize::MAX;
const ALL_BUT_THE_FENCE: [&str; 8] = [
    "kube-baseline-fence-system-namespaces",
    "kube-baseline-fence-baselines",
    "kube-baseline-fence-per-baseline",
    "kube-baseline-fence-per-baseline-namespaces",
    "kube-baseline-protection-deny",
    "kube-baseline-protection-namespaces-deny",
    "kube-baseline-protection-warn",
    "kube-baseline-protection-namespaces-warn",
];

/// One measurement of [`foreign_writer_tax`]: what was written where, and kube-apiserver's CPU
/// per write in each round.
pub struct TaxSample {
    pub what: String,
    pub baselines: Option<usize>,
    pub inside: bool,
    pub ms_per_write: Vec<f64>,
    /// Milliseconds per write in the admission policies, by the API server's own clock.
    pub policy_ms_per_write: Vec<f64>,
}

impl TaxSample {
    /// The median round: one round that a shared machine's neighbour slowed (seen: 3.70 ms
    /// against 1.69 and 1.87) moves a mean by a third and a median not at all.
    pub fn median(&self) -> f64 {
        median(&self.ms_per_write)
    }

    /// This sample's median against the reference's, as a signed percentage.
    pub fn tax(&self, reference: &TaxSample) -> f64 {
        (self.median() / reference.median() - 1.0) * 100.0
    }
}

/// The middle of `values` (the mean of the two middle ones for an even count; NaN for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// How many interleaved rounds [`foreign_writer_tax`] measures: `BENCH_TAX_ROUNDS`, else `default`.
pub fn tax_rounds(default: usize) -> usize {
    env_number("BENCH_TAX_ROUNDS", default).max(1)
}

/// A writer that is neither the operator nor break-glass (cluster-admin by a ClusterRoleBinding,
/// not in system:masters), authenticated by its own ServiceAccount token as a CI pipeline or a
/// GitOps controller is: what a team's or a tool's write costs, admission included.
pub async fn foreign_writer(admin: &kube::Client) -> kube::Client {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let name = "bench-foreign-writer";
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    let _ = Api::<ServiceAccount>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &sa)
        .await;
    let crb: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}]
    }))
    .unwrap();
    let _ = Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &crb)
        .await;
    let token = super::service_account_token(admin, "default", name).await;
    super::client_of(&super::token_kubeconfig(&token, "bench-foreign-writer.kubeconfig")).await
}

/// Makes exactly `n` of the tax's own baselines exist (`bench-tax-<i>`, Enforce, each selecting
/// a label of its own that no namespace carries but `bench-tax-0`'s, `selected`).
async fn tax_baselines(admin: &kube::Client, n: usize, selected: &str) {
    use kube_baseline::api::SecurityBaseline;
    let api: Api<SecurityBaseline> = Api::all(admin.clone());
    for i in 0..50usize.max(n) {
        let name = format!("bench-tax-{i}");
        if i < n {
            let label = if i == 0 {
                selected.to_string()
            } else {
                format!("{selected}-{i}")
            };
            let b = SecurityBaseline::new(&name, aks_spec(&label));
            let _ = api.create(&PostParams::default(), &b).await;
        } else {
            let _ = api.delete(&name, &Default::default()).await;
        }
    }
}

/// The tax on every other writer: kube-apiserver CPU per write of a [`foreign_writer`] creating a
/// NetworkPolicy (egress except the blocked CIDR, which admission admits) and two RoleBindings
/// and applying Pod Security labels in `per` fresh namespaces, with
///
/// - every admission policy binding kube-baseline installs removed (the reference: no tax),
/// - and then installed, with each count of `baseline_counts` of the tax's own baselines (plus
///   `existing` baselines already in the cluster), in namespaces no baseline selects and, where
///   `inside`, in namespaces one of them selects and the operator guards (labelled here: no
///   operator runs).
///
/// Interleaved over `rounds` rounds, so that a shared machine's drift falls on all alike.
/// Returns the samples and the namespaces written, for the caller to delete when it measures
/// nothing more: the namespace controller's deleting thousands of them loads the API server for
/// minutes (it ran under run AG's write styles).
pub async fn foreign_writer_tax(
    admin: &kube::Client,
    existing: usize,
    baseline_counts: &[usize],
    inside: bool,
    per: usize,
    rounds: usize,
) -> (Vec<TaxSample>, Vec<String>) {
    let writer = foreign_writer(admin).await;
    let selected = super::unique("bench-tax");
    let label = super::unique("bench-tax-objects");
    let mut samples = vec![
        TaxSample {
            what: "kube-baseline's admission policies unbound (reference)".into(),
            baselines: None,
            inside: false,
            ms_per_write: Vec::new(),
            policy_ms_per_write: Vec::new(),
        },
        TaxSample {
            what: "only the fence's cluster-wide binding (no baseline)".into(),
            baselines: Some(FENCE_ONLY),
            inside: false,
            ms_per_write: Vec::new(),
            policy_ms_per_write: Vec::new(),
        },
    ];
    for &n in baseline_counts {
        for inside in [false, true].into_iter().filter(|i| !i || (inside && n > 0)) {
            samples.push(TaxSample {
                what: format!(
                    "{} baseline(s), {}",
                    n + existing,
                    if inside {
                        "in namespaces a baseline enforces in"
                    } else {
                        "in namespaces no baseline selects"
                    }
                ),
                baselines: Some(n),
                inside,
                ms_per_write: Vec::new(),
                policy_ms_per_write: Vec::new(),
            });
        }
    }
    let mut namespaces = Vec::new();
    // Every other round runs the samples in reverse, so that no sample always follows the same
    // one (the batch after the fence-only sample ran high in every round of runs AG and AH).
    let count = samples.len();
    for round in 0..rounds {
        for k in 0..count {
            let sample = &mut samples[if round % 2 == 0 { k } else { count - 1 - k }];
            match sample.baselines {
                None => {
                    // Every binding kube-baseline installs (protection and fence): the cluster
                    // as it would be without it.
                    tax_baselines(admin, 0, &selected).await;
                    super::kubectl(&[
                        "delete",
                        "validatingadmissionpolicybinding",
                        "-l",
                        "app.kubernetes.io/name=kube-baseline",
                    ]);
                }
                Some(FENCE_ONLY) => {
                    super::install();
                    tax_baselines(admin, 0, &selected).await;
                    let mut args = vec!["delete", "validatingadmissionpolicybinding"];
                    args.extend(ALL_BUT_THE_FENCE);
                    super::kubectl(&args);
                }
                Some(n) => {
                    super::install();
                    tax_baselines(admin, n, &selected).await;
                }
            }
            // The API server's admission plugin learns of bindings and parameters by watches,
            // and compiles a policy's expressions anew when its bindings come back: it must be
            // done (the API server idle) and a warm-up batch written, not measured, so that no
            // sample pays for that.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let labels: Vec<(&str, &str)> = if sample.inside {
                vec![
                    (super::scenario::SUITE_LABEL, selected.as_str()),
                    (objects::GUARD_LABEL, objects::GUARD_VALUE),
                ]
            } else {
                Vec::new()
            };
            let start = namespaces.len();
            for _ in 0..per + WARM_UP {
                namespaces.push(super::create_namespace(admin, "tax", &labels).await);
            }
            // kube-controller-manager answers each new namespace with writes of its own (its
            // ServiceAccount, its root CA ConfigMap): done before the measured batch too.
            settle_apiserver().await;
            let (warm_up, measured) = namespaces[start..].split_at(WARM_UP);
            raw_write_floor(&writer, warm_up, &label, 8, FLOOR_MANAGED_BY, FloorWrites::Create, None).await;
            let measured = measured.to_vec();
            let policies0 = admission_policy_seconds(admin).await;
            let cp0 = control_plane_cpu();
            raw_write_floor(
                &writer,
                &measured,
                &label,
                8,
                FLOOR_MANAGED_BY,
                FloorWrites::Create,
                None,
            )
            .await;
            let spent = control_plane_cpu()[0] - cp0[0];
            let writes = (floor_writes_per_namespace() * per) as f64;
            sample.ms_per_write.push(spent * 1e3 / writes);
            let in_policies = admission_policy_seconds(admin).await - policies0;
            sample.policy_ms_per_write.push(in_policies * 1e3 / writes);
        }
    }
    super::install();
    tax_baselines(admin, 0, &selected).await;
    (samples, namespaces)
}

/// The tax samples as Markdown rows: each round, the median, and the median against the
/// reference's.
pub fn print_tax(samples: &[TaxSample], per: usize) {
    println!(
        "\n| a foreign writer's write (not the operator, not system:masters; {per} fresh namespaces × {} writes per round) | kube-apiserver CPU per write, each round | median | tax (medians) | in the admission policies by the API server's clock, median per write (against the reference's CPU per write) |",
        floor_writes_per_namespace()
    );
    println!("|---|---|---|---|---|");
    for s in samples {
        let rounds: Vec<String> = s.ms_per_write.iter().map(|m| format!("{m:.2}")).collect();
        let tax = if s.baselines.is_none() {
            "—".to_string()
        } else {
            format!("{:+.1} %", s.tax(&samples[0]))
        };
        let policies = median(&s.policy_ms_per_write);
        println!(
            "| {} | {} ms | {:.2} ms | {tax} | {policies:.3} ms ({:+.1} %) |",
            s.what,
            rounds.join(" / "),
            s.median(),
            policies / samples[0].median() * 100.0
        );
    }
}
