//! The managed objects as the API server sees them: building them from the desired content,
//! labelling and owning them, and telling whether an actual object already matches. Pure.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::core::cilium::{self, CiliumNetworkPolicy, CiliumPolicySpec};
use crate::core::desired::{Content, DesiredObject, ObjectKey, Owner, PSA_PREFIX};

/// The one field manager every write uses (server-side apply).
pub const FIELD_MANAGER: &str = "kube-baseline";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "kube-baseline";
pub const BASELINE_LABEL: &str = "kubebaseline.io/baseline";
/// Marks an object that existed before a baseline took it over: it is released, never deleted.
pub const ADOPTED_ANNOTATION: &str = "kubebaseline.io/adopted";
/// Keeps a baseline until what it must release (Orphan policy, adopted objects) is released.
pub const RELEASE_FINALIZER: &str = "kubebaseline.io/release";
/// The label this operator keeps on every namespace an enforcing baseline selects, and only
/// there: the protection policy's Deny bindings select on it (config/admission), so the API
/// server skips the policy, before any CEL runs, for writes everywhere else. Who may change it
/// is guarded like the Pod Security labels (the protection policy for users, the fence for the
/// operator's own token).
pub const GUARD_LABEL: &str = "kubebaseline.io/guarded";
/// Its one value.
pub const GUARD_VALUE: &str = "true";

/// Whether an object carries the managed-by label (made, adopted, or copied from one that was).
pub fn is_managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGED_BY_VALUE)
}

fn labels(owner: &Owner) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (BASELINE_LABEL.to_string(), owner.name.clone()),
    ])
}

/// Cluster-scoped owners of namespaced dependents are valid: deleting the baseline lets the
/// garbage collector remove what it made.
fn owner_reference(owner: &Owner) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/v1alpha1", crate::api::GROUP),
        kind: "SecurityBaseline".into(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

fn meta(namespace: &str, name: &str, owner: &Owner) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels(owner)),
        // A baseline read from a file (render, audit -f) has no uid yet: no owner to reference.
        owner_references: (!owner.uid.is_empty()).then(|| vec![owner_reference(owner)]),
        ..Default::default()
    }
}

/// A namespaced kind this operator makes for a baseline (NetworkPolicy, CiliumNetworkPolicy,
/// RoleBinding): how it is built from desired content, and when an object holds that content.
/// The writer and the judges work with any of them the same way.
pub trait ManagedKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + serde::Serialize
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The object `content` describes (labels and owner included), or None for another kind's.
    fn build(namespace: &str, name: &str, content: &Content, owner: &Owner) -> Option<Self>;
    /// Whether `actual` holds everything `desired` declares.
    fn in_sync(actual: &Self, desired: &Self) -> bool;
    /// The key of this kind's object `name`.
    fn key(name: String) -> ObjectKey;
    /// Whether `desired` cannot be written over `existing` (an immutable field differs): it is
    /// replaced (deleted, then created) instead.
    fn must_replace(_existing: &Self, _desired: &Self) -> bool {
        false
    }
    /// `desired` with the immutable fields of `existing`: what can be written in place while a
    /// replacement is refused.
    fn keeping_immutable_of(desired: &Self, _existing: &Self) -> Self {
        desired.clone()
    }
    /// The immutable fields, for messages ("binds ClusterRole edit").
    fn immutable_summary(&self) -> String {
        String::new()
    }
}

impl ManagedKind for NetworkPolicy {
    fn build(namespace: &str, name: &str, content: &Content, owner: &Owner) -> Option<Self> {
        match content {
            Content::NetworkPolicy(spec) => Some(network_policy(namespace, name, spec, owner)),
            _ => None,
        }
    }
    fn in_sync(actual: &Self, desired: &Self) -> bool {
        policy_in_sync(actual, desired)
    }
    fn key(name: String) -> ObjectKey {
        ObjectKey::NetworkPolicy(name)
    }
}

