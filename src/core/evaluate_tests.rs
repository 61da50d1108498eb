//! Unit tests of the read-only judgement (`evaluate.rs`).

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::*;
use crate::api::{
    BaselineRoleBinding, MetadataEgress, PodSecurity, PodSecurityLevel, SecurityBaseline, SecurityBaselineSpec,
};
use crate::core::desired::{self, NamespaceFacts};
use crate::core::status::NsState;

fn spec(mode: Mode) -> SecurityBaselineSpec {
    SecurityBaselineSpec {
        mode,
        metadata_egress: Some(MetadataEgress::default()),
        role_bindings: vec![BaselineRoleBinding {
            name: "team-edit".into(),
            cluster_role: "edit".into(),
            groups: vec!["3f2504e0-4f89-11d3-9a0c-0305e82c3301".into()],
        }],
        pod_security: Some(PodSecurity {
            enforce: Some(PodSecurityLevel::Baseline),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plan(b: &SecurityBaseline) -> Plan {
    plan_on(b, &crate::core::cluster::Cluster::unknown("test"))
}

fn plan_on(b: &SecurityBaseline, cluster: &crate::core::cluster::Cluster) -> Plan {
    let validated = [(b.name_any(), desired::validate(b))].into();
    let facts = NamespaceFacts {
        name: "team-a".into(),
        ..Default::default()
    };
    desired::plan(
        &facts,
        &[b],
        &validated,
        &BTreeSet::new(),
        cluster,
        Timestamp::UNIX_EPOCH,
    )
}

fn on_cilium() -> crate::core::cluster::Cluster {
    crate::core::cluster::Cluster {
        families: Default::default(),
        engine: crate::core::engine::ClusterEngine {
            cilium_policies_served: true,
            cilium_nodes: Some(2),
            unknown: None,
        },
    }
}

/// The namespace's objects exactly as the plan wants them.
fn compliant(
    plan: &Plan,
) -> (
    ObjectMeta,
    BTreeMap<String, NetworkPolicy>,
    BTreeMap<String, RoleBinding>,
) {
    let (mut policies, mut bindings) = (BTreeMap::new(), BTreeMap::new());
    let mut ns = ObjectMeta {
        name: Some("team-a".into()),
        ..Default::default()
    };
    for (key, want) in &plan.objects {
        match key {
            ObjectKey::NetworkPolicy(n) => {
                policies.insert(n.clone(), objects::expected("team-a", n, want, None).unwrap());
            }
            ObjectKey::RoleBinding(n) => {
                bindings.insert(n.clone(), objects::expected("team-a", n, want, None).unwrap());
            }
            ObjectKey::CiliumPolicy(_) => {}
            ObjectKey::PodSecurityLabels => {
                if let Content::PodSecurityLabels(l) = &want.content {
                    ns.labels = Some(l.clone());
                }
            }
        }
    }
    (ns, policies, bindings)
}

fn judge(
    plan: &Plan,
    ns: &ObjectMeta,
    p: &BTreeMap<String, NetworkPolicy>,
    b: &BTreeMap<String, RoleBinding>,
) -> NsOutcome {
    let actual = Actual {
        namespace: ns,
        policies: p,
        cilium_policies: &BTreeMap::new(),
        bindings: b,
    };
    let results = inspect("team-a", plan, &actual);
    let findings = protection_findings("team-a", ns, plan, &summaries(p), &[]);
    outcomes("team-a", plan, &results, &findings).remove("aks").unwrap()
}

#[test]
fn objects_as_the_plan_wants_them_are_compliant() {
    let mut b = SecurityBaseline::new("aks", spec(Mode::Enforce));
    b.metadata.uid = Some("uid-aks".into());
    let plan = plan(&b);
    let (ns, p, rb) = compliant(&plan);
    let outcome = judge(&plan, &ns, &p, &rb);
    assert_eq!(outcome.state, NsState::Compliant, "{:?}", outcome.problems);
    assert_eq!(outcome.wanted.len(), 3);
}

#[test]
fn a_missing_object_and_a_changed_one_are_drift_saying_which() {
    let b = SecurityBaseline::new("aks", spec(Mode::Enforce));
    let plan = plan(&b);
    let (ns, mut p, mut rb) = compliant(&plan);
    p.clear();
    rb.values_mut().for_each(|b| b.subjects = Some(vec![]));
    let outcome = judge(&plan, &ns, &p, &rb);
    assert_eq!(outcome.state, NsState::Drifted);
    let msgs: BTreeMap<&str, &str> = outcome
        .problems
        .iter()
        .map(|p| (p.object.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(msgs["NetworkPolicy/restrict-instance-metadata"], "missing");
    assert_eq!(msgs["RoleBinding/team-edit"], "differs from the baseline");
}

#[test]
fn an_audit_baseline_says_its_drift_is_not_repaired() {
    let b = SecurityBaseline::new("aks", spec(Mode::Audit));
    let plan = plan(&b);
    let (ns, mut p, rb) = compliant(&plan);
    p.clear();
    let outcome = judge(&plan, &ns, &p, &rb);
    assert_eq!(outcome.problems[0].message, "missing (Audit mode: not repaired)");
}

#[test]
fn a_stricter_pod_security_level_set_by_hand_is_not_drift() {
    let b = SecurityBaseline::new("aks", spec(Mode::Enforce));
    let plan = plan(&b);
    let (mut ns, p, rb) = compliant(&plan);
    ns.labels
        .as_mut()
        .unwrap()
        .insert("pod-security.kubernetes.io/enforce".into(), "restricted".into());
    assert_eq!(judge(&plan, &ns, &p, &rb).state, NsState::Compliant);
}

#[test]
fn another_policy_opening_the_metadata_endpoint_is_a_bypass() {
    let b = SecurityBaseline::new("aks", spec(Mode::Enforce));
    let plan = plan(&b);
    let (ns, mut p, rb) = compliant(&plan);
    let open: NetworkPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "allow-all", "namespace": "team-a"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
    }))
    .unwrap();
    p.insert("allow-all".into(), open);
    let outcome = judge(&plan, &ns, &p, &rb);
    assert_eq!(outcome.state, NsState::Bypassed);
    assert_eq!(outcome.problems[0].object, "NetworkPolicy/allow-all");
}

#[test]
fn a_same_named_policy_the_baselines_do_not_own_is_judged_as_a_bypass() {
    // A squatter by the baseline's own name (it could not be adopted): never skipped by name.
    let b = SecurityBaseline::new("aks", spec(Mode::Enforce));
    let plan = plan(&b);
    let (ns, mut p, _) = compliant(&plan);
    let squatter: NetworkPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "restrict-instance-metadata", "namespace": "team-a"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
    }))
    .unwrap();
    p.insert("restrict-instance-metadata".into(), squatter);
    let findings = protection_findings("team-a", &ns, &plan, &summaries(&p), &[]);
    let problems = &findings["aks"].problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].reason, "Bypassed");
    assert_eq!(problems[0].object, "NetworkPolicy/restrict-instance-metadata");
}

