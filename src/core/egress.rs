//! Effective egress: whether a namespace's NetworkPolicies, taken together, let a pod reach a
//! blocked CIDR. Kubernetes semantics: policies add up, so a pod selected by any Egress policy
//! may send whatever the union of its selecting policies' rules allows. One extra policy with
//! an open rule undoes the baseline's policy for the pods it selects. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

/// Whether a policy restricts egress. The API server defaults an absent `policyTypes` to
/// Ingress, plus Egress when egress rules are present.
pub fn is_egress_policy(policy: &NetworkPolicy) -> bool {
    let Some(spec) = &policy.spec else { return false };
    match &spec.policy_types {
        Some(types) if !types.is_empty() => types.iter().any(|t| t == "Egress"),
        _ => spec.egress.as_ref().is_some_and(|rules| !rules.is_empty()),
    }
}

/// A pod selector; one that cannot be parsed selects nothing (the API server refuses those).
fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    Selector::try_from(selector.cloned().unwrap_or_default()).is_ok_and(|s| s.matches(labels))
}

/// `cidr` minus `except`, parsed; None when the CIDR does not parse (the API server refuses it).
fn parse_block(block: &IPBlock) -> Option<(IpNet, Vec<IpNet>)> {
    let cidr = block.cidr.parse::<IpNet>().ok()?.trunc();
    let except = block
        .except
        .iter()
        .flatten()
        .filter_map(|e| e.parse::<IpNet>().ok().map(|n| n.trunc()))
        .collect();
    Some((cidr, except))
}

fn port_matches(rule_ports: Option<&Vec<NetworkPolicyPort>>, port: u16, protocol: &str) -> bool {
    let Some(ports) = rule_ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        p.protocol.as_deref().unwrap_or("TCP") == protocol
            && match &p.port {
                None => true,
                Some(IntOrString::Int(start)) => match p.end_port {
                    Some(end) => (*start..=end).contains(&i32::from(port)),
                    None => *start == i32::from(port),
                },
                // A named port is resolved against the destination pod's containers; an address
                // outside the cluster has none, so it never matches.
                Some(IntOrString::String(_)) => false,
            }
    })
}

fn rule_reaches(rule: &NetworkPolicyEgressRule, dest: IpAddr) -> bool {
    let Some(peers) = rule.to.as_ref().filter(|to| !to.is_empty()) else {
        return true;
    };
    // Pod and namespace selectors match pods; `dest` is not one.
    peers.iter().filter_map(|p| p.ip_block.as_ref()).any(|block| {
        parse_block(block)
            .is_some_and(|(cidr, except)| cidr.contains(&dest) && !except.iter().any(|e| e.contains(&dest)))
    })
}

/// Whether a pod with `pod_labels`, in the namespace holding `policies`, may send a packet to
/// `dest`:`port`/`protocol`, an address outside the cluster (no pod peer matches it).
pub fn may_reach(
    policies: &[NetworkPolicy],
    pod_labels: &BTreeMap<String, String>,
    dest: IpAddr,
    port: u16,
    protocol: &str,
) -> bool {
    let mut selecting = policies
        .iter()
        .filter(|p| is_egress_policy(p))
        .filter(|p| selects(p.spec.as_ref().and_then(|s| s.pod_selector.as_ref()), pod_labels))
        .peekable();
    if selecting.peek().is_none() {
        return true;
    }
    selecting
        .flat_map(|p| p.spec.iter().flat_map(|s| s.egress.iter().flatten()))
        .any(|rule| port_matches(rule.ports.as_ref(), port, protocol) && rule_reaches(rule, dest))
}

/// Where an egress rule may send traffic outside the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The rule has no `to`: every destination.
    Anywhere,
    /// The rule's `ipBlock` peers (`cidr` minus `except`).
    Blocks(Vec<(IpNet, Vec<IpNet>)>),
}

/// What the bypass check needs of one NetworkPolicy: only its egress rules that can reach an
/// address outside the cluster. Policies with none are not kept at all, so the cache grows with
/// the policies that matter, not with every policy in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressSummary {
    pub name: String,
    /// The pods it selects, as `kubectl` prints a selector (empty: every pod).
    pub pod_selector: String,
    /// (index of the rule in `spec.egress`, where it reaches).
    pub rules: Vec<(usize, Reach)>,
}

