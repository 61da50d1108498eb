//! Unit and property tests of the effective-egress evaluator (`egress.rs`).

use super::*;
use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicySpec};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const IMDS: &str = "169.254.169.254";

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn policy(
    name: &str,
    selector: &[(&str, &str)],
    types: &[&str],
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    let mut p = NetworkPolicy {
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: (!selector.is_empty())
                    .then(|| selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            }),
            policy_types: (!types.is_empty()).then(|| types.iter().map(|t| t.to_string()).collect()),
            egress: Some(egress),
            ingress: None,
        }),
        ..Default::default()
    };
    p.metadata.name = Some(name.into());
    p
}

fn to_block(cidr: &str, except: &[&str]) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.into(),
                except: (!except.is_empty()).then(|| except.iter().map(|e| e.to_string()).collect()),
            }),
            ..Default::default()
        }]),
        ports: None,
    }
}

fn open_rule() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule::default()
}

fn baseline_policy() -> NetworkPolicy {
    let mut p = NetworkPolicy {
        spec: Some(crate::core::policy::metadata_egress_spec(
            &[net("169.254.169.254/32")],
            true,
        )),
        ..Default::default()
    };
    p.metadata.name = Some("restrict-instance-metadata".into());
    p
}

fn found(policies: &[NetworkPolicy]) -> Vec<Bypass> {
    let summaries: Vec<EgressSummary> = policies.iter().filter_map(EgressSummary::of).collect();
    bypasses(&summaries, &[net("169.254.169.254/32")])
}

#[test]
fn the_baseline_policy_alone_opens_nothing() {
    assert!(found(&[baseline_policy()]).is_empty());
    let labels = BTreeMap::new();
    assert!(!may_reach(&[baseline_policy()], &labels, ip(IMDS), 80, "TCP"));
    assert!(may_reach(&[baseline_policy()], &labels, ip("10.0.0.1"), 80, "TCP"));
}

#[test]
fn an_allow_all_egress_policy_is_a_bypass_for_the_pods_it_selects() {
    let allow_all = policy("allow-all", &[], &["Egress"], vec![open_rule()]);
    let bypass = &found(&[baseline_policy(), allow_all.clone()])[0];
    assert_eq!(
        (bypass.policy.as_str(), bypass.rule, bypass.anywhere),
        ("allow-all", 0, true)
    );
    assert!(bypass.message().contains("every pod"), "{}", bypass.message());
    assert!(may_reach(
        &[baseline_policy(), allow_all],
        &BTreeMap::new(),
        ip(IMDS),
        80,
        "TCP"
    ));

    let web_only = policy("web", &[("app", "web")], &["Egress"], vec![open_rule()]);
    let bypass = &found(std::slice::from_ref(&web_only))[0];
    assert_eq!(bypass.pod_selector, "app=web");
    let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
    assert!(may_reach(
        &[baseline_policy(), web_only.clone()],
        &web,
        ip(IMDS),
        80,
        "TCP"
    ));
    assert!(!may_reach(
        &[baseline_policy(), web_only],
        &BTreeMap::new(),
        ip(IMDS),
        80,
        "TCP"
    ));
}

#[test]
fn an_ipblock_excepting_the_blocked_address_is_no_bypass_even_on_other_ports() {
    let mut https = to_block("0.0.0.0/0", &["169.254.169.254/32"]);
    https.ports = Some(vec![NetworkPolicyPort {
        port: Some(IntOrString::Int(443)),
        protocol: Some("TCP".into()),
        end_port: None,
    }]);
    assert!(found(&[policy("https", &[], &["Egress"], vec![https])]).is_empty());
    // Excepting a wider range, or the range in two halves, closes it too.
    assert!(
        found(&[policy(
            "w",
            &[],
            &["Egress"],
            vec![to_block("0.0.0.0/0", &["169.254.0.0/16"])]
        )])
        .is_empty()
    );
    let halves = to_block("169.254.169.254/31", &["169.254.169.254/32", "169.254.169.255/32"]);
    assert!(found(&[policy("h", &[], &["Egress"], vec![halves])]).is_empty());
}

#[test]
fn a_port_limited_open_rule_is_still_a_bypass() {
    let mut rule = to_block("169.254.0.0/16", &[]);
    rule.ports = Some(vec![NetworkPolicyPort {
        port: Some(IntOrString::Int(443)),
        protocol: None,
        end_port: None,
    }]);
    let p = policy("p", &[], &["Egress"], vec![rule]);
    let b = &found(std::slice::from_ref(&p))[0];
    assert!(!b.anywhere && b.message().contains("except: [169.254.169.254/32]"));
    let none = BTreeMap::new();
    assert!(may_reach(std::slice::from_ref(&p), &none, ip(IMDS), 443, "TCP"));
    assert!(!may_reach(std::slice::from_ref(&p), &none, ip(IMDS), 80, "TCP"));
    assert!(!may_reach(&[p], &none, ip(IMDS), 443, "UDP"));
}

