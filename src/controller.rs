//! The namespace reconciler (DESIGN.md D4): one unit of work per namespace, read from caches,
//! desired state from the pure core, writes only where the cluster differs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PartialObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use crate::api::{DeletionPolicy, Mode, Problem, SecurityBaseline};
use crate::desired::{self, Content, DesiredObject, NamespaceFacts, ObjectKey, Owner, PSA_PREFIX, Plan};
use crate::egress::{self, EgressSummary};
use crate::error::{Error, Result};
use crate::index::NamespacedIndex;
use crate::metrics::Metrics;
use crate::objects::{self, BASELINE_LABEL, FIELD_MANAGER};
use crate::retry::WatchBackoff;
use crate::status::NsOutcome;

/// The field manager that keeps Pod Security labels a deleted Orphan baseline leaves behind.
const RELEASED_MANAGER: &str = "kube-baseline-released";

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
    pub progress: Arc<crate::progress::Progress>,
}

/// What reconciles have found, for the status writer.
#[derive(Default)]
pub struct Results {
    /// Baseline name -> namespace -> outcome.
    pub outcomes: BTreeMap<String, BTreeMap<String, NsOutcome>>,
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
}

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub baselines: Store<SecurityBaseline>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Managed NetworkPolicies, whole.
    pub policies: Arc<NamespacedIndex<NetworkPolicy>>,
    /// Every NetworkPolicy that can open an external address, summarised for the bypass check.
    pub egress: Arc<NamespacedIndex<EgressSummary>>,
    pub bindings: Arc<NamespacedIndex<RoleBinding>>,
    pub results: Mutex<Results>,
    pub status_changed: tokio::sync::Notify,
    pub events: Arc<crate::events::Events>,
    pub metrics: Arc<Metrics>,
    synced: tokio::sync::OnceCell<()>,
    /// Baselines this process gave the release finalizer (the cache may not show it yet).
    pub finalized: Mutex<HashSet<String>>,
    /// When every cache had its first full list.
    pub synced_at: std::sync::OnceLock<Instant>,
    baselines_listed: tokio::sync::watch::Sender<bool>,
    namespaces_listed: tokio::sync::watch::Sender<bool>,
}

/// The result of making one object match.
#[derive(Clone, Debug, PartialEq)]
pub enum ObjectResult {
    InSync,
    /// Created, Updated, Adopted or Pruned.
    Repaired(&'static str),
    /// Differs, but the owning baseline is in Audit mode.
    Drift,
    Failed {
        reason: String,
        message: String,
    },
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        baselines: Store<SecurityBaseline>,
        namespaces: Store<PartialObjectMeta<Namespace>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: "kube-baseline".into(),
            instance: Some(settings.instance.clone()),
        };
        Self {
            events: crate::events::Events::new(Recorder::new(client.clone(), reporter), baselines.clone()),
            client,
            settings,
            baselines,
            namespaces,
            policies: Arc::default(),
            egress: Arc::default(),
            bindings: Arc::default(),
            results: Mutex::default(),
            status_changed: tokio::sync::Notify::new(),
            metrics,
            synced: tokio::sync::OnceCell::new(),
            synced_at: std::sync::OnceLock::new(),
            finalized: Mutex::default(),
            baselines_listed: tokio::sync::watch::Sender::new(false),
            namespaces_listed: tokio::sync::watch::Sender::new(false),
        }
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
                self.metrics.ready.set(1);
                self.synced_at.get_or_init(Instant::now);
                info!("caches synced");
            })
            .await;
    }

    fn validated(
        baselines: &[Arc<SecurityBaseline>],
    ) -> BTreeMap<String, Result<desired::ValidBaseline, desired::InvalidSpec>> {
        baselines.iter().map(|b| (b.name_any(), desired::validate(b))).collect()
    }

    async fn publish(&self, baseline: &str, type_: EventType, reason: &str, note: String) {
        self.events.publish(baseline, type_, reason, note).await;
    }
}

fn classify(e: &kube::Error) -> (String, String) {
    match e {
        kube::Error::Api(s) => {
            let reason = match s.code {
                403 => "Forbidden",
                422 => "Invalid",
                _ => "ApplyFailed",
            };
            (reason.to_string(), s.message.clone())
        }
        other => ("ApplyFailed".to_string(), other.to_string()),
    }
}

/// The controller half that talks to the API server for one namespace.
struct NamespaceWriter<'a> {
    ctx: &'a Context,
    ns: &'a str,
}

