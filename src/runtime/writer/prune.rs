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

use super::{Cached, NamespaceWriter};
use crate::api::{DeletionPolicy, SecurityBaseline};
use crate::core::cilium::CiliumNetworkPolicy;
use crate::core::desired::{self, NamespaceFacts, ObjectKey, PSA_PREFIX, Plan};
use crate::core::disposal::{self, Disposal};
use crate::core::objects::{self, FIELD_MANAGER};
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

    /// Hands the Pod Security labels this operator set over to another field manager: they stay
    /// on the namespace as they are, no longer owned (deletionPolicy Orphan).
    async fn release_labels(&self, ns_meta: &kube::api::ObjectMeta) -> ObjectResult {
        let labels = objects::owned_pod_security_labels(ns_meta);
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

    /// Whether the SecurityBaseline `name` with `uid` is gone, read from the API server (the
    /// caches may lag a baseline just created): only a confirmed absence counts.
    async fn baseline_gone(&self, name: &str, uid: &str) -> bool {
        match Api::<SecurityBaseline>::all(self.ctx.client.clone())
            .get_opt(name)
            .await
        {
            Ok(None) => true,
            Ok(Some(b)) => b.uid().as_deref() != Some(uid),
            // Unconfirmed, so the object stays; said, since it stays for as long as reads fail
            // (a missing `get` in the ClusterRole once kept every such object).
            Err(e) => {
                tracing::warn!(namespace = self.ns, baseline = name, error = %e,
                    "could not confirm that a SecurityBaseline an object names is gone; the object stays");
                false
            }
        }
    }

    /// Releases, deletes, or, for an orphan whose baseline is confirmed gone, deletes `obj`;
    /// returns the baseline it belonged to and the result (None for an orphan: there is no
    /// baseline to report it to).
    async fn dispose<K: Cached>(&self, how: Disposal, obj: &K) -> Option<(String, ObjectResult)> {
        match how {
            Disposal::Release(owner) => Some((owner, self.release(obj, || K::managed(self.ctx).forget(obj)).await)),
            Disposal::Delete(owner) => Some((owner, self.delete(obj).await)),
            Disposal::Orphan(baseline, uid) => {
                if !self.baseline_gone(&baseline, &uid).await {
                    return None;
                }
                tracing::warn!(namespace = self.ns, kind = %K::kind(&()), name = %obj.name_any(), %baseline,
                    "deleting an object that names a SecurityBaseline that does not exist");
                // Counted and logged, but attributed to no baseline: none exists to report it.
                self.delete(obj).await;
                None
            }
        }
    }

    /// The objects of kind `K` here that go, each released or deleted as `disposal` says.
    async fn prune_kind<K: Cached>(
        &self,
        disposal: &impl Fn(&ObjectKey, &kube::api::ObjectMeta) -> Option<Disposal>,
        egress_settled: bool,
    ) -> Vec<(Option<String>, ObjectKey, ObjectResult)> {
        let mut out = Vec::new();
        for (name, obj) in K::managed(self.ctx).in_namespace(self.ns) {
            let key = K::key(name);
            let Some(how) = disposal(&key, obj.meta()) else {
                continue;
            };
            if disposal::waits(&key, &how, egress_settled) {
                tracing::info!(namespace = self.ns, object = %key, "kept until the metadata policy that replaces it is in place");
                continue;
            }
            if let Some(done) = self.dispose(how, &obj).await {
                out.push((Some(done.0), key, done.1));
            }
        }
        out
    }

    /// Removes what a known, writing baseline made here and no baseline wants any more, and
    /// what names a baseline that does not exist.
    ///
    /// `egress_settled` says whether every metadata policy the plan wants here is in place: until
    /// it is, no metadata policy is deleted, so switching engines (a NetworkPolicy for a
    /// CiliumNetworkPolicy, or back) writes the new object before the old one goes and the
    /// endpoint is never open in between.
    pub(crate) async fn prune(
        &self,
        ns_meta: &kube::api::ObjectMeta,
        plan: &Plan,
        known: &BTreeMap<String, Arc<SecurityBaseline>>,
        egress_settled: bool,
    ) -> Vec<(Option<String>, ObjectKey, ObjectResult)> {
        let disposal = |key: &ObjectKey, meta: &kube::api::ObjectMeta| disposal::disposal(key, meta, plan, known);
        let mut out = Vec::new();
        out.extend(self.prune_kind::<NetworkPolicy>(&disposal, egress_settled).await);
        out.extend(self.prune_kind::<CiliumNetworkPolicy>(&disposal, egress_settled).await);
        out.extend(self.prune_kind::<RoleBinding>(&disposal, egress_settled).await);
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
                disposal::releasing(b)
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
