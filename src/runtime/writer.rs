//! The object writer: executes one namespace's plan. It makes each desired object match (apply,
//! adopt, replace), writing only where the cache differs, the same way for every managed kind
//! ([`ManagedKind`]: NetworkPolicy, CiliumNetworkPolicy, RoleBinding; the Pod Security labels
//! are the namespace's own, in [`labels`]). The core decides what; the writer decides how.
//! Removing what is no longer wanted (delete or release) is in [`prune`].

mod labels;
mod prune;
mod replace;

use std::time::Duration;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Resource;
use kube::api::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use tracing::warn;

use crate::api::{DeletionPolicy, Mode};
use crate::core::cilium::CiliumNetworkPolicy;
use crate::core::desired::{Content, DesiredObject, ObjectKey, Owner};
use crate::core::objects::{self, FIELD_MANAGER, ManagedKind};
use crate::runtime::context::{Context, ObjectResult};
use crate::runtime::finalizer::Adopting;
use crate::runtime::index::{NamespacedIndex, revision};
use crate::runtime::managed::ManagedIndex;
use crate::runtime::metrics::Metrics;

/// Where the controller caches a managed kind: its managed objects whole, and the names of the
/// objects of the kind in the namespaces in scope (a name not there is created without a read
/// first; a create that finds it taken reads it then).
pub(crate) trait Cached: ManagedKind {
    fn managed(ctx: &Context) -> &ManagedIndex<Self>;
    fn names(ctx: &Context) -> &NamespacedIndex<()>;
}

impl Cached for NetworkPolicy {
    fn managed(ctx: &Context) -> &ManagedIndex<Self> {
        &ctx.policies
    }
    fn names(ctx: &Context) -> &NamespacedIndex<()> {
        &ctx.policy_names
    }
}

impl Cached for CiliumNetworkPolicy {
    fn managed(ctx: &Context) -> &ManagedIndex<Self> {
        &ctx.cilium_policies
    }
    fn names(ctx: &Context) -> &NamespacedIndex<()> {
        &ctx.cilium_names
    }
}

impl Cached for RoleBinding {
    fn managed(ctx: &Context) -> &ManagedIndex<Self> {
        &ctx.bindings
    }
    fn names(ctx: &Context) -> &NamespacedIndex<()> {
        &ctx.binding_names
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

/// A create that found the name taken: the object was made after the caches were read.
fn is_taken(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// Where a write starts (see [`NamespaceWriter::create_or_find`]).
enum Start<'a, K> {
    Created(K, Option<Adopting<'a>>),
    /// An object of that name that another controller owns (`Kind/name`): never adopted.
    Foreign(String),
    Exists {
        desired: K,
        existing: K,
        adopting: Option<Adopting<'a>>,
    },
}

/// The controller half that talks to the API server for one namespace.
pub(crate) struct NamespaceWriter<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) ns: &'a str,
    /// Whether the namespace must carry the guard label (the plan's [`Plan::guarded`]): every
    /// label apply of this pass says so, since an apply that leaves it out removes it.
    ///
    /// [`Plan::guarded`]: crate::core::desired::Plan::guarded
    pub(crate) guarded: bool,
}

impl<'a> NamespaceWriter<'a> {
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
    pub(crate) async fn ensure(&self, ns_meta: &ObjectMeta, key: &ObjectKey, want: &DesiredObject) -> ObjectResult {
        match key {
            ObjectKey::NetworkPolicy(name) => self.ensure_object::<NetworkPolicy>(name, want).await,
            ObjectKey::CiliumPolicy(name) => self.ensure_object::<CiliumNetworkPolicy>(name, want).await,
            ObjectKey::RoleBinding(name) => self.ensure_object::<RoleBinding>(name, want).await,
            ObjectKey::PodSecurityLabels => match &want.content {
                Content::PodSecurityLabels(labels) => self.ensure_labels(ns_meta, want, labels).await,
                _ => unreachable!("desired content always matches its key"),
            },
        }
    }

    /// [`Self::ensure`] for an object of kind `K`.
    async fn ensure_object<K: Cached>(&self, name: &str, want: &DesiredObject) -> ObjectResult {
        let kind = K::kind(&()).to_string();
        let cached = K::managed(self.ctx).get(self.ns, name);
        let desired = objects::expected(self.ns, name, want, cached.as_ref()).expect("desired content matches its key");
        if cached.as_ref().is_some_and(|a| K::in_sync(a, &desired)) {
            return ObjectResult::InSync;
        }
        let result = match self.drift(&kind, want, cached.is_some()) {
            Some(drift) => drift,
            None => self.apply(name, &desired, cached, &want.owner).await,
        };
        if let ObjectResult::Repaired(_) = result {
            self.ctx.metrics.repairs.get_or_create(&Metrics::kind(&kind)).inc();
        }
        result
    }

