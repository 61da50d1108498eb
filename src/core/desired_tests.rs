//! Unit and property tests of the desired state (`desired.rs`): selection, objects, exemptions,
//! validation and departures; which baseline wins is `desired_precedence_tests.rs`.

use super::*;
use crate::api::{BaselineRoleBinding, Exemption, MetadataEgress, PodSecurity, PodSecurityLevel, SecurityBaselineSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, Time};

const GROUP_A: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
const GROUP_B: &str = "6b1c0f7e-2a3d-4c5e-8f90-123456789abc";

fn baseline(name: &str, created_secs: i64, spec: SecurityBaselineSpec) -> SecurityBaseline {
    let mut b = SecurityBaseline::new(name, spec);
    b.metadata.uid = Some(format!("uid-{name}"));
    b.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created_secs).unwrap()));
    b
}

fn full_spec() -> SecurityBaselineSpec {
    SecurityBaselineSpec {
        metadata_egress: Some(MetadataEgress::default()),
        role_bindings: vec![BaselineRoleBinding {
            name: "team-edit".into(),
            cluster_role: "edit".into(),
            groups: vec![GROUP_A.into()],
        }],
        pod_security: Some(PodSecurity {
            enforce: Some(PodSecurityLevel::Baseline),
            warn: Some(PodSecurityLevel::Restricted),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ns(name: &str, labels: &[(&str, &str)]) -> NamespaceFacts {
    NamespaceFacts {
        name: name.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        terminating: false,
    }
}

fn plan_for(ns: &NamespaceFacts, baselines: &[&SecurityBaseline], now: i64) -> Plan {
    let validated = baselines.iter().map(|b| (b.name_any(), validate(b))).collect();
    plan(
        ns,
        baselines,
        &validated,
        &BTreeSet::from(["platform-system".to_string()]),
        &crate::core::cluster::Cluster::unknown("test"),
        Timestamp::from_second(now).unwrap(),
    )
}

#[test]
fn empty_selector_selects_every_user_namespace_with_all_objects() {
    let b = baseline("aks", 0, full_spec());
    let p = plan_for(&ns("team-a", &[]), &[&b], 100);
    let keys: Vec<_> = p.objects.keys().cloned().collect();
    assert_eq!(
        keys,
        vec![
            ObjectKey::NetworkPolicy("restrict-instance-metadata".into()),
            ObjectKey::RoleBinding("team-edit".into()),
            ObjectKey::PodSecurityLabels
        ]
    );
    assert_eq!(p.verdicts["aks"].wanted.len(), 3);
}

#[test]
fn role_binding_subjects_are_exactly_the_declared_groups() {
    let b = baseline("aks", 0, full_spec());
    let p = plan_for(&ns("team-a", &[]), &[&b], 100);
    let Content::RoleBinding { role_ref, subjects } = &p.objects[&ObjectKey::RoleBinding("team-edit".into())].content
    else {
        panic!("not a RoleBinding")
    };
    assert_eq!(role_ref.name, "edit");
    assert_eq!(role_ref.kind, "ClusterRole");
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("Group", GROUP_A)
    );
}

#[test]
fn pod_security_labels_carry_level_and_version_for_each_mode_set() {
    let b = baseline("aks", 0, full_spec());
    let p = plan_for(&ns("team-a", &[]), &[&b], 100);
    let Content::PodSecurityLabels(labels) = &p.objects[&ObjectKey::PodSecurityLabels].content else {
        panic!()
    };
    let expected: BTreeMap<String, String> = [
        ("pod-security.kubernetes.io/enforce", "baseline"),
        ("pod-security.kubernetes.io/enforce-version", "latest"),
        ("pod-security.kubernetes.io/warn", "restricted"),
        ("pod-security.kubernetes.io/warn-version", "latest"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(labels, &expected);
}

#[test]
fn system_excluded_and_terminating_namespaces_get_nothing() {
    let spec = SecurityBaselineSpec {
        excluded_namespaces: vec!["ingress-nginx".into()],
        ..full_spec()
    };
    let b = baseline("aks", 0, spec);
    for name in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "platform-system",
        "ingress-nginx",
    ] {
        let p = plan_for(&ns(name, &[]), &[&b], 100);
        assert!(
            p.objects.is_empty() && p.verdicts.is_empty(),
            "{name} must not be selected"
        );
    }
    let mut terminating = ns("team-a", &[]);
    terminating.terminating = true;
    assert!(plan_for(&terminating, &[&b], 100).objects.is_empty());
}

#[test]
fn label_selector_limits_the_namespaces() {
    let spec = SecurityBaselineSpec {
        namespace_selector: Some(LabelSelector {
            match_labels: Some([("tier".to_string(), "apps".to_string())].into()),
            ..Default::default()
        }),
        ..full_spec()
    };
    let b = baseline("aks", 0, spec);
    assert!(
        plan_for(&ns("a", &[("tier", "apps")]), &[&b], 100)
            .verdicts
            .contains_key("aks")
    );
    assert!(plan_for(&ns("b", &[("tier", "db")]), &[&b], 100).verdicts.is_empty());
}

#[test]
fn a_baseline_being_deleted_wants_nothing_and_keeps_hands_off() {
    let mut b = baseline("aks", 0, full_spec());
    b.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(50).unwrap()));
    let p = plan_for(&ns("team-a", &[]), &[&b], 100);
    assert!(p.objects.is_empty() && p.verdicts.is_empty());
    assert!(p.hands_off.contains("aks"));
    assert!(!p.keep_pod_security_labels, "its labels are released");
}

#[test]
fn pod_security_labels_are_kept_only_for_a_hands_off_baseline_that_wants_them_here() {
    let other = SecurityBaselineSpec {
        mode: Mode::Audit,
        namespace_selector: Some(LabelSelector {
            match_labels: Some([("tier".to_string(), "db".to_string())].into()),
            ..Default::default()
        }),
        ..full_spec()
    };
    let audit = baseline("audit", 0, other);
    assert!(!plan_for(&ns("web", &[("tier", "web")]), &[&audit], 100).keep_pod_security_labels);
    assert!(plan_for(&ns("db", &[("tier", "db")]), &[&audit], 100).keep_pod_security_labels);
}

#[test]
fn exemption_removes_its_controls_until_it_expires() {
    let spec = SecurityBaselineSpec {
        exemptions: vec![Exemption {
            namespace: "legacy".into(),
            controls: vec![Control::MetadataEgress],
            reason: "vendor agent needs IMDS".into(),
            expires: Time(Timestamp::from_second(1000).unwrap()),
        }],
        ..full_spec()
    };
    let b = baseline("aks", 0, spec);
    let before = plan_for(&ns("legacy", &[]), &[&b], 999);
    assert!(
        !before
            .objects
            .contains_key(&ObjectKey::NetworkPolicy("restrict-instance-metadata".into()))
    );
    assert_eq!(before.objects.len(), 2);
    assert_eq!(before.next_expiry, Some(Timestamp::from_second(1000).unwrap()));
    assert_eq!(
        before.verdicts["aks"].exemption.as_ref().unwrap().controls,
        vec![Control::MetadataEgress]
    );

    let after = plan_for(&ns("legacy", &[]), &[&b], 1000);
    assert_eq!(after.objects.len(), 3);
    assert_eq!(after.next_expiry, None);
    // Other namespaces are not exempted.
    assert_eq!(plan_for(&ns("other", &[]), &[&b], 999).objects.len(), 3);
}

#[test]
fn audit_and_invalid_baselines_keep_hands_off() {
    let audit = baseline(
        "audit",
        0,
        SecurityBaselineSpec {
            mode: Mode::Audit,
            ..full_spec()
        },
    );
    let bad_selector = SecurityBaselineSpec {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "Sometimes".into(),
                values: None,
            }]),
            ..Default::default()
        }),
        ..full_spec()
    };
    let invalid = baseline("invalid", 0, bad_selector);
    assert!(validate(&invalid).is_err());
    let p = plan_for(&ns("team-a", &[]), &[&audit, &invalid], 100);
    assert_eq!(
        p.hands_off,
        BTreeSet::from(["audit".to_string(), "invalid".to_string()])
    );
    assert!(!p.verdicts.contains_key("invalid"));
    assert_eq!(p.objects[&ObjectKey::PodSecurityLabels].owner.mode, Mode::Audit);
}