#[test]
fn a_running_host_network_pod_is_a_problem_naming_it() {
    let b = SecurityBaseline::new("aks", spec(Mode::Enforce));
    let plan = plan(&b);
    let (ns, p, rb) = compliant(&plan);
    let actual = Actual {
        namespace: &ns,
        policies: &p,
        cilium_policies: &BTreeMap::new(),
        bindings: &rb,
    };
    let results = inspect("team-a", &plan, &actual);
    let findings = protection_findings("team-a", &ns, &plan, &summaries(&p), &["node-agent".into()]);
    let outcome = outcomes("team-a", &plan, &results, &findings).remove("aks").unwrap();
    assert_eq!(outcome.state, NsState::Bypassed);
    assert_eq!(outcome.problems[0].reason, "HostNetworkPod");
    assert_eq!(outcome.problems[0].object, "Pod/node-agent");
    assert!(outcome.problems[0].message.contains("169.254.169.254/32"));
}

#[test]
fn on_cilium_the_deny_policy_is_judged_and_no_team_allow_reopens_it() {
    let mut b = SecurityBaseline::new("aks", spec(Mode::Enforce));
    b.metadata.uid = Some("uid-aks".into());
    let plan = plan_on(&b, &on_cilium());
    let key = ObjectKey::CiliumPolicy("restrict-instance-metadata".into());
    let want = &plan.objects[&key];
    assert!(
        !plan
            .objects
            .contains_key(&ObjectKey::NetworkPolicy("restrict-instance-metadata".into()))
    );
    let (ns, _, rb) = compliant(&plan);
    let cilium: BTreeMap<String, crate::core::cilium::CiliumNetworkPolicy> = [(
        "restrict-instance-metadata".to_string(),
        objects::expected("team-a", "restrict-instance-metadata", want, None).unwrap(),
    )]
    .into();
    // A team policy that allows all egress: a bypass of a NetworkPolicy, not of a Cilium deny.
    let allow_all: NetworkPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "open", "namespace": "team-a"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
    }))
    .unwrap();
    let p: BTreeMap<String, NetworkPolicy> = [("open".to_string(), allow_all)].into();
    let actual = Actual {
        namespace: &ns,
        policies: &p,
        cilium_policies: &cilium,
        bindings: &rb,
    };
    let results = inspect("team-a", &plan, &actual);
    assert_eq!(results[&key], ObjectResult::InSync);
    let findings = protection_findings("team-a", &ns, &plan, &summaries(&p), &[]);
    let outcome = outcomes("team-a", &plan, &results, &findings).remove("aks").unwrap();
    assert_eq!(outcome.state, NsState::Compliant, "{:?}", outcome.problems);
    // hostNetwork pods are outside every pod policy, Cilium's included.
    let findings = protection_findings("team-a", &ns, &plan, &summaries(&p), &["node-agent".into()]);
    let outcome = outcomes("team-a", &plan, &results, &findings).remove("aks").unwrap();
    assert_eq!(outcome.state, NsState::Bypassed);
    // Without the deny policy the namespace is not compliant.
    let actual = Actual {
        cilium_policies: &BTreeMap::new(),
        ..actual
    };
    let results = inspect("team-a", &plan, &actual);
    assert_eq!(results[&key], ObjectResult::drift(false));
}