impl NamespaceWriter<'_> {
    fn params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    fn failed(&self, kind: &str, e: kube::Error) -> ObjectResult {
        let label = crate::error::kube_error_label(&e);
        self.ctx
            .metrics
            .errors
            .get_or_create(&crate::metrics::ErrorLabel { error: label.into() })
            .inc();
        let (reason, message) = classify(&e);
        warn!(namespace = self.ns, kind, %reason, %message, "write failed");
        ObjectResult::Failed { reason, message }
    }

    fn count_write(&self, verb: &str, kind: &str) {
        self.ctx
            .metrics
            .writes
            .get_or_create(&crate::metrics::VerbLabel {
                verb: verb.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// Makes one desired object true: compares it with the cache and writes only when they
    /// differ (and the owning baseline enforces).
    async fn ensure(&self, ns_meta: &kube::api::ObjectMeta, key: &ObjectKey, want: &DesiredObject) -> ObjectResult {
        let (kind, result) = match (key, &want.content) {
            (ObjectKey::NetworkPolicy(name), Content::NetworkPolicy(spec)) => {
                let mut desired = objects::network_policy(self.ns, name, spec, &want.owner);
                let cached = self.ctx.policies.get(self.ns, name);
                if cached.as_ref().is_some_and(|c| objects::is_adopted(&c.metadata)) {
                    objects::mark_adopted(&mut desired.metadata);
                }
                if cached.as_ref().is_some_and(|a| objects::policy_in_sync(a, &desired)) {
                    return ObjectResult::InSync;
                }
                let result = match self.drift("NetworkPolicy", want) {
                    Some(drift) => drift,
                    None => self.apply_policy(name, &desired, cached.is_some(), &want.owner).await,
                };
                ("NetworkPolicy", result)
            }
            (ObjectKey::RoleBinding(name), Content::RoleBinding { role_ref, subjects }) => {
                let mut desired = objects::role_binding(self.ns, name, role_ref, subjects, &want.owner);
                let cached = self.ctx.bindings.get(self.ns, name);
                if cached.as_ref().is_some_and(|c| objects::is_adopted(&c.metadata)) {
                    objects::mark_adopted(&mut desired.metadata);
                }
                if cached.as_ref().is_some_and(|a| objects::binding_in_sync(a, &desired)) {
                    return ObjectResult::InSync;
                }
                let result = match self.drift("RoleBinding", want) {
                    Some(drift) => drift,
                    None => self.apply_binding(name, &desired, cached, &want.owner).await,
                };
                ("RoleBinding", result)
            }
            (ObjectKey::PodSecurityLabels, Content::PodSecurityLabels(labels)) => {
                let labels = objects::pod_security_floor(ns_meta, labels);
                if objects::pod_security_in_sync(ns_meta, &labels) {
                    return ObjectResult::InSync;
                }
                let result = match self.drift("Namespace", want) {
                    Some(drift) => drift,
                    None => self.apply_labels(&labels).await,
                };
                ("Namespace", result)
            }
            _ => unreachable!("desired content always matches its key"),
        };
        if let ObjectResult::Repaired(_) = result {
            self.ctx.metrics.repairs.get_or_create(&Metrics::kind(kind)).inc();
        }
        result
    }

    /// Counts a difference; in Audit mode that is all that happens.
    fn drift(&self, kind: &str, want: &DesiredObject) -> Option<ObjectResult> {
        self.ctx.metrics.drift.get_or_create(&Metrics::kind(kind)).inc();
        (want.owner.mode != Mode::Enforce).then_some(ObjectResult::Drift)
    }

    /// Applies a policy. One missing from the cache is looked up first: a same-named object no
    /// baseline owns is then adopted, one whose labels were stripped merely repaired.
    async fn apply_policy(&self, name: &str, desired: &NetworkPolicy, cached: bool, owner: &Owner) -> ObjectResult {
        let api: Api<NetworkPolicy> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let existing = if cached {
            None
        } else {
            match api.get_opt(name).await {
                Ok(e) => e,
                Err(e) => return self.failed("NetworkPolicy", e),
            }
        };
        let mut desired = desired.clone();
        if let Err(e) = self
            .prepare(&mut desired.metadata, existing.as_ref().map(|e| &e.metadata), owner)
            .await
        {
            return self.failed("NetworkPolicy", e);
        }
        self.count_write("apply", "NetworkPolicy");
        match api.patch(name, &Self::params(), &Patch::Apply(&desired)).await {
            Ok(written) => {
                // The cache learns of our own write now, not when the watch catches up, so a
                // reconcile in between does not write the same object again.
                self.ctx.policies.apply_own(written);
                ObjectResult::Repaired(verb(cached, existing.as_ref().map(|e| &e.metadata)))
            }
            Err(e) => self.failed("NetworkPolicy", e),
        }
    }

    /// Applies a binding (adopting or replacing what exists, see [`Self::apply_policy`]).
    async fn apply_binding(
        &self,
        name: &str,
        desired: &RoleBinding,
        cached: Option<Arc<RoleBinding>>,
        owner: &Owner,
    ) -> ObjectResult {
        let api: Api<RoleBinding> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let existing = match cached.clone() {
            Some(c) => Some((*c).clone()),
            None => match api.get_opt(name).await {
                Ok(e) => e,
                Err(e) => return self.failed("RoleBinding", e),
            },
        };
        let mut desired = desired.clone();
        if let Err(e) = self
            .prepare(&mut desired.metadata, existing.as_ref().map(|e| &e.metadata), owner)
            .await
        {
            return self.failed("RoleBinding", e);
        }
        let desired = &desired;
        // roleRef is immutable: a binding to another role is replaced, not patched. The API
        // server must first accept the new binding (a dry run under a scratch name: the
        // escalation check and validation run, nothing is stored), so a refused role never
        // leaves the namespace without the old binding.
        if let Some(old) = existing.as_ref().filter(|old| old.role_ref != desired.role_ref) {
            let mut probe = desired.clone();
            probe.metadata.name = Some(format!(
                "{}-kube-baseline-probe",
                name.chars().take(200).collect::<String>()
            ));
            let dry_run = PostParams {
                dry_run: true,
                field_manager: Some(FIELD_MANAGER.into()),
            };
            self.count_write("create", "RoleBinding");
            if let Err(e) = api.create(&dry_run, &probe).await {
                // The new role is refused; the subjects still follow the baseline under the old
                // role, so a group removed from the baseline does not stay bound.
                if objects::is_managed(&old.metadata) {
                    let mut keep_role = desired.clone();
                    keep_role.role_ref = old.role_ref.clone();
                    if !objects::binding_in_sync(old, &keep_role) {
                        self.count_write("apply", "RoleBinding");
                        match api.patch(name, &Self::params(), &Patch::Apply(&keep_role)).await {
                            Ok(written) => self.ctx.bindings.apply_own(written),
                            Err(e) => {
                                warn!(namespace = self.ns, error = %e, "could not update subjects under the old role")
                            }
                        }
                    }
                }
                return self.failed("RoleBinding", e);
            }
            // The operator's identity may delete only bindings that carry its labels (the fence
            // in config/fence): a hand-made binding being adopted is marked first.
            if !objects::is_managed(&old.metadata) {
                let mark = json!({"metadata": {"labels": desired.metadata.labels}});
                self.count_write("patch", "RoleBinding");
                if let Err(e) = api.patch(name, &PatchParams::default(), &Patch::Merge(&mark)).await {
                    return self.failed("RoleBinding", e);
                }
            }
            self.count_write("delete", "RoleBinding");
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: old.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            if let Err(e) = api.delete(name, &dp).await
                && !matches!(&e, kube::Error::Api(s) if s.code == 404)
            {
                return self.failed("RoleBinding", e);
            }
        }
        // After a delete the namespace has no binding until this apply lands: a failure is
        // retried at once (briefly), not after the reconcile backoff.
        let mut retries = [100u64, 300, 900].into_iter();
        loop {
            self.count_write("apply", "RoleBinding");
            match api.patch(name, &Self::params(), &Patch::Apply(desired)).await {
                Ok(written) => {
                    self.ctx.bindings.apply_own(written);
                    return ObjectResult::Repaired(verb(cached.is_some(), existing.as_ref().map(|e| &e.metadata)));
                }
                Err(e) => match retries.next() {
                    Some(ms) if existing.as_ref().is_some_and(|old| old.role_ref != desired.role_ref) => {
                        warn!(namespace = self.ns, error = %e, "apply after replacing a binding failed; retrying");
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    _ => return self.failed("RoleBinding", e),
                },
            }
        }
    }

    /// Before a write: an object that exists but no baseline made is adopted (marked, so it is
    /// released rather than deleted later), and a baseline that will have something to release
    /// (an adopted object, or deletionPolicy Orphan) gets its finalizer first, so deleting it
    /// cannot let the garbage collector delete what it must release.
    async fn prepare(
        &self,
        desired: &mut kube::api::ObjectMeta,
        existing: Option<&kube::api::ObjectMeta>,
        owner: &Owner,
    ) -> kube::Result<()> {
        let adopting = existing.is_some_and(|e| !objects::has_baseline_owner(e));
        if adopting {
            objects::mark_adopted(desired);
        }
        let orphan = self
            .ctx
            .baselines
            .get(&ObjectRef::new(&owner.name))
            .is_some_and(|b| b.spec.deletion_policy == DeletionPolicy::Orphan);
        if adopting || objects::is_adopted(desired) || orphan {
            crate::finalizer::ensure(self.ctx, &owner.name).await?;
        }
        Ok(())
    }

    /// Releases an object: the operator's labels, mark and ownerReference go, the content stays.
    /// `forget` takes it out of the managed cache at once (it is no longer ours).
    async fn release<K>(&self, obj: &K, forget: impl FnOnce()) -> ObjectResult
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let kind = K::kind(&()).to_string();
        self.count_write("patch", &kind);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let patch = objects::release_patch(obj.meta());
        match api.patch(&obj.name_any(), &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                forget();
                ObjectResult::Repaired("Released")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => ObjectResult::InSync,
            Err(e) => self.failed(&kind, e),
        }
    }

    async fn release_policy(&self, obj: &NetworkPolicy) -> ObjectResult {
        self.release(obj, || self.ctx.policies.apply(&watcher::Event::Delete(obj.clone())))
            .await
    }

    async fn release_binding(&self, obj: &RoleBinding) -> ObjectResult {
        self.release(obj, || self.ctx.bindings.apply(&watcher::Event::Delete(obj.clone())))
            .await
    }

    /// Hands the Pod Security labels this operator set over to another field manager: they stay
    /// on the namespace as they are, no longer owned (deletionPolicy Orphan).
    async fn release_labels(&self, ns_meta: &kube::api::ObjectMeta) -> ObjectResult {
        let owned = objects::owned_labels(ns_meta);
        let labels: BTreeMap<String, String> = ns_meta
            .labels
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(PSA_PREFIX) && owned.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let api: Api<Namespace> = Api::all(self.ctx.client.clone());
        let patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns, "labels": labels}});
        self.count_write("apply", "Namespace");
        let keeper = PatchParams::apply(RELEASED_MANAGER).force();
        if let Err(e) = api.patch(self.ns, &keeper, &Patch::Apply(&patch)).await {
            return self.failed("Namespace", e);
        }
        self.apply_labels(&BTreeMap::new()).await
    }

    /// Applies exactly `labels` as this manager's Pod Security labels: labels it set before and
    /// no longer wants are released (removed); other labels are never touched.
    async fn apply_labels(&self, labels: &BTreeMap<String, String>) -> ObjectResult {
        let api: Api<Namespace> = Api::all(self.ctx.client.clone());
        let patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns, "labels": labels}});
        self.count_write("apply", "Namespace");
        match api.patch(self.ns, &Self::params(), &Patch::Apply(&patch)).await {
            Ok(_) => ObjectResult::Repaired(if labels.is_empty() { "Pruned" } else { "Updated" }),
            Err(e) => self.failed("Namespace", e),
        }
    }

    async fn delete<K>(&self, obj: &K) -> ObjectResult
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let kind = K::kind(&()).to_string();
        self.count_write("delete", &kind);
        // The precondition makes sure the object deleted is the one seen in the cache.
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: obj.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&obj.name_any(), &dp).await {
            Ok(_) => {
                self.ctx.metrics.repairs.get_or_create(&Metrics::kind(&kind)).inc();
                ObjectResult::Repaired("Pruned")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => ObjectResult::InSync,
            Err(e) => self.failed(&kind, e),
        }
    }

    /// Removes what a known, writing baseline made here and no baseline wants any more.
    async fn prune(
        &self,
        ns_meta: &kube::api::ObjectMeta,
        plan: &Plan,
        known: &BTreeMap<String, Arc<SecurityBaseline>>,
    ) -> Vec<(Option<String>, ObjectKey, ObjectResult)> {
        // Ours to prune: labelled for a known, writing baseline *and* owned by it (a copy of our
        // object made by someone else keeps the labels but not the ownerReference).
        let prunable = |meta: &kube::api::ObjectMeta| {
            let baseline = meta.labels.as_ref()?.get(BASELINE_LABEL)?;
            let b = known
                .get(baseline)
                .filter(|b| b.spec.mode == Mode::Enforce && !plan.hands_off.contains(baseline))?;
            let uid = b.uid()?;
            meta.owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid)
                .then(|| baseline.clone())
        };
        // A baseline being deleted that holds the release finalizer: what it adopted (and, with
        // deletionPolicy Orphan, everything it made) is released before the finalizer goes.
        let releasing = |meta: &kube::api::ObjectMeta| {
            let baseline = meta.labels.as_ref()?.get(BASELINE_LABEL)?;
            let b = known.get(baseline).filter(|b| crate::finalizer::releasing(b))?;
            let uid = b.uid()?;
            let owned = meta.owner_references.iter().flatten().any(|o| o.uid == uid);
            (owned && (b.spec.deletion_policy == DeletionPolicy::Orphan || objects::is_adopted(meta)))
                .then(|| baseline.clone())
        };
        let mut out = Vec::new();
        for (name, obj) in self.ctx.policies.in_namespace(self.ns) {
            let key = ObjectKey::NetworkPolicy(name);
            if let Some(owner) = releasing(&obj.metadata) {
                out.push((Some(owner), key, self.release_policy(&obj).await));
            } else if let (false, Some(owner)) = (plan.objects.contains_key(&key), prunable(&obj.metadata)) {
                let result = if objects::is_adopted(&obj.metadata) {
                    self.release_policy(&obj).await
                } else {
                    self.delete(obj.as_ref()).await
                };
                out.push((Some(owner), key, result));
            }
        }
        for (name, obj) in self.ctx.bindings.in_namespace(self.ns) {
            let key = ObjectKey::RoleBinding(name);
            if let Some(owner) = releasing(&obj.metadata) {
                out.push((Some(owner), key, self.release_binding(&obj).await));
            } else if let (false, Some(owner)) = (plan.objects.contains_key(&key), prunable(&obj.metadata)) {
                let result = if objects::is_adopted(&obj.metadata) {
                    self.release_binding(&obj).await
                } else {
                    self.delete(obj.as_ref()).await
                };
                out.push((Some(owner), key, result));
            }
        }
        // Pod Security labels have no owner label; release them unless a baseline that keeps
        // its hands off (Audit or invalid) may be the one that set them.
        let owns_psa = objects::owned_labels(ns_meta).iter().any(|k| k.starts_with(PSA_PREFIX));
        if owns_psa && !plan.objects.contains_key(&ObjectKey::PodSecurityLabels) && !plan.keep_pod_security_labels {
            let facts = NamespaceFacts {
                name: self.ns.to_string(),
                labels: objects::selectable_labels(ns_meta),
                terminating: false,
            };
            let orphaned_here = known.values().any(|b| {
                crate::finalizer::releasing(b)
                    && b.spec.deletion_policy == DeletionPolicy::Orphan
                    && b.spec.pod_security.is_some()
                    && desired::validate(b).is_ok_and(|v| desired::selects(b, &v, &facts))
            });
            let released = if orphaned_here {
                self.release_labels(ns_meta).await
            } else {
                self.apply_labels(&BTreeMap::new()).await
            };
            if let ObjectResult::Repaired(_) = released {
                self.ctx
                    .metrics
                    .repairs
                    .get_or_create(&Metrics::kind("Namespace"))
                    .inc();
            }
            out.push((None, ObjectKey::PodSecurityLabels, released));
        }
        out
    }
}