#[test]
fn list_order_and_guid_case_do_not_change_what_is_wanted() {
    let mut a = full_spec();
    a.role_bindings[0].groups = vec![GROUP_B.to_uppercase(), GROUP_A.into()];
    a.metadata_egress = Some(MetadataEgress {
        blocked_cidrs: vec!["169.254.169.254/32".into(), "fd00:ec2::254/128".into()],
        ..Default::default()
    });
    let mut b = a.clone();
    b.role_bindings[0].groups = vec![GROUP_A.into(), GROUP_B.into(), GROUP_A.into()];
    b.metadata_egress.as_mut().unwrap().blocked_cidrs.reverse();
    let (older, younger) = (baseline("older", 10, a), baseline("younger", 20, b));
    let p = plan_for(&ns("team-a", &[]), &[&older, &younger], 100);
    assert!(
        p.verdicts["younger"].conflicts.is_empty(),
        "{:?}",
        p.verdicts["younger"]
    );
    let Content::RoleBinding { subjects, .. } = &p.objects[&ObjectKey::RoleBinding("team-edit".into())].content else {
        panic!("a binding")
    };
    let names: Vec<&str> = subjects.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [GROUP_A, GROUP_B]);
}

#[test]
fn validation_rejects_what_admission_should_have() {
    let mut spec = full_spec();
    spec.role_bindings[0].groups = vec!["alice@example.com".into()];
    assert!(
        validate(&baseline("x", 0, spec.clone()))
            .unwrap_err()
            .0
            .contains("not a GUID")
    );
    spec.group_format = GroupFormat::Any;
    assert!(validate(&baseline("x", 0, spec)).is_ok());

    let mut spec = full_spec();
    spec.role_bindings.push(spec.role_bindings[0].clone());
    assert!(validate(&baseline("x", 0, spec)).unwrap_err().0.contains("duplicate"));

    let mut spec = full_spec();
    spec.metadata_egress = Some(MetadataEgress {
        blocked_cidrs: vec!["169.254.169.254".into()],
        ..Default::default()
    });
    assert!(validate(&baseline("x", 0, spec)).unwrap_err().0.contains("not a CIDR"));
}