impl ManagedKind for CiliumNetworkPolicy {
    fn build(namespace: &str, name: &str, content: &Content, owner: &Owner) -> Option<Self> {
        match content {
            Content::CiliumPolicy(spec) => Some(cilium_policy(namespace, name, spec, owner)),
            _ => None,
        }
    }
    fn in_sync(actual: &Self, desired: &Self) -> bool {
        meta_in_sync(&actual.metadata, &desired.metadata)
            && desired
                .spec
                .as_ref()
                .is_some_and(|d| cilium::spec_in_sync(actual.spec.as_ref(), d))
    }
    fn key(name: String) -> ObjectKey {
        ObjectKey::CiliumPolicy(name)
    }
}

impl ManagedKind for RoleBinding {
    fn build(namespace: &str, name: &str, content: &Content, owner: &Owner) -> Option<Self> {
        match content {
            Content::RoleBinding { role_ref, subjects } => {
                Some(role_binding(namespace, name, role_ref, subjects, owner))
            }
            _ => None,
        }
    }
    fn in_sync(actual: &Self, desired: &Self) -> bool {
        binding_in_sync(actual, desired)
    }
    fn key(name: String) -> ObjectKey {
        ObjectKey::RoleBinding(name)
    }
    /// roleRef is immutable.
    fn must_replace(existing: &Self, desired: &Self) -> bool {
        existing.role_ref != desired.role_ref
    }
    fn keeping_immutable_of(desired: &Self, existing: &Self) -> Self {
        RoleBinding {
            role_ref: existing.role_ref.clone(),
            ..desired.clone()
        }
    }
    fn immutable_summary(&self) -> String {
        format!("binds {} {}", self.role_ref.kind, self.role_ref.name)
    }
}

/// The object a baseline wants, as the API server would store it. An adopted object keeps its
/// adoption mark, so the mark is not drift. None when `want` is another kind's content.
pub fn expected<K: ManagedKind>(namespace: &str, name: &str, want: &DesiredObject, actual: Option<&K>) -> Option<K> {
    let mut desired = K::build(namespace, name, &want.content, &want.owner)?;
    if actual.is_some_and(|a| is_adopted(a.meta())) {
        mark_adopted(desired.meta_mut());
    }
    Some(desired)
}

/// Whether the object a baseline wants is there as wanted.
pub fn holds<K: ManagedKind>(namespace: &str, name: &str, want: &DesiredObject, actual: Option<&K>) -> bool {
    actual.is_some_and(|a| expected(namespace, name, want, Some(a)).is_some_and(|d| K::in_sync(a, &d)))
}

pub fn cilium_policy(namespace: &str, name: &str, spec: &CiliumPolicySpec, owner: &Owner) -> CiliumNetworkPolicy {
    CiliumNetworkPolicy {
        metadata: meta(namespace, name, owner),
        spec: Some(spec.clone()),
        ..Default::default()
    }
}

pub fn network_policy(namespace: &str, name: &str, spec: &NetworkPolicySpec, owner: &Owner) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(namespace, name, owner),
        spec: Some(spec.clone()),
    }
}

pub fn role_binding(
    namespace: &str,
    name: &str,
    role_ref: &RoleRef,
    subjects: &[Subject],
    owner: &Owner,
) -> RoleBinding {
    RoleBinding {
        metadata: meta(namespace, name, owner),
        role_ref: role_ref.clone(),
        subjects: Some(subjects.to_vec()),
    }
}

/// Whether `actual` carries the labels and owner of `desired`. Other labels, annotations and
/// owners belong to someone else and are left alone.
fn meta_in_sync(actual: &ObjectMeta, desired: &ObjectMeta) -> bool {
    let actual_labels = actual.labels.as_ref();
    let labels_ok = desired
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| actual_labels.and_then(|l| l.get(k)) == Some(v));
    let owner_ok = desired.owner_references.iter().flatten().all(|want| {
        actual
            .owner_references
            .iter()
            .flatten()
            .any(|have| have.uid == want.uid && have.controller == want.controller)
    });
    labels_ok && owner_ok
}

