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

#[test]
fn the_guard_label_is_held_only_as_this_operators_own_and_never_selects() {
    let ours = ns_with(&[(GUARD_LABEL, GUARD_VALUE), ("team", "a")], &[GUARD_LABEL]);
    assert!(guard_held(&ours) && guard_owned(&ours));
    assert!(!selectable_labels(&ours).contains_key(GUARD_LABEL));
    let theirs = ns_with(&[(GUARD_LABEL, GUARD_VALUE)], &[]);
    assert!(
        !guard_held(&theirs),
        "set by someone else: this operator applies it again"
    );
    assert!(!guard_owned(&theirs), "and never removes it");
    assert!(selectable_labels(&theirs).contains_key(GUARD_LABEL));
    let changed = ns_with(&[(GUARD_LABEL, "false")], &[GUARD_LABEL]);
    assert!(!guard_held(&changed) && guard_owned(&changed));
}
