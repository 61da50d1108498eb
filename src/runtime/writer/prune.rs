//! The removal half of the writer: what a namespace no longer needs is deleted when a baseline
//! made it, and released (labels, mark and ownerReference removed, content kept) when it was
//! adopted or its baseline is deleted with deletionPolicy Orphan. Never touches what no
//! baseline made.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::NamespaceWriter;
use crate::api::{DeletionPolicy, Mode, SecurityBaseline};
use crate::core::desired::{self, NamespaceFacts, ObjectKey, PSA_PREFIX, Plan};
use crate::core::objects::{self, BASELINE_LABEL, FIELD_MANAGER};
use crate::runtime::context::ObjectResult;
use crate::runtime::metrics::Metrics;

/// The field manager that keeps Pod Security labels a deleted Orphan baseline leaves behind.
const RELEASED_MANAGER: &str = "kube-baseline-released";

impl NamespaceWriter<'_> {
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
        self.release(obj, || self.ctx.policies.forget(obj)).await
    }

    async fn release_binding(&self, obj: &RoleBinding) -> ObjectResult {
        self.release(obj, || self.ctx.bindings.forget(obj)).await
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

    /// Deletes this namespace's objects that name a SecurityBaseline which does not exist
    /// (labelled for it and controlled by it): owned by nothing, they are the garbage collector's
    /// to delete, which after an API server restart can take minutes (its retries back off). The
    /// admission fence cannot refuse them (no policy can say "some baseline exists"); this does
    /// what the garbage collector would, at once. The caches may lag a baseline just created, so
    /// the baseline is read first: only a confirmed absence deletes.
    pub(crate) async fn remove_orphans(&self, known: &BTreeMap<String, Arc<SecurityBaseline>>) {
        let orphan = |meta: &kube::api::ObjectMeta| -> Option<(String, String)> {
            let baseline = meta.labels.as_ref()?.get(BASELINE_LABEL)?;
            if !objects::is_managed(meta) || known.contains_key(baseline) {
                return None;
            }
            let owner = meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.kind == "SecurityBaseline" && o.controller == Some(true) && &o.name == baseline)?;
            Some((baseline.clone(), owner.uid.clone()))
        };
        let policies: Vec<_> = self
            .ctx
            .policies
            .in_namespace(self.ns)
            .into_values()
            .filter_map(|o| orphan(&o.metadata).map(|b| (b, o)))
            .collect();
        let bindings: Vec<_> = self
            .ctx
            .bindings
            .in_namespace(self.ns)
            .into_values()
            .filter_map(|o| orphan(&o.metadata).map(|b| (b, o)))
            .collect();
        if policies.is_empty() && bindings.is_empty() {
            return;
        }
        let api: Api<SecurityBaseline> = Api::all(self.ctx.client.clone());
        let absent = |name: String, uid: String| {
            let api = api.clone();
            async move {
                match api.get_opt(&name).await {
                    Ok(None) => true,
                    Ok(Some(b)) => b.uid() != Some(uid),
                    Err(_) => false,
                }
            }
        };
        for ((baseline, uid), obj) in policies {
            if absent(baseline.clone(), uid).await {
                tracing::warn!(namespace = self.ns, policy = %obj.name_any(), %baseline, "deleting a NetworkPolicy that names a SecurityBaseline that does not exist");
                self.delete(&obj).await;
            }
        }
        for ((baseline, uid), obj) in bindings {
            if absent(baseline.clone(), uid).await {
                tracing::warn!(namespace = self.ns, binding = %obj.name_any(), %baseline, "deleting a RoleBinding that names a SecurityBaseline that does not exist");
                self.delete(&obj).await;
            }
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
                    self.delete(&obj).await
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
                    self.delete(&obj).await
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