/// Compares the fields the operator declares. `ingress` is not one of them: a forced apply
/// cannot remove ingress rules another manager added, so comparing them would rewrite the
/// policy forever; with `policyTypes: [Egress]` (which is compared) they have no effect.
pub fn policy_in_sync(actual: &NetworkPolicy, desired: &NetworkPolicy) -> bool {
    let declared = |p: &NetworkPolicy| p.spec.clone().map(|spec| NetworkPolicySpec { ingress: None, ..spec });
    meta_in_sync(&actual.metadata, &desired.metadata) && declared(actual) == declared(desired)
}

/// Subjects compare as a set: their order grants nothing.
pub fn binding_in_sync(actual: &RoleBinding, desired: &RoleBinding) -> bool {
    let set = |rb: &RoleBinding| -> BTreeSet<(String, Option<String>, String, Option<String>)> {
        rb.subjects
            .iter()
            .flatten()
            .map(|s| (s.kind.clone(), s.api_group.clone(), s.name.clone(), s.namespace.clone()))
            .collect()
    };
    meta_in_sync(&actual.metadata, &desired.metadata)
        && actual.role_ref == desired.role_ref
        && set(actual) == set(desired)
}

/// Whether an object was adopted (it existed before a baseline took it over).
pub fn is_adopted(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ADOPTED_ANNOTATION))
}

/// Adds the adoption mark to an object about to be written.
pub fn mark_adopted(meta: &mut ObjectMeta) {
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(ADOPTED_ANNOTATION.into(), "true".into());
}

/// A JSON merge patch that releases an object: the operator's labels, the adoption mark and the
/// SecurityBaseline ownerReferences go; the content and everything else stay.
pub fn release_patch(meta: &ObjectMeta) -> serde_json::Value {
    let owners: Vec<&OwnerReference> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind != "SecurityBaseline")
        .collect();
    serde_json::json!({"metadata": {
        "labels": {MANAGED_BY_LABEL: null, BASELINE_LABEL: null},
        "annotations": {ADOPTED_ANNOTATION: null},
        "ownerReferences": owners,
    }})
}

/// The controller of an object that is not a SecurityBaseline (`Kind/name`): such an object is
/// never adopted, and the fence refuses it anyway.
pub fn foreign_controller(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && !is_baseline_reference(o))
        .map(|o| format!("{}/{}", o.kind, o.name))
}

fn is_baseline_reference(o: &OwnerReference) -> bool {
    o.kind == "SecurityBaseline" && o.api_version.starts_with(crate::api::GROUP)
}

/// When an object passes from one baseline to another: `desired` with the old baseline's
/// controller reference kept but demoted (`controller: false`). Applying that first takes the
/// old reference over (a created object's references belong to the create, which an apply
/// cannot remove), so the apply of `desired` that follows removes it; one apply with both would
/// be refused (two controllers). None when nothing is handed over.
pub fn handing_over(existing: &ObjectMeta, desired: &ObjectMeta) -> Option<ObjectMeta> {
    let ours: BTreeSet<&str> = desired
        .owner_references
        .iter()
        .flatten()
        .map(|o| o.uid.as_str())
        .collect();
    let old: Vec<OwnerReference> = existing
        .owner_references
        .iter()
        .flatten()
        .filter(|o| is_baseline_reference(o) && o.controller == Some(true) && !ours.contains(o.uid.as_str()))
        .map(|o| OwnerReference {
            controller: Some(false),
            ..o.clone()
        })
        .collect();
    if old.is_empty() {
        return None;
    }
    let mut step = desired.clone();
    step.owner_references.get_or_insert_with(Vec::new).extend(old);
    Some(step)
}

/// Whether an object was made (or adopted) for some SecurityBaseline.
pub fn has_baseline_owner(meta: &ObjectMeta) -> bool {
    meta.owner_references.iter().flatten().any(is_baseline_reference)
}

/// Where the namespace cache's metadata (`runtime::namespaces`) carries the labels this operator
/// owns, in place of its managedFields entry (a JSON tree several times the size of the rest of
/// the namespace): in memory only. The key is not a valid annotation key (it has a space), so
/// the API server refuses it on every object: nobody can write it to override managedFields.
pub const OWNED_LABELS_ANNOTATION: &str = "kubebaseline.io/owned labels (in memory)";

