//! Which baseline wins where several select a namespace: the older one on a conflict (the name
//! breaking ties), Enforce over an older Audit, and composed controls strictest-wins.

use super::*;

#[test]
fn older_baseline_wins_a_conflict_and_the_younger_reports_it() {
    let older = baseline("zeta", 10, full_spec());
    let mut spec = full_spec();
    spec.role_bindings[0].groups = vec![GROUP_B.into()];
    let younger = baseline("alpha", 20, spec);
    let p = plan_for(&ns("team-a", &[]), &[&younger, &older], 100);
    let rb = ObjectKey::RoleBinding("team-edit".into());
    assert_eq!(p.objects[&rb].owner.name, "zeta");
    assert_eq!(
        p.verdicts["alpha"].conflicts,
        vec![Conflict {
            key: rb,
            winner: "zeta".into()
        }]
    );
    // Identical wants are not conflicts.
    assert_eq!(p.verdicts["alpha"].wanted.len(), 2);
    assert!(p.verdicts["zeta"].conflicts.is_empty());
}

#[test]
fn an_enforcing_baseline_wins_over_an_older_audit_one() {
    let audit = baseline(
        "preview",
        10,
        SecurityBaselineSpec {
            mode: Mode::Audit,
            ..full_spec()
        },
    );
    let enforce = baseline("aks", 20, full_spec());
    let p = plan_for(&ns("team-a", &[]), &[&audit, &enforce], 100);
    assert!(
        p.objects
            .values()
            .all(|o| o.owner.name == "aks" && o.owner.mode == Mode::Enforce)
    );
    assert!(
        p.verdicts["preview"].conflicts.is_empty(),
        "same content: the audit baseline agrees"
    );
}

#[test]
fn same_creation_time_breaks_ties_by_name() {
    let a = baseline(
        "a",
        10,
        SecurityBaselineSpec {
            pod_security: None,
            ..full_spec()
        },
    );
    let mut spec = full_spec();
    spec.metadata_egress = Some(MetadataEgress {
        blocked_cidrs: vec!["169.254.0.0/16".into()],
        ..Default::default()
    });
    let b = baseline("b", 10, spec);
    let p = plan_for(&ns("x", &[]), &[&b, &a], 100);
    assert_eq!(
        p.objects[&ObjectKey::NetworkPolicy("restrict-instance-metadata".into())]
            .owner
            .name,
        "a"
    );
    // Their CIDRs compose: no conflict, both contributed.
    assert!(p.verdicts["b"].conflicts.is_empty());
    assert_eq!(
        p.objects[&ObjectKey::NetworkPolicy("restrict-instance-metadata".into())].contributors,
        ["a", "b"]
    );
}

fn blocked_by(p: &Plan) -> Vec<String> {
    let Content::NetworkPolicy(spec) =
        &p.objects[&ObjectKey::NetworkPolicy("restrict-instance-metadata".into())].content
    else {
        panic!("a NetworkPolicy");
    };
    spec.egress.as_ref().unwrap()[0].to.as_ref().unwrap()[0]
        .ip_block
        .as_ref()
        .unwrap()
        .except
        .clone()
        .unwrap_or_default()
}

#[test]
fn baselines_compose_strictest_wins() {
    // An org-wide baseline, and a stricter one for regulated teams that adds the WireServer and
    // asks for restricted where the org asks for baseline (and for audit where it says nothing).
    let org = baseline("org", 10, full_spec());
    let mut spec = full_spec();
    spec.metadata_egress = Some(MetadataEgress {
        blocked_cidrs: vec!["168.63.129.16/32".into(), "169.254.169.254/32".into()],
        ..Default::default()
    });
    spec.pod_security = Some(PodSecurity {
        enforce: Some(PodSecurityLevel::Restricted),
        audit: Some(PodSecurityLevel::Restricted),
        warn: Some(PodSecurityLevel::Baseline),
        version: "v1.35".into(),
    });
    spec.role_bindings = vec![BaselineRoleBinding {
        name: "auditors".into(),
        cluster_role: "view".into(),
        groups: vec![GROUP_B.into()],
    }];
    let regulated = baseline("regulated", 20, spec);
    let p = plan_for(&ns("payments", &[]), &[&regulated, &org], 100);
    assert!(p.verdicts.values().all(|v| v.conflicts.is_empty()), "{:?}", p.verdicts);
    assert_eq!(blocked_by(&p), ["168.63.129.16/32", "169.254.169.254/32"]);
    let Content::PodSecurityLabels(labels) = &p.objects[&ObjectKey::PodSecurityLabels].content else {
        panic!("labels");
    };
    let label = |k: &str| labels.get(&format!("{PSA_PREFIX}{k}")).map(String::as_str);
    assert_eq!(label("enforce"), Some("restricted"));
    assert_eq!(
        label("enforce-version"),
        Some("v1.35"),
        "the version of the level that won"
    );
    assert_eq!(label("audit"), Some("restricted"));
    // warn: the org's restricted beats the regulated baseline's baseline.
    assert_eq!(
        (label("warn"), label("warn-version")),
        (Some("restricted"), Some("latest"))
    );
    // Bindings of different names each stand; the owner of shared objects is the older.
    assert!(p.objects.contains_key(&ObjectKey::RoleBinding("auditors".into())));
    assert!(p.objects.contains_key(&ObjectKey::RoleBinding("team-edit".into())));
    assert_eq!(p.objects[&ObjectKey::PodSecurityLabels].owner.name, "org");
    assert_eq!(
        p.objects[&ObjectKey::PodSecurityLabels].contributors,
        ["org", "regulated"]
    );
}

#[test]
fn an_audit_baseline_never_changes_what_an_enforcing_one_writes() {
    let enforce = baseline("aks", 20, full_spec());
    let mut spec = full_spec();
    spec.mode = Mode::Audit;
    spec.metadata_egress = Some(MetadataEgress {
        blocked_cidrs: vec!["168.63.129.16/32".into(), "169.254.169.254/32".into()],
        ..Default::default()
    });
    let audit = baseline("preview", 10, spec);
    let p = plan_for(&ns("team-a", &[]), &[&audit, &enforce], 100);
    assert_eq!(blocked_by(&p), ["169.254.169.254/32"]);
    assert_eq!(p.verdicts["preview"].conflicts.len(), 1, "it reports what differs");
}