    /// [`Self::ensure`] for the namespace's Pod Security labels.
    async fn ensure_labels(
        &self,
        ns_meta: &ObjectMeta,
        want: &DesiredObject,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> ObjectResult {
        let newest = self.newest(ns_meta);
        let ns_meta = newest.as_ref().unwrap_or(ns_meta);
        let labels = objects::pod_security_floor(ns_meta, labels);
        // (The guard label alone is [`Self::ensure_guard`]'s: no Pod Security Event for it.)
        if objects::pod_security_in_sync(ns_meta, &labels) || self.just_wrote(ns_meta, &labels) {
            return ObjectResult::InSync;
        }
        let result = match self.drift("Namespace", want, true) {
            Some(drift) => drift,
            None => self.apply_labels(&labels).await,
        };
        if let ObjectResult::Repaired(_) = result {
            self.ctx
                .metrics
                .repairs
                .get_or_create(&Metrics::kind("Namespace"))
                .inc();
        }
        result
    }

    /// The cache may hold a newer namespace than this reconcile's snapshot (the watch reporting
    /// this process's own label write, which also ends its memo): that one, to judge by, when
    /// it is newer.
    fn newest(&self, ns_meta: &ObjectMeta) -> Option<ObjectMeta> {
        let revision = |m: &ObjectMeta| revision(m.resource_version.as_deref());
        self.ctx
            .namespaces
            .get(&ObjectRef::new(self.ns))
            .map(|n| n.meta_with_labels())
            .filter(|n| revision(n) > revision(ns_meta))
    }

    /// Counts a difference; in Audit mode that is all that happens.
    fn drift(&self, kind: &str, want: &DesiredObject, exists: bool) -> Option<ObjectResult> {
        self.ctx.metrics.drift.get_or_create(&Metrics::kind(kind)).inc();
        (want.owner.mode != Mode::Enforce).then(|| ObjectResult::drift(exists))
    }

    /// The write itself: an object nobody has yet is created (POST), anything else is applied
    /// (server-side apply, forced). The API server spends a third less on a create than on an
    /// apply that creates (`make bench-writes`), and converging is nearly all creates. A created
    /// object's fields are recorded as this manager's `Update` rather than `Apply`: a later
    /// forced apply takes over every field it changes, and fields it stops declaring stay (the
    /// kinds' declared fields never change; a stale ownerReference is the garbage collector's
    /// to remove, and the in-sync checks tolerate an extra one meanwhile).
    async fn write<K>(&self, api: &Api<K>, name: &str, desired: &K, new: bool) -> kube::Result<K>
    where
        K: Resource<DynamicType = ()> + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let kind = K::kind(&());
        if new {
            self.count_write("create", &kind);
            let params = PostParams {
                dry_run: false,
                field_manager: Some(FIELD_MANAGER.into()),
            };
            api.create(&params, desired).await
        } else {
            self.count_write("apply", &kind);
            api.patch(name, &Self::params(), &Patch::Apply(desired)).await
        }
    }

    /// Writes over an object that exists. One another baseline controlled is handed over in two
    /// applies (see [`objects::handing_over`]): the old controller reference would otherwise stay,
    /// and the API server refuses an object with two controllers.
    async fn overwrite<K>(&self, api: &Api<K>, name: &str, existing: &K, desired: &K) -> kube::Result<K>
    where
        K: Resource<DynamicType = ()> + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if let Some(step) = objects::handing_over(existing.meta(), desired.meta()) {
            let mut first = desired.clone();
            *first.meta_mut() = step;
            self.write(api, name, &first, false).await?;
        }
        self.write(api, name, desired, false).await
    }