/// The namespace labels this operator owns, read from its server-side-apply managedFields entry
/// (or, from the namespace cache, from [`OWNED_LABELS_ANNOTATION`]).
pub fn owned_labels(meta: &ObjectMeta) -> BTreeSet<String> {
    if let Some(kept) = meta.annotations.as_ref().and_then(|a| a.get(OWNED_LABELS_ANNOTATION)) {
        return kept.split(',').filter(|k| !k.is_empty()).map(str::to_string).collect();
    }
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply"))
        .filter_map(|m| m.fields_v1.as_ref())
        .filter_map(|f| f.0.get("f:metadata")?.get("f:labels")?.as_object().cloned())
        .flat_map(|labels| {
            labels
                .into_iter()
                .filter_map(|(k, _)| k.strip_prefix("f:").map(str::to_string))
        })
        .collect()
}

/// The namespace labels baselines select on: the Pod Security labels and the guard label this
/// operator set are left out, so a selector on them cannot flip with the operator's own writes
/// (apply, no longer match, release, match again, ...).
pub fn selectable_labels(ns: &ObjectMeta) -> BTreeMap<String, String> {
    let owned = owned_labels(ns);
    let mut labels = ns.labels.clone().unwrap_or_default();
    labels.retain(|k, _| !((k.starts_with(PSA_PREFIX) || k == GUARD_LABEL) && owned.contains(k)));
    labels
}

/// The Pod Security labels this operator set on the namespace, with their current values.
pub fn owned_pod_security_labels(ns: &ObjectMeta) -> BTreeMap<String, String> {
    let owned = owned_labels(ns);
    ns.labels
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(PSA_PREFIX) && owned.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether the namespace carries the guard label as this operator's own (set by its apply).
pub fn guard_held(ns: &ObjectMeta) -> bool {
    ns.labels.as_ref().and_then(|l| l.get(GUARD_LABEL)).map(String::as_str) == Some(GUARD_VALUE)
        && owned_labels(ns).contains(GUARD_LABEL)
}

/// Whether this operator owns the guard label of the namespace (whatever its value).
pub fn guard_owned(ns: &ObjectMeta) -> bool {
    owned_labels(ns).contains(GUARD_LABEL)
}

/// Pod Security levels from loosest to strictest; None for a value that is not a level.
pub fn pod_security_rank(level: &str) -> Option<u8> {
    match level {
        "privileged" => Some(0),
        "baseline" => Some(1),
        "restricted" => Some(2),
        _ => None,
    }
}

/// The baseline's Pod Security labels as a floor: a mode whose level someone else set stricter
/// than the baseline's (restricted > baseline > privileged) keeps that level and its version,
/// since writing the baseline's level there would make the namespace less secure. A label this
/// operator set itself is not a floor: the baseline's current level replaces it.
pub fn pod_security_floor(ns: &ObjectMeta, desired: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let owned = owned_labels(ns);
    let actual = ns.labels.clone().unwrap_or_default();
    let stricter_by_hand = |mode_label: &str| {
        let (Some(have), Some(want)) = (actual.get(mode_label), desired.get(mode_label)) else {
            return false;
        };
        !owned.contains(mode_label)
            && pod_security_rank(have)
                .zip(pod_security_rank(want))
                .is_some_and(|(h, w)| h > w)
    };
    desired
        .iter()
        .filter(|(k, _)| !stricter_by_hand(k.strip_suffix("-version").unwrap_or(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether the namespace carries exactly the desired Pod Security labels as far as this operator
/// is concerned: every desired label has its value, and no label it owns is left over.
pub fn pod_security_in_sync(ns: &ObjectMeta, desired: &BTreeMap<String, String>) -> bool {
    let actual = ns.labels.as_ref();
    let values_ok = desired.iter().all(|(k, v)| actual.and_then(|l| l.get(k)) == Some(v));
    let owned: BTreeSet<String> = owned_labels(ns)
        .into_iter()
        .filter(|k| k.starts_with(PSA_PREFIX))
        .collect();
    values_ok && owned.iter().all(|k| desired.contains_key(k))
}

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;