/// How a write repaired an object, from what existed before it.
fn verb(cached: bool, existing: Option<&kube::api::ObjectMeta>) -> &'static str {
    match existing {
        _ if cached => "Updated",
        None => "Created",
        Some(meta) if !objects::has_baseline_owner(meta) => "Adopted",
        Some(_) => "Updated",
    }
}

/// Reconciles one namespace against every baseline.
#[instrument(skip_all, fields(namespace = %ns.name_any()))]
pub async fn reconcile(ns: Arc<PartialObjectMeta<Namespace>>, ctx: Arc<Context>) -> Result<Action> {
    // Bounded: a shutdown stops the streams that would finish the sync, and the controller waits
    // for in-flight reconciles, so an unbounded wait here could hold the process forever.
    if tokio::time::timeout(Duration::from_secs(2), ctx.wait_until_synced())
        .await
        .is_err()
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let started = Instant::now();
    let name = ns.name_any();
    let _in_flight = crate::progress::InFlight::new(&ctx.settings.progress, &name);
    let facts = NamespaceFacts {
        name: name.clone(),
        labels: objects::selectable_labels(&ns.metadata),
        terminating: ns.metadata.deletion_timestamp.is_some(),
    };
    let baselines = ctx.baselines.state();
    let refs: Vec<&SecurityBaseline> = baselines.iter().map(AsRef::as_ref).collect();
    let now = Timestamp::now();
    let plan = desired::plan(
        &facts,
        &refs,
        &Context::validated(&baselines),
        &ctx.settings.system_namespaces,
        now,
    );
    let known: BTreeMap<String, Arc<SecurityBaseline>> = baselines.iter().map(|b| (b.name_any(), b.clone())).collect();

    let mut results: BTreeMap<ObjectKey, ObjectResult> = BTreeMap::new();
    let mut repairs: Vec<(String, ObjectKey, &'static str)> = Vec::new();
    let mut failures = Vec::new();
    if !facts.terminating && !desired::is_system_namespace(&name, &ctx.settings.system_namespaces) {
        let writer = NamespaceWriter { ctx: &ctx, ns: &name };
        for (key, want) in &plan.objects {
            let result = writer.ensure(&ns.metadata, key, want).await;
            if let ObjectResult::Repaired(how) = result {
                repairs.push((want.owner.name.clone(), key.clone(), how));
            }
            results.insert(key.clone(), result);
        }
        // Released Pod Security labels belong to no baseline: logged and counted, not attributed.
        for (owner, key, result) in writer.prune(&ns.metadata, &plan, &known).await {
            match (owner, result) {
                (Some(owner), ObjectResult::Repaired(how)) => repairs.push((owner, key, how)),
                (Some(owner), ObjectResult::Failed { reason, message }) => failures.push((owner, key, reason, message)),
                (None, ObjectResult::Repaired(how)) => info!(object = %key, how, "repaired"),
                _ => {}
            }
        }
    }

    let findings = protection_findings(&ctx, &name, &ns.metadata, &plan);
    let new_problems = record(&ctx, &name, &plan, &results, &findings, &repairs, &baselines);
    for (baseline, key, how) in &repairs {
        info!(baseline, object = %key, how, "repaired");
        ctx.publish(
            baseline,
            EventType::Normal,
            how,
            format!("{how} {key} in namespace {name}"),
        )
        .await;
    }
    for (baseline, problem) in new_problems {
        ctx.publish(
            &baseline,
            EventType::Warning,
            &problem.reason,
            format!("{}/{}: {}", problem.namespace, problem.object, problem.message),
        )
        .await;
    }
    for (baseline, key, reason, message) in &failures {
        ctx.publish(
            baseline,
            EventType::Warning,
            reason,
            format!("could not prune {key} in namespace {name}: {message}"),
        )
        .await;
    }

    ctx.metrics.reconciles.inc();
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    let any_failed = !failures.is_empty() || results.values().any(|r| matches!(r, ObjectResult::Failed { .. }));
    let attempts = {
        let mut r = ctx.results.lock().unwrap();
        if any_failed {
            let n = r.failures.entry(name.clone()).or_default();
            *n += 1;
            *n
        } else {
            r.failures.remove(&name);
            0
        }
    };
    Ok(next_action(attempts, plan.next_expiry, now))
}

/// When to look at a namespace again: failures back off exponentially up to five minutes
/// (never a hot loop); an exemption is re-evaluated the moment it expires; otherwise a slow
/// resync guards against missed events.
fn next_action(failed_attempts: u32, next_expiry: Option<Timestamp>, now: Timestamp) -> Action {
    let resync = Duration::from_secs(3600);
    let expiry = next_expiry.map(|t| {
        let secs = t.duration_since(now).as_secs_f64().max(0.0);
        Duration::from_secs_f64(secs) + Duration::from_millis(500)
    });
    let backoff = (failed_attempts > 0)
        .then(|| Duration::from_secs(5 * 2u64.pow(failed_attempts.min(7) - 1)).min(Duration::from_secs(300)));
    let after = [Some(resync), expiry, backoff]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(resync);
    Action::requeue(after)
}

/// What each selecting baseline finds beyond its own objects: problems (a NetworkPolicy that
/// lets pods reach its blocked CIDRs) and warnings (a Pod Security level admitting hostNetwork
/// pods, which no NetworkPolicy restricts).
#[derive(Default)]
struct Findings {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

fn protection_findings(
    ctx: &Context,
    ns: &str,
    ns_meta: &kube::api::ObjectMeta,
    plan: &Plan,
) -> BTreeMap<String, Findings> {
    let summaries = ctx.egress.in_namespace(ns);
    // The policies the baselines manage here are compared as objects (Drift), not as bypasses.
    let others: Vec<&EgressSummary> = summaries
        .values()
        .filter(|s| !plan.objects.contains_key(&ObjectKey::NetworkPolicy(s.name.clone())))
        .map(AsRef::as_ref)
        .collect();
    let enforce = effective_enforce_level(ns_meta, plan);
    let mut out = BTreeMap::new();
    for (baseline, verdict) in plan.verdicts.iter().filter(|(_, v)| !v.blocked.is_empty()) {
        let f: &mut Findings = out.entry(baseline.clone()).or_default();
        for bypass in egress::bypasses(others.iter().copied(), &verdict.blocked) {
            f.problems.push(Problem {
                namespace: ns.into(),
                object: format!("NetworkPolicy/{}", bypass.policy),
                reason: "Bypassed".into(),
                message: bypass.message(),
            });
        }
        if enforce.as_deref().and_then(objects::pod_security_rank).unwrap_or(0) == 0 {
            f.warnings.push(Problem {
                namespace: ns.into(),
                object: "Namespace/pod-security-labels".into(),
                reason: "HostNetworkAllowed".into(),
                message: format!(
                    "Pod Security enforce level is {}: hostNetwork pods are admitted, and no NetworkPolicy restricts them; set podSecurity.enforce to baseline or restricted",
                    enforce.as_deref().unwrap_or("unset (privileged)")
                ),
            });
        }
    }
    out
}

/// The Pod Security `enforce` level the namespace has once this reconcile's writes land: what an
/// enforcing baseline sets (a stricter level set by hand stays), else the label as it is.
fn effective_enforce_level(ns_meta: &kube::api::ObjectMeta, plan: &Plan) -> Option<String> {
    let key = format!("{PSA_PREFIX}enforce");
    let actual = ns_meta.labels.as_ref().and_then(|l| l.get(&key)).cloned();
    let written = plan
        .objects
        .get(&ObjectKey::PodSecurityLabels)
        .and_then(|want| match &want.content {
            Content::PodSecurityLabels(labels) if want.owner.mode == Mode::Enforce => {
                objects::pod_security_floor(ns_meta, labels).get(&key).cloned()
            }
            _ => None,
        });
    written.or(actual)
}

/// Stores this namespace's outcome for every baseline and returns the problems that are new.
fn record(
    ctx: &Context,
    ns: &str,
    plan: &Plan,
    results: &BTreeMap<ObjectKey, ObjectResult>,
    findings: &BTreeMap<String, Findings>,
    repairs: &[(String, ObjectKey, &'static str)],
    baselines: &[Arc<SecurityBaseline>],
) -> Vec<(String, Problem)> {
    let mut new_problems = Vec::new();
    let mut r = ctx.results.lock().unwrap();
    let mut changed = r.seen.insert(ns.to_string());
    for b in baselines {
        let bname = b.name_any();
        if let Some((generation, left)) = r.pending.get_mut(&bname)
            && *generation == b.metadata.generation
            && left.remove(ns)
        {
            changed = true;
        }
        let outcomes = r.outcomes.entry(bname.clone()).or_default();
        let Some(verdict) = plan.verdicts.get(&bname) else {
            changed |= outcomes.remove(ns).is_some();
            continue;
        };
        let mut problems: Vec<Problem> = verdict
            .conflicts
            .iter()
            .map(|c| Problem {
                namespace: ns.into(),
                object: c.key.to_string(),
                reason: "Conflict".into(),
                message: format!(
                    "the older baseline {} wants this object with different content",
                    c.winner
                ),
            })
            .collect();
        for key in &verdict.wanted {
            let problem = |reason: &str, message: String| Problem {
                namespace: ns.into(),
                object: key.to_string(),
                reason: reason.into(),
                message,
            };
            match results.get(key) {
                Some(ObjectResult::Drift) => problems.push(problem(
                    "Drift",
                    "differs from the baseline (Audit mode: not repaired)".into(),
                )),
                Some(ObjectResult::Failed { reason, message }) => problems.push(problem(reason, message.clone())),
                _ => {}
            }
        }
        let found = findings.get(&bname);
        problems.extend(found.iter().flat_map(|f| f.problems.iter().cloned()));
        let mut outcome = NsOutcome::from_problems(problems, verdict.exemption.clone());
        outcome.warnings = found.map(|f| f.warnings.clone()).unwrap_or_default();
        outcome.generation = b.metadata.generation;
        let previous = outcomes.insert(ns.to_string(), outcome.clone());
        if previous.as_ref() != Some(&outcome) {
            changed = true;
            let old = previous.map(|p| p.problems).unwrap_or_default();
            new_problems.extend(
                outcome
                    .problems
                    .iter()
                    .filter(|p| !old.contains(p))
                    .map(|p| (bname.clone(), p.clone())),
            );
        }
    }
    let now = Time(Timestamp::now());
    for (baseline, _, _) in repairs {
        let pending = r.pending_repairs.entry(baseline.clone()).or_default();
        pending.0 += 1;
        pending.1 = Some(now.clone());
        changed = true;
    }
    drop(r);
    if changed {
        ctx.status_changed.notify_one();
    }
    new_problems
}

pub fn error_policy(_ns: Arc<PartialObjectMeta<Namespace>>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .get_or_create(&crate::metrics::ErrorLabel {
            error: error.metric_label().into(),
        })
        .inc();
    warn!(%error, "reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

/// Baseline events that can change what a namespace should look like: spec changes
/// (generation), deletion, and every object at (re)start. Status-only updates are dropped, so
/// writing a baseline's status does not re-trigger its namespaces.
fn spec_changes(
    events: impl Stream<Item = Result<watcher::Event<SecurityBaseline>, watcher::Error>>,
) -> impl Stream<Item = Result<SecurityBaseline, watcher::Error>> {
    let mut seen: HashMap<String, (Option<i64>, bool)> = HashMap::new();
    events
        .map_ok(move |event| {
            let changed: Vec<SecurityBaseline> = match event {
                watcher::Event::Apply(b) | watcher::Event::InitApply(b) => {
                    let key = (b.metadata.generation, b.metadata.deletion_timestamp.is_some());
                    if seen.insert(b.uid().unwrap_or_default(), key) != Some(key) {
                        vec![b]
                    } else {
                        vec![]
                    }
                }
                watcher::Event::Delete(b) => {
                    seen.remove(&b.uid().unwrap_or_default());
                    vec![b]
                }
                watcher::Event::Init | watcher::Event::InitDone => vec![],
            };
            stream::iter(changed.into_iter().map(Ok))
        })
        .try_flatten()
}

/// The namespaces a baseline change can affect: those it selects, those holding objects it made,
/// and those whose Pod Security labels this operator set.
fn affected_namespaces(ctx: &Context, baseline: &SecurityBaseline) -> Vec<ObjectRef<PartialObjectMeta<Namespace>>> {
    let name = baseline.name_any();
    let mut out = BTreeSet::new();
    let valid = desired::validate(baseline).ok();
    for ns in ctx.namespaces.state() {
        let facts = NamespaceFacts {
            name: ns.name_any(),
            labels: objects::selectable_labels(&ns.metadata),
            terminating: false,
        };
        let selected = valid.as_ref().is_some_and(|v| desired::selects(baseline, v, &facts));
        if selected
            || objects::owned_labels(&ns.metadata)
                .iter()
                .any(|k| k.starts_with(PSA_PREFIX))
        {
            out.insert(facts.name);
        }
    }
    let made_by = |labels: &BTreeMap<String, String>| labels.get(BASELINE_LABEL) == Some(&name);
    out.extend(ctx.policies.namespaces_where(|o| made_by(o.labels())));
    out.extend(ctx.bindings.namespaces_where(|o| made_by(o.labels())));
    // Namespaces it reported on before (an Audit baseline makes no objects): their counts must
    // go when the selector no longer matches.
    out.extend(
        ctx.results
            .lock()
            .unwrap()
            .outcomes
            .get(&name)
            .into_iter()
            .flat_map(|o| o.keys().cloned()),
    );
    debug!(baseline = %name, namespaces = out.len(), "baseline changed");
    ctx.results
        .lock()
        .unwrap()
        .pending
        .insert(name.clone(), (baseline.metadata.generation, out.clone()));
    // A new spec generation needs a status even when no namespace result changes.
    ctx.status_changed.notify_one();
    out.iter().map(|n| ObjectRef::new(n)).collect()
}

/// Watch errors are handled (logged, backed off) by each watch; the controller sees only objects.
fn no_errors<T, E>(item: &Result<T, E>) -> futures::future::Ready<bool> {
    futures::future::ready(item.is_ok())
}

/// Signals every completed (re)list of a watch.
fn on_relist<K>(tx: futures::channel::mpsc::UnboundedSender<()>) -> impl FnMut(&watcher::Event<K>) {
    move |event| {
        if matches!(event, watcher::Event::InitDone) {
            let _ = tx.unbounded_send(());
        }
    }
}

/// Raises a readiness flag when a stream has delivered its first full list.
fn on_listed<K>(
    ctx: Arc<Context>,
    flag: fn(&Context) -> &tokio::sync::watch::Sender<bool>,
) -> impl FnMut(&watcher::Event<K>) {
    move |event| {
        if matches!(event, watcher::Event::InitDone) {
            flag(&ctx).send_replace(true);
        }
    }
}

/// Drops managedFields of other managers: the operator reads only its own entry, and the rest
/// would dominate the cache's memory.
fn keep_own_managed_fields<K: Resource>(obj: &mut K) {
    if let Some(fields) = obj.meta_mut().managed_fields.as_mut() {
        fields.retain(|m| m.manager.as_deref() == Some(FIELD_MANAGER));
    }
}

/// Watches end on the server within 25 s and restart (cheaply, from their resource version), so
/// a connection that died silently is noticed within the client's 30 s read timeout.
fn watch_config() -> watcher::Config {
    watcher::Config::default().timeout(25)
}

/// Builds the controller and its watches; the returned future runs until `shutdown` resolves
/// and in-flight reconciles have finished.
pub fn controller(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> (Arc<Context>, impl std::future::Future<Output = ()>) {
    let managed = watch_config().labels(&objects::managed_selector());
    let (baseline_reader, baseline_writer) = reflector::store();
    let (ns_reader, ns_writer) = reflector::store();
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.clone(),
        baseline_reader,
        ns_reader.clone(),
        metrics,
    ));

    // After any re-list (a 410 after an API server restart, a dropped watch), every namespace is
    // reconciled again: objects deleted during the gap left no event to map from, and a namespace
    // created during the gap arrives before the re-listed store holds it (kube-runtime's runner
    // skips an object its store does not have yet), so it is reconciled once the store swaps.
    let (relisted_tx, relisted) = futures::channel::mpsc::unbounded::<()>();
    let namespaces = watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watch_config())
        .backoff(WatchBackoff::default())
        .modify(keep_own_managed_fields)
        .reflect(ns_writer)
        .inspect_ok(on_listed(ctx.clone(), |c| &c.namespaces_listed))
        .inspect_ok(on_relist(relisted_tx.clone()))
        .applied_objects()
        .filter(no_errors);
    let baselines = spec_changes(
        watcher(Api::<SecurityBaseline>::all(client.clone()), watch_config())
            .backoff(WatchBackoff::default())
            .reflect(baseline_writer)
            .inspect_ok(on_listed(ctx.clone(), |c| &c.baselines_listed))
            .inspect_ok(on_relist(relisted_tx.clone())),
    )
    .filter(no_errors);
    // Every NetworkPolicy, for the bypass check; only managed ones are kept whole, and of the
    // rest only the summary of those that can open an external address.
    let policies = {
        let (managed_index, egress_index) = (ctx.policies.clone(), ctx.egress.clone());
        watcher(Api::<NetworkPolicy>::all(client.clone()), watch_config())
            .backoff(WatchBackoff::default())
            .modify(|o| o.managed_fields_mut().clear())
            .inspect_ok(move |e| {
                managed_index.apply_with(e, |p: &NetworkPolicy| {
                    objects::is_managed(&p.metadata).then(|| p.clone())
                });
                egress_index.apply_with(e, EgressSummary::of);
            })
            .inspect_ok(on_relist(relisted_tx.clone()))
            .touched_objects()
            .filter(no_errors)
    };
    let bindings = {
        let index = ctx.bindings.clone();
        watcher(Api::<RoleBinding>::all(client), managed)
            .backoff(WatchBackoff::default())
            .modify(|o| o.managed_fields_mut().clear())
            .inspect_ok(move |e| index.apply(e))
            .inspect_ok(on_relist(relisted_tx))
            .touched_objects()
            .filter(no_errors)
    };

    let mapper_ctx = ctx.clone();
    let run = Controller::for_stream(namespaces, ns_reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        // Watch errors never reach the controller (each watch backs off on its own): kube-runtime's
        // controller backs off all its triggers on any error, which after an API server restart
        // (several watches answered 410 in turn) kept it deaf for tens of seconds.
        .trigger_backoff(WatchBackoff::default())
        .watches_stream(baselines, move |b| affected_namespaces(&mapper_ctx, &b))
        .watches_stream(policies, |p: NetworkPolicy| p.namespace().map(|ns| ObjectRef::new(&ns)))
        .watches_stream(bindings, |b: RoleBinding| b.namespace().map(|ns| ObjectRef::new(&ns)))
        .reconcile_all_on(relisted)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
            futures::future::ready(())
        });
    (ctx, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_up_to_five_minutes() {
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(next_action(1, None, now), Action::requeue(Duration::from_secs(5)));
        assert_eq!(next_action(3, None, now), Action::requeue(Duration::from_secs(20)));
        assert_eq!(next_action(30, None, now), Action::requeue(Duration::from_secs(300)));
        assert_eq!(next_action(0, None, now), Action::requeue(Duration::from_secs(3600)));
    }

    #[test]
    fn an_exemption_expiry_schedules_the_next_reconcile() {
        let now = Timestamp::from_second(1000).unwrap();
        let expiry = Timestamp::from_second(1060).unwrap();
        assert_eq!(
            next_action(0, Some(expiry), now),
            Action::requeue(Duration::from_millis(60_500))
        );
    }

    #[test]
    fn verb_tells_created_adopted_and_updated_apart() {
        let owned = kube::api::ObjectMeta {
            owner_references: Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "kubebaseline.io/v1alpha1".into(),
                kind: "SecurityBaseline".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(verb(false, None), "Created");
        assert_eq!(verb(false, Some(&kube::api::ObjectMeta::default())), "Adopted");
        assert_eq!(verb(false, Some(&owned)), "Updated");
        assert_eq!(verb(true, None), "Updated");
    }
}
