//! Property tests of the desired state (`desired.rs`): for arbitrary baselines, what the plan
//! holds does not depend on order and composes strictest-wins.

use super::*;
use crate::api::{Exemption, PodSecurityLevel};
use proptest::prelude::*;

const GROUPS: [&str; 3] = [GROUP_A, GROUP_B, "0f0e0d0c-0b0a-0908-0706-050403020100"];
const CIDRS: [&str; 4] = [
    "169.254.169.254/32",
    "169.254.0.0/16",
    "fd00:ec2::254/128",
    "10.0.0.0/8",
];
const NAMESPACES: [&str; 4] = ["team-a", "team-b", "legacy", "kube-system"];

fn level() -> impl Strategy<Value = Option<PodSecurityLevel>> {
    prop_oneof![
        Just(None),
        Just(Some(PodSecurityLevel::Privileged)),
        Just(Some(PodSecurityLevel::Baseline)),
        Just(Some(PodSecurityLevel::Restricted)),
    ]
}

prop_compose! {
    fn arb_spec()(
        audit in any::<bool>(),
        tier in prop::option::of(prop_oneof![Just("apps"), Just("db")]),
        excluded in prop::sample::subsequence(NAMESPACES.to_vec(), 0..3),
        egress in prop::option::of(prop::sample::subsequence(CIDRS.to_vec(), 1..4)),
        bindings in prop::collection::vec((0usize..3, prop::sample::subsequence(GROUPS.to_vec(), 1..4), any::<bool>()), 0..3),
        psa in (level(), level()),
        exempt in prop::option::of((prop::sample::select(NAMESPACES.to_vec()), 0i64..200)),
    ) -> SecurityBaselineSpec {
        SecurityBaselineSpec {
            mode: if audit { Mode::Audit } else { Mode::Enforce },
            namespace_selector: tier.map(|t| LabelSelector {
                match_labels: Some([("tier".to_string(), t.to_string())].into()),
                ..Default::default()
            }),
            excluded_namespaces: excluded.into_iter().map(String::from).collect(),
            metadata_egress: egress.map(|c| MetadataEgress {
                blocked_cidrs: c.into_iter().map(String::from).collect(),
                ..Default::default()
            }),
            role_bindings: bindings
                .into_iter()
                .enumerate()
                .map(|(i, (role, groups, upper))| BaselineRoleBinding {
                    name: format!("rb-{i}"),
                    cluster_role: ["view", "edit", "admin"][role].into(),
                    groups: groups
                        .into_iter()
                        .map(|g| if upper { g.to_uppercase() } else { g.to_string() })
                        .collect(),
                })
                .collect(),
            pod_security: (psa.0.is_some() || psa.1.is_some()).then(|| PodSecurity {
                enforce: psa.0,
                warn: psa.1,
                ..Default::default()
            }),
            exemptions: exempt
                .map(|(ns, at)| Exemption {
                    namespace: ns.into(),
                    controls: vec![Control::MetadataEgress],
                    reason: "r".into(),
                    expires: Time(Timestamp::from_second(at).unwrap()),
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }
}

fn baselines() -> impl Strategy<Value = Vec<SecurityBaseline>> {
    prop::collection::vec((arb_spec(), 0i64..3), 0..4).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (spec, created))| baseline(&format!("b{i}"), created, spec))
            .collect()
    })
}

/// The same baseline with every list written in another order.
fn reordered(b: &SecurityBaseline) -> SecurityBaseline {
    let mut b = b.clone();
    b.spec.excluded_namespaces.reverse();
    if let Some(e) = b.spec.metadata_egress.as_mut() {
        e.blocked_cidrs.reverse();
    }
    for rb in &mut b.spec.role_bindings {
        rb.groups.reverse();
    }
    b.spec.role_bindings.reverse();
    b
}

proptest! {
    /// For any baselines and namespace: no panic, the same answer twice, and the same
    /// answer whatever the order of the baselines or of the entries of their lists.
    #[test]
    fn plan_is_total_deterministic_and_order_free(
        bs in baselines(),
        ns_name in prop::sample::select(NAMESPACES.to_vec()),
        tier in prop_oneof![Just("apps"), Just("db"), Just("none")],
        now in 0i64..250,
    ) {
        let ns = ns(ns_name, &[("tier", tier)]);
        let refs: Vec<&SecurityBaseline> = bs.iter().collect();
        let first = plan_for(&ns, &refs, now);
        prop_assert_eq!(&first, &plan_for(&ns, &refs, now));
        let backwards: Vec<&SecurityBaseline> = bs.iter().rev().collect();
        prop_assert_eq!(&first, &plan_for(&ns, &backwards, now));
        let shuffled: Vec<SecurityBaseline> = bs.iter().map(reordered).collect();
        let shuffled_refs: Vec<&SecurityBaseline> = shuffled.iter().collect();
        prop_assert_eq!(&first, &plan_for(&ns, &shuffled_refs, now));
    }

    /// Composing never makes a namespace less strict than any one enforcing baseline asks,
    /// and a baseline twice composes to itself (idempotent).
    #[test]
    fn composing_is_never_less_strict_than_any_baseline_and_idempotent(
        bs in baselines(),
        ns_name in prop::sample::select(NAMESPACES.to_vec()),
        tier in prop_oneof![Just("apps"), Just("db"), Just("none")],
    ) {
        let ns = ns(ns_name, &[("tier", tier)]);
        let refs: Vec<&SecurityBaseline> = bs.iter().collect();
        let all = plan_for(&ns, &refs, 0);
        for b in bs.iter().filter(|b| b.spec.mode == Mode::Enforce) {
            let alone = plan_for(&ns, &[b], 0);
            let Some(verdict) = all.verdicts.get(&b.name_any()) else { continue };
            for key in &verdict.wanted {
                let (Some(merged), Some(own)) = (all.objects.get(key), alone.objects.get(key)) else { continue };
                prop_assert!(at_least_as_strict(&merged.content, &own.content), "{key}: {merged:?} vs {own:?}");
            }
            let mut twice = b.clone();
            twice.metadata.name = Some(format!("{}-twin", b.name_any()));
            twice.metadata.uid = Some(format!("{}-twin", b.uid().unwrap_or_default()));
            let doubled = plan_for(&ns, &[b, &twice], 0);
            for (key, own) in &alone.objects {
                prop_assert_eq!(&doubled.objects[key].content, &own.content);
            }
        }
    }
}

/// Whether `merged` blocks every CIDR `own` blocks (and keeps no IPv6 egress `own` cuts
/// off is not required: keeping egress is not a weakness), and sets every Pod Security mode
/// at least as strictly; other kinds must be equal.
fn at_least_as_strict(merged: &Content, own: &Content) -> bool {
    let excepts = |spec: &k8s_openapi::api::networking::v1::NetworkPolicySpec| -> BTreeSet<String> {
        spec.egress
            .iter()
            .flatten()
            .flat_map(|r| r.to.iter().flatten())
            .filter_map(|p| p.ip_block.as_ref())
            .flat_map(|b| b.except.clone().unwrap_or_default())
            .collect()
    };
    match (merged, own) {
        (Content::NetworkPolicy(m), Content::NetworkPolicy(o)) => excepts(o).is_subset(&excepts(m)),
        (Content::PodSecurityLabels(m), Content::PodSecurityLabels(o)) => o.iter().all(|(k, v)| {
            k.ends_with("-version")
                || m.get(k).is_some_and(|mv| {
                    crate::core::objects::pod_security_rank(mv) >= crate::core::objects::pod_security_rank(v)
                })
        }),
        (m, o) => m == o,
    }
}