#[test]
fn ingress_only_policies_pod_peers_and_other_families_open_nothing() {
    let ingress_only = policy("in", &[], &["Ingress"], vec![open_rule()]);
    let pods_only = policy(
        "pods",
        &[],
        &["Egress"],
        vec![NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector::default()),
                ..Default::default()
            }]),
            ports: None,
        }],
    );
    let v6 = policy("v6", &[], &["Egress"], vec![to_block("::/0", &[])]);
    let elsewhere = policy("elsewhere", &[], &["Egress"], vec![to_block("10.0.0.0/8", &[])]);
    assert!(found(&[ingress_only.clone(), pods_only.clone(), v6, elsewhere]).is_empty());
    assert!(EgressSummary::of(&ingress_only).is_none() && EgressSummary::of(&pods_only).is_none());
}

#[test]
fn absent_policy_types_default_like_the_api_server() {
    let implicit = policy("implicit", &[], &[], vec![open_rule()]);
    assert!(is_egress_policy(&implicit));
    let no_rules = policy("none", &[], &[], vec![]);
    assert!(!is_egress_policy(&no_rules));
}

#[test]
fn a_pod_no_egress_policy_selects_may_send_anything() {
    let web_deny = policy("deny", &[("app", "web")], &["Egress"], vec![]);
    assert!(may_reach(
        std::slice::from_ref(&web_deny),
        &BTreeMap::new(),
        ip(IMDS),
        80,
        "TCP"
    ));
    let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
    assert!(!may_reach(&[web_deny], &web, ip("8.8.8.8"), 80, "TCP"));
}

#[test]
fn named_ports_and_port_ranges() {
    let mut rule = to_block("0.0.0.0/0", &[]);
    rule.ports = Some(vec![
        NetworkPolicyPort {
            port: Some(IntOrString::String("http".into())),
            protocol: None,
            end_port: None,
        },
        NetworkPolicyPort {
            port: Some(IntOrString::Int(8000)),
            protocol: Some("UDP".into()),
            end_port: Some(8080),
        },
    ]);
    let p = [policy("p", &[], &["Egress"], vec![rule])];
    let none = BTreeMap::new();
    assert!(
        !may_reach(&p, &none, ip(IMDS), 80, "TCP"),
        "named ports never match an external address"
    );
    assert!(may_reach(&p, &none, ip(IMDS), 8080, "UDP"));
    assert!(!may_reach(&p, &none, ip(IMDS), 8081, "UDP"));
}

fn arb_v4_net() -> impl Strategy<Value = IpNet> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, p)| IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), p).unwrap().trunc())
}

proptest! {
    /// The interval check agrees with probing: a blocked CIDR is open through an ipBlock
    /// exactly when some address in it is inside the cidr and outside every except. Small
    /// blocked ranges (/24 and longer) are probed address by address.
    #[test]
    fn block_opens_agrees_with_probing_every_address(
        base in any::<u32>(),
        blocked_prefix in 24u8..=32,
        cidr in arb_v4_net(),
        excepts in prop::collection::vec(arb_v4_net(), 0..4),
        near in prop::collection::vec((0u8..=8, 24u8..=32), 0..4),
    ) {
        let blocked = IpNet::new(IpAddr::V4(Ipv4Addr::from(base)), blocked_prefix).unwrap().trunc();
        // Excepts near the blocked range, where the interesting overlaps are.
        let mut excepts = excepts;
        for (shift, prefix) in near {
            let addr = u32::from(match blocked.network() { IpAddr::V4(a) => a, _ => unreachable!() }).wrapping_add(u32::from(shift));
            excepts.push(IpNet::new(IpAddr::V4(Ipv4Addr::from(addr)), prefix).unwrap().trunc());
        }
        let probe = blocked.hosts().chain([blocked.network(), blocked.broadcast()]).any(|a| {
            cidr.contains(&a) && !excepts.iter().any(|e| e.contains(&a))
        });
        prop_assert_eq!(block_opens(&cidr, &excepts, &blocked), probe);
    }

    /// IPv4 and IPv6 never mix.
    #[test]
    fn families_never_mix(a in any::<u128>(), p in 0u8..=128) {
        let v6 = IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), p).unwrap().trunc();
        prop_assert!(!block_opens(&v6, &[], &net("169.254.169.254/32")));
    }
}
