//! The object writer: makes one namespace's objects match (apply, adopt, replace, prune,
//! release), writing only where the cache differs. Its callers decide what; it decides how.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use crate::api::{DeletionPolicy, Mode, SecurityBaseline};
use crate::core::desired::{self, Content, DesiredObject, NamespaceFacts, ObjectKey, Owner, PSA_PREFIX, Plan};
use crate::core::objects::{self, BASELINE_LABEL, FIELD_MANAGER};
use crate::runtime::context::{Context, ObjectResult};
use crate::runtime::metrics::Metrics;

/// The field manager that keeps Pod Security labels a deleted Orphan baseline leaves behind.
const RELEASED_MANAGER: &str = "kube-baseline-released";

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
pub(crate) struct NamespaceWriter<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) ns: &'a str,
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
            .get_or_create(&crate::runtime::metrics::ErrorLabel { error: label.into() })
            .inc();
        let (reason, message) = classify(&e);
        warn!(namespace = self.ns, kind, %reason, %message, "write failed");
        ObjectResult::Failed { reason, message }
    }

    fn count_write(&self, verb: &str, kind: &str) {
        self.ctx
            .metrics
            .writes
            .get_or_create(&crate::runtime::metrics::VerbLabel {
                verb: verb.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// Makes one desired object true: compares it with the cache and writes only when they
    /// differ (and the owning baseline enforces).
    pub(crate) async fn ensure(
        &self,
        ns_meta: &kube::api::ObjectMeta,
        key: &ObjectKey,
        want: &DesiredObject,
    ) -> ObjectResult {
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
                if objects::pod_security_in_sync(ns_meta, &labels) || self.just_wrote(ns_meta, &labels) {
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
        let existing = if cached || self.ctx.policy_names.get(self.ns, name).is_none() {
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
            None if self.ctx.binding_names.get(self.ns, name).is_none() => None,
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
            crate::runtime::finalizer::ensure(self.ctx, &owner.name).await?;
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
            Ok(written) => {
                if let Some(rv) = written.resource_version().and_then(|rv| rv.parse().ok()) {
                    let mut map = self.ctx.labels_written.lock().unwrap();
                    map.insert(self.ns.to_string(), (rv, labels.clone()));
                }
                ObjectResult::Repaired(if labels.is_empty() { "Pruned" } else { "Updated" })
            }
            Err(e) => self.failed("Namespace", e),
        }
    }

    /// Whether this process wrote exactly `labels` to the namespace in a version the namespace
    /// cache has not caught up with yet (then there is nothing to write).
    fn just_wrote(&self, ns_meta: &kube::api::ObjectMeta, labels: &BTreeMap<String, String>) -> bool {
        let mut map = self.ctx.labels_written.lock().unwrap();
        let Some((written, wrote)) = map.get(self.ns) else {
            return false;
        };
        let seen: Option<u64> = ns_meta.resource_version.as_ref().and_then(|rv| rv.parse().ok());
        if seen.is_none_or(|seen| seen >= *written) {
            map.remove(self.ns);
            return false;
        }
        wrote == labels
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
    pub(crate) async fn prune(
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
            let b = known
                .get(baseline)
                .filter(|b| crate::runtime::finalizer::releasing(b))?;
            let uid = b.uid()?;
            let owned = meta.owner_references.iter().flatten().any(|o| o.uid == uid);
            (owned && (b.spec.deletion_policy == DeletionPolicy::Orphan || objects::is_adopted(meta)))
                .then(|| baseline.clone())
        };
        // What goes, and how: (the baseline it belonged to, released rather than deleted).
        let disposal = |key: &ObjectKey, meta: &kube::api::ObjectMeta| {
            if let Some(owner) = releasing(meta) {
                return Some((owner, true));
            }
            let owner = prunable(meta).filter(|_| !plan.objects.contains_key(key))?;
            Some((owner, objects::is_adopted(meta)))
        };
        let mut out = Vec::new();
        for (name, obj) in self.ctx.policies.in_namespace(self.ns) {
            let key = ObjectKey::NetworkPolicy(name);
            if let Some((owner, release)) = disposal(&key, &obj.metadata) {
                let result = if release {
                    self.release_policy(&obj).await
                } else {
                    self.delete(obj.as_ref()).await
                };
                out.push((Some(owner), key, result));
            }
        }
        for (name, obj) in self.ctx.bindings.in_namespace(self.ns) {
            let key = ObjectKey::RoleBinding(name);
            if let Some((owner, release)) = disposal(&key, &obj.metadata) {
                let result = if release {
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
                crate::runtime::finalizer::releasing(b)
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
pub(crate) fn verb(cached: bool, existing: Option<&kube::api::ObjectMeta>) -> &'static str {
    match existing {
        _ if cached => "Updated",
        None => "Created",
        Some(meta) if !objects::has_baseline_owner(meta) => "Adopted",
        Some(_) => "Updated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
