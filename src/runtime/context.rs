//! The controller's shared state: settings, the caches the reconciler reads, the results the
//! status writer aggregates, and the outcome of making one object match.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tracing::info;

use crate::api::{SecurityBaseline, SecurityBaselineStatus};
use crate::core::cilium::CiliumNetworkPolicy;
use crate::core::cluster::Cluster;
use crate::core::desired::{self, ObjectKey};
use crate::core::egress::EgressSummary;
use crate::core::outcomes::Outcomes;
use crate::error::Result;
use crate::runtime::index::NamespacedIndex;
use crate::runtime::managed::ManagedIndex;
use crate::runtime::metrics::Metrics;
use crate::runtime::namespaces::{CachedNamespace, Catalog};

/// The valid baselines, each with its parsed spec.
pub type Selecting = Arc<Vec<(Arc<SecurityBaseline>, desired::ValidBaseline)>>;

/// The resourceVersion a label write produced, and the Pod Security labels it wrote.
pub type LabelsWritten = (u64, BTreeMap<String, String>);

/// Operator settings that shape reconciliation.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces never touched, on top of kube-system, kube-public and kube-node-lease.
    pub system_namespaces: BTreeSet<String>,
    /// How many namespaces are reconciled at once.
    pub concurrency: u16,
    /// How long status changes are gathered before baseline statuses are written.
    pub status_debounce: Duration,
    /// This process's name in Events (the pod name in a cluster).
    pub instance: String,
    /// Reconciles in flight, for `/healthz`.
    pub progress: Arc<crate::runtime::progress::Progress>,
    /// Maintain wgpolicyk8s.io PolicyReports (`--policy-reports`).
    pub policy_reports: bool,
    /// The cluster's address families and policy engine when the controller starts (kept
    /// current afterwards in [`Context::cluster`]).
    pub cluster: Cluster,
    /// How often the cluster's families and engine are read again.
    pub cluster_recheck: Duration,
}

