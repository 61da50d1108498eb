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
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reach {
    /// The rule has no `to`: every destination.
    Anywhere,
    /// The rule's `ipBlock` peers (`cidr` minus `except`).
    Blocks(Vec<(IpNet, Vec<IpNet>)>),
}

/// What the bypass check needs of one NetworkPolicy: only its egress rules that can reach an
/// address outside the cluster. Policies with none are not kept at all, so the cache grows with
/// the policies that matter, not with every policy in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EgressSummary {
    pub name: String,
    /// The pods it selects, as `kubectl` prints a selector (empty: every pod).
    pub pod_selector: String,
    /// (index of the rule in `spec.egress`, where it reaches).
    pub rules: Vec<(usize, Reach)>,
    /// A baseline's own object (labelled and owned by a SecurityBaseline): judged as an object,
    /// not as a bypass. A same-named policy someone else owns is a bypass like any other.
    pub ours: bool,
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
            ours: crate::core::objects::is_managed(&policy.metadata)
                && crate::core::objects::has_baseline_owner(&policy.metadata),
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
#[path = "egress_tests.rs"]
mod tests;