impl EgressSummary {
    /// The summary of `policy`, or None when it cannot open any external address.
    pub fn of(policy: &NetworkPolicy) -> Option<Self> {
        if !is_egress_policy(policy) {
            return None;
        }
        let spec = policy.spec.as_ref()?;
        let rules: Vec<(usize, Reach)> = spec
            .egress
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, rule)| match rule.to.as_ref().filter(|to| !to.is_empty()) {
                None => Some((i, Reach::Anywhere)),
                Some(peers) => {
                    let blocks: Vec<_> = peers
                        .iter()
                        .filter_map(|p| p.ip_block.as_ref().and_then(parse_block))
                        .collect();
                    (!blocks.is_empty()).then_some((i, Reach::Blocks(blocks)))
                }
            })
            .collect();
        if rules.is_empty() {
            return None;
        }
        let pod_selector = Selector::try_from(spec.pod_selector.clone().unwrap_or_default())
            .map(|s| s.to_string())
            .unwrap_or_else(|e| format!("<invalid selector: {e}>"));
        Some(Self {
            name: policy.name_any(),
            pod_selector,
            rules,
        })
    }
}

/// A policy that lets pods reach a blocked CIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bypass {
    pub policy: String,
    pub pod_selector: String,
    pub rule: usize,
    /// The blocked CIDRs the rule opens.
    pub opens: Vec<IpNet>,
    /// Whether the rule has no `to` at all.
    pub anywhere: bool,
}

impl Bypass {
    /// What a person reads in status and Events: what is open, for which pods, how to fix it.
    pub fn message(&self) -> String {
        let pods = if self.pod_selector.is_empty() {
            "every pod".to_string()
        } else {
            format!("pods matching {:?}", self.pod_selector)
        };
        let opens = self
            .opens
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let how = if self.anywhere {
            format!(
                "has no `to`, so it allows every destination; list its destinations instead, e.g. ipBlock {{cidr: 0.0.0.0/0, except: [{opens}]}}"
            )
        } else {
            format!("has an ipBlock that contains {opens}; add `except: [{opens}]` to it")
        };
        format!(
            "egress rule {} {how}. It lets {pods} reach {opens} on every port",
            self.rule
        )
    }
}

type Range = (bool, u128, u128);

/// An address range, with its family (true for IPv4).
fn range(net: &IpNet) -> Range {
    match net {
        IpNet::V4(n) => (true, u32::from(n.network()).into(), u32::from(n.broadcast()).into()),
        IpNet::V6(n) => (false, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Whether some address of `blocked` is inside `cidr` and outside every `except`.
fn block_opens(cidr: &IpNet, except: &[IpNet], blocked: &IpNet) -> bool {
    let (fam_c, c0, c1) = range(cidr);
    let (fam_b, b0, b1) = range(blocked);
    if fam_c != fam_b {
        return false;
    }
    let (lo, hi) = (c0.max(b0), c1.min(b1));
    if lo > hi {
        return false;
    }
    // Walk the excepts in order: the range is closed only if they cover [lo, hi] without a gap.
    let mut holes: Vec<(u128, u128)> = except
        .iter()
        .map(range)
        .filter(|(fam, _, _)| *fam == fam_c)
        .map(|(_, a, b)| (a, b))
        .collect();
    holes.sort();
    let mut next = lo;
    for (a, b) in holes {
        if a > next {
            break;
        }
        if b >= next {
            if b >= hi {
                return false;
            }
            next = b + 1;
        }
    }
    true
}

/// The policies among `summaries` that let pods reach any of `blocked`, on any port. The
/// blocked CIDRs are blocked on every port, so a rule's ports do not narrow a bypass.
pub fn bypasses<'a>(summaries: impl IntoIterator<Item = &'a EgressSummary>, blocked: &[IpNet]) -> Vec<Bypass> {
    let mut out = Vec::new();
    for summary in summaries {
        for (rule, reach) in &summary.rules {
            let opens: Vec<IpNet> = blocked
                .iter()
                .filter(|b| match reach {
                    Reach::Anywhere => true,
                    Reach::Blocks(blocks) => blocks.iter().any(|(cidr, except)| block_opens(cidr, except, b)),
                })
                .copied()
                .collect();
            if !opens.is_empty() {
                out.push(Bypass {
                    policy: summary.name.clone(),
                    pod_selector: summary.pod_selector.clone(),
                    rule: *rule,
                    opens,
                    anywhere: *reach == Reach::Anywhere,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
}
