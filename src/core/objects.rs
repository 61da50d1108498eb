//! The managed objects as the API server sees them: building them from the desired content,
//! labelling and owning them, and telling whether an actual object already matches. Pure.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::core::desired::{Owner, PSA_PREFIX};

/// The one field manager every write uses (server-side apply).
pub const FIELD_MANAGER: &str = "kube-baseline";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "kube-baseline";
pub const BASELINE_LABEL: &str = "kubebaseline.io/baseline";
/// Marks an object that existed before a baseline took it over: it is released, never deleted.
pub const ADOPTED_ANNOTATION: &str = "kubebaseline.io/adopted";
/// Keeps a baseline until what it must release (Orphan policy, adopted objects) is released.
pub const RELEASE_FINALIZER: &str = "kubebaseline.io/release";

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

/// The namespace labels baselines select on: the Pod Security labels this operator set are left
/// out, so a selector on them cannot flip with the operator's own writes (apply, no longer match,
/// release, match again, ...).
pub fn selectable_labels(ns: &ObjectMeta) -> BTreeMap<String, String> {
    let owned = owned_labels(ns);
    let mut labels = ns.labels.clone().unwrap_or_default();
    labels.retain(|k, _| !(k.starts_with(PSA_PREFIX) && owned.contains(k)));
    labels
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
mod tests {
    use super::*;
    use crate::api::Mode;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    fn owner() -> Owner {
        Owner {
            name: "aks".into(),
            uid: "u1".into(),
            mode: Mode::Enforce,
        }
    }

    fn subject(name: &str) -> Subject {
        Subject {
            kind: "Group".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: name.into(),
            namespace: None,
        }
    }

    fn binding() -> RoleBinding {
        let role_ref = RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "edit".into(),
        };
        role_binding("team-a", "team-edit", &role_ref, &[subject("g1")], &owner())
    }

    #[test]
    fn objects_are_labelled_and_owned_by_their_baseline() {
        let rb = binding();
        let labels = rb.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], "kube-baseline");
        assert_eq!(labels[BASELINE_LABEL], "aks");
        let owner_ref = &rb.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner_ref.kind.as_str(), owner_ref.uid.as_str()),
            ("SecurityBaseline", "u1")
        );
        assert!(has_baseline_owner(&rb.metadata));
    }

    #[test]
    fn extra_subject_or_missing_label_is_drift_but_foreign_annotations_are_not() {
        let desired = binding();
        let mut actual = desired.clone();
        actual.metadata.annotations = Some([("argocd.argoproj.io/tracking-id".to_string(), "x".to_string())].into());
        actual
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "a".into());
        assert!(binding_in_sync(&actual, &desired));

        let mut extra = actual.clone();
        extra.subjects.as_mut().unwrap().push(subject("intruder"));
        assert!(!binding_in_sync(&extra, &desired));

        let mut unlabelled = actual.clone();
        unlabelled.metadata.labels.as_mut().unwrap().remove(BASELINE_LABEL);
        assert!(!binding_in_sync(&unlabelled, &desired));

        let mut orphan = actual;
        orphan.metadata.owner_references = None;
        assert!(!binding_in_sync(&orphan, &desired));
    }

    #[test]
    fn an_object_another_controller_owns_names_its_controller() {
        let mut rb = binding();
        assert_eq!(
            foreign_controller(&rb.metadata),
            None,
            "its baseline is no foreign controller"
        );
        rb.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "squatter".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        assert_eq!(foreign_controller(&rb.metadata).as_deref(), Some("ConfigMap/squatter"));
        rb.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        assert_eq!(
            foreign_controller(&rb.metadata),
            None,
            "an owner that is not the controller"
        );
    }

    #[test]
    fn handing_over_demotes_the_old_baselines_controller_reference() {
        let older = binding();
        let mut desired = binding();
        desired.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-strict".into();
        desired.metadata.owner_references.as_mut().unwrap()[0].name = "strict".into();
        let step = handing_over(&older.metadata, &desired.metadata).expect("a handover");
        let refs = step.owner_references.unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(
            refs.iter().filter(|o| o.controller == Some(true)).count(),
            1,
            "one controller only: {refs:?}"
        );
        assert!(refs.iter().any(|o| o.name == "strict" && o.controller == Some(true)));
        assert!(refs.iter().any(|o| o.name == "aks" && o.controller == Some(false)));
        assert_eq!(
            handing_over(&desired.metadata, &desired.metadata),
            None,
            "same baseline"
        );
    }

    #[test]
    fn an_annotation_someone_writes_cannot_claim_labels_for_the_operator() {
        // The cache's in-memory key has a space, which the API server refuses in any key: the
        // old, writable key is now just an annotation, and managedFields decide.
        assert!(OWNED_LABELS_ANNOTATION.contains(' '));
        let meta = ObjectMeta {
            annotations: Some(
                [(
                    "kubebaseline.io/owned-labels".to_string(),
                    "team,pod-security.kubernetes.io/enforce".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        };
        assert!(owned_labels(&meta).is_empty());
    }

    #[test]
    fn releasing_removes_only_the_operators_marks() {
        let mut rb = binding();
        mark_adopted(&mut rb.metadata);
        rb.metadata.labels.as_mut().unwrap().insert("team".into(), "a".into());
        rb.metadata.owner_references.as_mut().unwrap().push(OwnerReference {
            kind: "Application".into(),
            name: "argo".into(),
            ..Default::default()
        });
        assert!(is_adopted(&rb.metadata));
        let patch = release_patch(&rb.metadata);
        assert_eq!(patch["metadata"]["labels"][MANAGED_BY_LABEL], serde_json::Value::Null);
        assert!(
            patch["metadata"]["labels"].get("team").is_none(),
            "other labels untouched"
        );
        let owners = patch["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0]["kind"], "Application");
    }

    #[test]
    fn ingress_rules_someone_added_are_not_drift_but_policy_types_are() {
        use k8s_openapi::api::networking::v1::NetworkPolicyIngressRule;
        let spec = crate::core::policy::metadata_egress_spec(&["169.254.169.254/32".parse().unwrap()], true);
        let desired = network_policy("team-a", "p", &spec, &owner());
        let mut actual = desired.clone();
        actual.spec.as_mut().unwrap().ingress = Some(vec![NetworkPolicyIngressRule::default()]);
        assert!(policy_in_sync(&actual, &desired));
        actual.spec.as_mut().unwrap().policy_types = Some(vec!["Egress".into(), "Ingress".into()]);
        assert!(!policy_in_sync(&actual, &desired));
    }

    #[test]
    fn selection_ignores_the_pod_security_labels_the_operator_set() {
        let ns = ns_with(
            &[
                ("pod-security.kubernetes.io/enforce", "baseline"),
                ("pod-security.kubernetes.io/warn", "baseline"),
                ("team", "a"),
            ],
            &["pod-security.kubernetes.io/enforce"],
        );
        let labels = selectable_labels(&ns);
        assert!(!labels.contains_key("pod-security.kubernetes.io/enforce"));
        assert!(
            labels.contains_key("pod-security.kubernetes.io/warn"),
            "set by someone else: selectable"
        );
        assert!(labels.contains_key("team"));
    }

    fn ns_with(labels: &[(&str, &str)], owned: &[&str]) -> ObjectMeta {
        let fields: serde_json::Map<String, serde_json::Value> = owned
            .iter()
            .map(|k| (format!("f:{k}"), serde_json::json!({})))
            .collect();
        ObjectMeta {
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some(FIELD_MANAGER.into()),
                operation: Some("Apply".into()),
                fields_v1: Some(FieldsV1(serde_json::json!({"f:metadata": {"f:labels": fields}}))),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn a_stricter_level_set_by_hand_is_kept_and_a_looser_one_raised() {
        let desired: BTreeMap<String, String> = [
            ("pod-security.kubernetes.io/enforce", "baseline"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
            ("pod-security.kubernetes.io/warn", "restricted"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let by_hand = ns_with(
            &[
                ("pod-security.kubernetes.io/enforce", "restricted"),
                ("pod-security.kubernetes.io/enforce-version", "v1.30"),
            ],
            &[],
        );
        let floored = pod_security_floor(&by_hand, &desired);
        assert_eq!(floored.keys().collect::<Vec<_>>(), ["pod-security.kubernetes.io/warn"]);
        assert!(pod_security_in_sync(
            &ns_with(
                &[
                    ("pod-security.kubernetes.io/enforce", "restricted"),
                    ("pod-security.kubernetes.io/warn", "restricted")
                ],
                &["pod-security.kubernetes.io/warn"]
            ),
            &floored
        ));
        // Looser by hand: raised.
        let looser = ns_with(&[("pod-security.kubernetes.io/enforce", "privileged")], &[]);
        assert_eq!(pod_security_floor(&looser, &desired), desired);
        // Set by the operator for an earlier, stricter baseline: the baseline's level wins.
        let ours = ns_with(
            &[("pod-security.kubernetes.io/enforce", "restricted")],
            &["pod-security.kubernetes.io/enforce"],
        );
        assert_eq!(pod_security_floor(&ours, &desired), desired);
    }

    #[test]
    fn pod_security_labels_compare_only_what_the_operator_owns() {
        let desired: BTreeMap<String, String> =
            [("pod-security.kubernetes.io/enforce".to_string(), "baseline".to_string())].into();
        let enforce = ("pod-security.kubernetes.io/enforce", "baseline");
        assert!(pod_security_in_sync(
            &ns_with(&[enforce, ("team", "a")], &["pod-security.kubernetes.io/enforce"]),
            &desired
        ));
        // Removed by a user: drift.
        assert!(!pod_security_in_sync(&ns_with(&[("team", "a")], &[]), &desired));
        // A label the operator set earlier that the baseline no longer wants: must be released.
        let stale = ns_with(
            &[enforce, ("pod-security.kubernetes.io/warn", "restricted")],
            &["pod-security.kubernetes.io/enforce", "pod-security.kubernetes.io/warn"],
        );
        assert!(!pod_security_in_sync(&stale, &desired));
        // The same label set by someone else is theirs.
        let theirs = ns_with(
            &[enforce, ("pod-security.kubernetes.io/warn", "restricted")],
            &["pod-security.kubernetes.io/enforce"],
        );
        assert!(pod_security_in_sync(&theirs, &desired));
    }
}