/// What reconciles have found, for the status writer.
#[derive(Default)]
pub struct Results {
    /// Baseline name -> namespace -> outcome.
    pub outcomes: BTreeMap<String, Outcomes>,
    /// Baseline name -> repairs made and not yet written to its status, and the last one's time.
    pub pending_repairs: BTreeMap<String, (i64, Option<Time>)>,
    /// Namespaces reconciled at least once since start: status waits for all of them, so a
    /// restart never writes a half-counted status.
    pub seen: HashSet<String>,
    /// Namespace -> consecutive reconciles with failures, for backoff.
    pub failures: HashMap<String, u32>,
    /// Baseline name -> (its generation, the namespaces that generation may change and that
    /// have not been reconciled against it yet). Status claims a generation only when empty.
    pub pending: BTreeMap<String, (Option<i64>, BTreeSet<String>)>,
    /// Namespaces whose PolicyReport may have to change ("" for the cluster summary).
    pub reports_dirty: BTreeSet<String>,
    /// Baseline name -> namespaces that left it and are not yet in its status.
    pub departures: BTreeMap<String, Vec<crate::api::Departure>>,
}

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub baselines: Store<SecurityBaseline>,
    /// The namespaces in scope (runtime::scope), which the controller reconciles.
    pub namespaces: Store<CachedNamespace>,
    /// Every namespace, compact, and the way into `namespaces`.
    pub catalog: Catalog,
    /// Managed NetworkPolicies (compact; read back whole).
    pub policies: Arc<ManagedIndex<NetworkPolicy>>,
    /// Every NetworkPolicy that can open an external address, summarised for the bypass check.
    pub egress: Arc<NamespacedIndex<EgressSummary>>,
    /// Managed RoleBindings (compact; read back whole).
    pub bindings: Arc<ManagedIndex<RoleBinding>>,
    /// The names of the NetworkPolicies and RoleBindings, managed or not, in the namespaces in
    /// scope (runtime::scope) at their last event: a name here is looked up before it is
    /// written (one that exists unlabelled is adopted); another is created at once, and a create
    /// that finds the name taken (a namespace that came into scope with it) reads it then.
    pub policy_names: Arc<NamespacedIndex<()>>,
    /// The running pods that share their node's network (spec.hostNetwork), by namespace and
    /// name: no NetworkPolicy applies to them, so each is a way around the baseline.
    pub host_network_pods: Arc<NamespacedIndex<()>>,
    pub binding_names: Arc<NamespacedIndex<()>>,
    /// Managed CiliumNetworkPolicies, and the names of all of them (watched only while the API
    /// serves them).
    pub cilium_policies: Arc<ManagedIndex<CiliumNetworkPolicy>>,
    pub cilium_names: Arc<NamespacedIndex<()>>,
    /// Whether the API serves CiliumNetworkPolicies (their watch starts once it does).
    pub cilium_served: tokio::sync::watch::Sender<bool>,
    pub results: Mutex<Results>,
    pub status_changed: tokio::sync::Notify,
    pub events: Arc<crate::runtime::events::Events>,
    /// The PolicyReports this operator keeps, with `--policy-reports`.
    pub reports: Option<Arc<crate::runtime::reports::Reports>>,
    pub metrics: Arc<Metrics>,
    synced: tokio::sync::OnceCell<()>,
    /// The object keys outcomes list as wanted, kept once per distinct list.
    pub wanted_keys: crate::runtime::interner::Interner<Vec<ObjectKey>, Vec<ObjectKey>>,
    /// This process's release-finalizer writes and the writes in flight that need one.
    pub finalizers: crate::runtime::finalizer::Tracker,
    /// Namespace -> (resourceVersion, Pod Security labels) of this process's last label write,
    /// until the namespace cache shows that version: a reconcile in between (triggered by the
    /// watch events of the namespace's other objects) must not write the same labels again.
    pub labels_written: Mutex<HashMap<String, LabelsWritten>>,
    /// Baseline uid -> (resourceVersion, status) of this process's last status write. The
    /// status writer compares with the stored status and trusts this only while the cache has
    /// not seen a newer version; the baseline watch wakes it when someone else changed a status.
    pub status_written: Mutex<HashMap<String, (Option<u64>, SecurityBaselineStatus)>>,
    /// The address families and policy engine of the cluster (runtime::cluster keeps them
    /// current).
    pub cluster: std::sync::RwLock<Cluster>,
    /// When every cache had its first full list.
    pub synced_at: std::sync::OnceLock<Instant>,
    /// Set once every namespace has been reconciled since start (see the status writer).
    pub all_seen: std::sync::OnceLock<()>,
    /// The valid baselines, validated once per change of the baselines rather than on every
    /// watch event that asks which namespaces are in scope (runtime::scope): (the change count
    /// they were made at, them).
    selecting: Mutex<(u64, Option<Selecting>)>,
    baseline_changes: std::sync::atomic::AtomicU64,
    pub(crate) baselines_listed: tokio::sync::watch::Sender<bool>,
    pub(crate) namespaces_listed: tokio::sync::watch::Sender<bool>,
}

pub use crate::core::evaluate::ObjectResult;

impl Context {
    /// The namespace cache has the namespace at resourceVersion `rv`: a label write of this
    /// process up to that version is no longer "just written" (see `labels_written`).
    pub fn label_write_seen(&self, ns: &str, rv: Option<&str>) {
        let Some(seen) = rv.and_then(|rv| rv.parse::<u64>().ok()) else {
            return;
        };
        let mut written = self.labels_written.lock().unwrap();
        if written.get(ns).is_some_and(|(at, _)| *at <= seen) {
            written.remove(ns);
        }
    }