    /// Where a write starts: created just now (nobody had an object by that name), or what
    /// exists under the name with the object to write over it. The finalizer guard lives until
    /// the written object is in the cache (`apply_own`).
    async fn create_or_find<K>(
        &self,
        api: &Api<K>,
        name: &str,
        desired: &K,
        cached: Option<K>,
        names: &NamespacedIndex<()>,
        owner: &Owner,
    ) -> kube::Result<Start<'a, K>>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let (mut cached, mut read) = (cached, false);
        loop {
            let (desired, existing, adopting) = self
                .before_write(name, desired, cached.take(), names, owner, read)
                .await?;
            if let Some(controller) = existing.as_ref().and_then(|e| objects::foreign_controller(e.meta())) {
                return Ok(Start::Foreign(controller));
            }
            if let Some(existing) = existing {
                return Ok(Start::Exists {
                    desired,
                    existing,
                    adopting,
                });
            }
            match self.write(api, name, &desired, true).await {
                Ok(created) => return Ok(Start::Created(created, adopting)),
                // Made since the caches were read: read it, then adopt or update it.
                Err(e) if is_taken(&e) && !read => read = true,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes an object. One missing from the cache is looked up first: a same-named object no
    /// baseline owns is then adopted, one whose labels were stripped merely repaired, and one
    /// whose immutable fields differ is replaced.
    async fn apply<K: Cached>(&self, name: &str, desired: &K, cached: Option<K>, owner: &Owner) -> ObjectResult {
        let kind = K::kind(&()).to_string();
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let was_cached = cached.is_some();
        let names = K::names(self.ctx);
        let (desired, existing, _adopting) = match self.create_or_find(&api, name, desired, cached, names, owner).await
        {
            Ok(Start::Created(created, _adopting)) => {
                // The cache learns of our own write now, not when the watch catches up, so a
                // reconcile in between does not write the same object again.
                K::managed(self.ctx).apply_own(created);
                return ObjectResult::Repaired(verb(was_cached, None));
            }
            Ok(Start::Foreign(controller)) => return taken_by(&kind, name, &controller),
            Ok(Start::Exists {
                desired,
                existing,
                adopting,
            }) => (desired, existing, adopting),
            Err(e) => return self.failed(&kind, e),
        };
        let desired = &desired;
        let replacing = K::must_replace(&existing, desired);
        if replacing && let Err(refused) = self.make_way_for(&api, name, &existing, desired).await {
            return refused;
        }
        // After a delete the namespace has no such object until this apply lands: a failure is
        // retried at once (briefly), not after the reconcile backoff.
        let mut retries = [100u64, 300, 900].into_iter();
        loop {
            let written = if replacing {
                self.write(&api, name, desired, false).await
            } else {
                self.overwrite(&api, name, &existing, desired).await
            };
            match written {
                Ok(written) => {
                    K::managed(self.ctx).apply_own(written);
                    return ObjectResult::Repaired(verb(was_cached, Some(existing.meta())));
                }
                Err(e) => match retries.next() {
                    Some(ms) if replacing => {
                        warn!(namespace = self.ns, %kind, error = %e, "apply after replacing failed; retrying");
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    _ => return self.failed(&kind, e),
                },
            }
        }
    }

    /// Before a write: what exists under `name` (the cached object; else read, but only when
    /// an object by that name exists at all, which the name index knows, or when `read` says a
    /// create found the name taken), and the object to write. One that exists but no baseline made is adopted (marked, so it is released rather
    /// than deleted later); a baseline that will have something to release (an adopted object,
    /// or deletionPolicy Orphan) gets its finalizer first, so deleting it cannot let the garbage
    /// collector delete what it must release.
    async fn before_write<K>(
        &self,
        name: &str,
        desired: &K,
        cached: Option<K>,
        names: &NamespacedIndex<()>,
        owner: &Owner,
        read: bool,
    ) -> kube::Result<(K, Option<K>, Option<Adopting<'a>>)>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let existing = match cached {
            Some(c) => Some(c),
            None if !read && names.get(self.ns, name).is_none() => None,
            None => {
                Api::<K>::namespaced(self.ctx.client.clone(), self.ns)
                    .get_opt(name)
                    .await?
            }
        };
        let mut desired = desired.clone();
        if existing
            .as_ref()
            .is_some_and(|e| objects::foreign_controller(e.meta()).is_some())
        {
            return Ok((desired, existing, None));
        }
        let adopting = existing
            .as_ref()
            .is_some_and(|e| !objects::has_baseline_owner(e.meta()));
        if adopting {
            objects::mark_adopted(desired.meta_mut());
        }
        let orphan = self
            .ctx
            .baselines
            .get(&ObjectRef::new(&owner.name))
            .is_some_and(|b| b.spec.deletion_policy == DeletionPolicy::Orphan);
        let guard = if objects::is_adopted(desired.meta()) || orphan {
            Some(crate::runtime::finalizer::ensure(self.ctx, &owner.name).await?)
        } else {
            None
        };
        Ok((desired, existing, guard))
    }
}

/// A same-named object another controller owns stands where the baseline's would: reported as a
/// bypass (the baseline is not in force there), never taken over.
fn taken_by(kind: &str, name: &str, controller: &str) -> ObjectResult {
    ObjectResult::Failed {
        reason: "Bypassed".into(),
        message: format!(
            "{kind} {name} exists and is controlled by {controller}: kube-baseline does not take over what another controller owns, so the baseline's {kind} is not in force here. Remove it (or stop its controller making it) and the baseline's own is created"
        ),
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
    fn only_already_exists_means_the_name_is_taken() {
        let api = |code, reason| kube::Error::Api(kube::core::Status::failure("", reason).with_code(code).boxed());
        assert!(is_taken(&api(409, "AlreadyExists")));
        // A conflict on update (stale resourceVersion) is not a create finding the name taken.
        assert!(!is_taken(&api(409, "Conflict")));
        assert!(!is_taken(&api(403, "Forbidden")));
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