#[path = "desired_props.rs"]
mod properties;

#[path = "desired_precedence_tests.rs"]
mod precedence;

#[test]
fn a_departure_names_what_changed() {
    let mut spec = full_spec();
    spec.namespace_selector = Some(LabelSelector {
        match_labels: Some([("team".to_string(), "payments".to_string())].into()),
        ..Default::default()
    });
    spec.excluded_namespaces = vec!["legacy".into()];
    let mut b = baseline("aks", 0, spec);
    b.metadata.generation = Some(1);
    let valid = validate(&b).unwrap();
    let system = BTreeSet::new();
    let why =
        |ns: &NamespaceFacts, b: &SecurityBaseline, then: i64| departure(b, Some(&valid), ns, &system, Some(then));
    // Still selected: no departure.
    assert_eq!(why(&ns("pay", &[("team", "payments")]), &b, 1), None);
    // Its labels changed (the baseline did not).
    let left = why(&ns("pay", &[("team", "checkout")]), &b, 1).unwrap();
    assert!(
        left.starts_with("its labels changed") && left.contains("team=checkout"),
        "{left}"
    );
    // The baseline's spec changed since the namespace was last judged.
    let mut edited = b.clone();
    edited.metadata.generation = Some(2);
    let left = why(&ns("pay", &[("team", "checkout")]), &edited, 1).unwrap();
    assert!(left.starts_with("the baseline's namespaceSelector changed"), "{left}");
    assert!(
        why(&ns("legacy", &[("team", "payments")]), &b, 1)
            .unwrap()
            .contains("excludedNamespaces")
    );
    let mut deleting = b.clone();
    deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    assert!(
        why(&ns("pay", &[("team", "payments")]), &deleting, 1)
            .unwrap()
            .contains("being deleted")
    );
    // A namespace being deleted, or an invalid baseline, is no departure.
    let mut going = ns("pay", &[]);
    going.terminating = true;
    assert_eq!(why(&going, &b, 1), None);
    assert_eq!(departure(&b, None, &ns("pay", &[]), &system, Some(1)), None);
}

#[test]
fn a_namespace_is_guarded_exactly_where_an_enforcing_baseline_selects_it() {
    let enforce = baseline("aks", 0, full_spec());
    let audit = baseline(
        "audit",
        1,
        SecurityBaselineSpec {
            mode: Mode::Audit,
            ..full_spec()
        },
    );
    let mut deleting = baseline("going", 2, full_spec());
    deleting.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(50).unwrap()));
    let only_egress = baseline(
        "egress-only",
        3,
        SecurityBaselineSpec {
            role_bindings: vec![],
            pod_security: None,
            ..full_spec()
        },
    );
    let team = ns("team-a", &[]);
    assert!(plan_for(&team, &[&enforce], 100).guarded);
    assert!(
        plan_for(&team, &[&only_egress], 100).guarded,
        "with or without Pod Security labels to write"
    );
    assert!(
        !plan_for(&team, &[&audit], 100).guarded,
        "an Audit baseline writes nothing"
    );
    assert!(
        !plan_for(&team, &[&deleting], 100).guarded,
        "nor does one being deleted"
    );
    assert!(!plan_for(&team, &[], 100).guarded);
    assert!(!plan_for(&ns("kube-system", &[]), &[&enforce], 100).guarded);
    assert!(!plan_for(&ns("platform-system", &[]), &[&enforce], 100).guarded);
    let mut elsewhere = full_spec();
    elsewhere.excluded_namespaces = vec!["team-a".into()];
    assert!(!plan_for(&team, &[&baseline("excludes", 0, elsewhere)], 100).guarded);
}