    pub fn new(
        client: Client,
        settings: Settings,
        baselines: Store<SecurityBaseline>,
        catalog: Catalog,
        metrics: Arc<Metrics>,
    ) -> Self {
        let _reporter = Reporter {
            controller: "kube-baseline".into(),
            instance: Some(settings.instance.clone()),
        };
        let cluster = settings.cluster.clone();
        // A controller started again (leadership regained) makes its first pass again.
        metrics.first_pass_complete.set(0);
        Self {
            reports: settings.policy_reports.then(Arc::default),
            events: crate::runtime::events::Events::new(client.clone(), settings.instance.clone(), baselines.clone()),
            client,
            settings,
            baselines,
            namespaces: catalog.store(),
            catalog,
            policies: Arc::default(),
            egress: Arc::default(),
            host_network_pods: Arc::default(),
            bindings: Arc::default(),
            policy_names: Arc::default(),
            binding_names: Arc::default(),
            cilium_policies: Arc::default(),
            cilium_names: Arc::default(),
            cilium_served: tokio::sync::watch::Sender::new(cluster.engine.cilium_policies_served),
            results: Mutex::default(),
            status_changed: tokio::sync::Notify::new(),
            status_written: Mutex::new(HashMap::new()),
            cluster: std::sync::RwLock::new(cluster),
            metrics,
            synced: tokio::sync::OnceCell::new(),
            synced_at: std::sync::OnceLock::new(),
            finalizers: Default::default(),
            all_seen: Default::default(),
            selecting: Mutex::default(),
            baseline_changes: Default::default(),
            wanted_keys: Default::default(),
            labels_written: Mutex::default(),
            baselines_listed: tokio::sync::watch::Sender::new(false),
            namespaces_listed: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Whether any managed object, of any kind, has labels, annotations or owners that match.
    pub fn any_managed(&self, pred: impl Fn(&kube::api::ObjectMeta) -> bool) -> bool {
        self.policies.any(&pred) || self.cilium_policies.any(&pred) || self.bindings.any(&pred)
    }

    /// The namespaces holding a managed object, of any kind, that matches.
    pub fn namespaces_with_managed(&self, pred: impl Fn(&kube::api::ObjectMeta) -> bool) -> Vec<String> {
        let mut out = self.policies.namespaces_where(&pred);
        out.extend(self.cilium_policies.namespaces_where(&pred));
        out.extend(self.bindings.namespaces_where(&pred));
        out
    }

    /// Whether every cache has its first full list.
    pub fn is_synced(&self) -> bool {
        self.synced.initialized()
    }

    /// Waits for every cache: reconciling against a partial view would prune or rewrite
    /// objects that merely have not been listed yet.
    ///
    /// kube-runtime's `Store::wait_until_ready` wakes only the last task that polled it (and the
    /// controller's own runner polls the namespace store's), so readiness is tracked here with
    /// watch channels set from the streams' `InitDone` events instead.
    pub async fn wait_until_synced(&self) {
        self.synced
            .get_or_init(|| async {
                for flag in [&self.baselines_listed, &self.namespaces_listed] {
                    let _ = flag.subscribe().wait_for(|listed| *listed).await;
                }
                self.policies.wait_until_ready().await;
                self.egress.wait_until_ready().await;
                self.bindings.wait_until_ready().await;
                self.policy_names.wait_until_ready().await;
                self.binding_names.wait_until_ready().await;
                // Cilium's policies are listed only where the API serves them.
                if self.cluster.read().unwrap().engine.cilium_policies_served {
                    self.cilium_policies.wait_until_ready().await;
                    self.cilium_names.wait_until_ready().await;
                }
                self.metrics.ready.set(1);
                self.synced_at.get_or_init(Instant::now);
                info!("caches synced");
            })
            .await;
    }

    /// Every event of the baseline watch: the valid baselines are made again when next asked.
    pub fn baselines_changed(&self) {
        self.baseline_changes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The valid baselines, as of the last baseline event.
    pub fn selecting(&self) -> Selecting {
        let changes = self.baseline_changes.load(std::sync::atomic::Ordering::Acquire);
        if let (at, Some(kept)) = &*self.selecting.lock().unwrap()
            && *at == changes
        {
            return kept.clone();
        }
        let made: Selecting = Arc::new(
            self.baselines
                .state()
                .into_iter()
                .filter_map(|b| desired::validate(&b).ok().map(|v| (b, v)))
                .collect(),
        );
        // Kept only if no baseline event came while they were made from the store.
        if self.baseline_changes.load(std::sync::atomic::Ordering::Acquire) == changes {
            *self.selecting.lock().unwrap() = (changes, Some(made.clone()));
        }
        made
    }

    pub(crate) fn validated(
        baselines: &[Arc<SecurityBaseline>],
    ) -> BTreeMap<String, Result<desired::ValidBaseline, desired::InvalidSpec>> {
        baselines.iter().map(|b| (b.name_any(), desired::validate(b))).collect()
    }

    pub(crate) async fn publish(&self, baseline: &str, type_: EventType, reason: &str, note: String) {
        self.events.publish(baseline, type_, reason, note).await;
    }
}
