//! The instance-metadata NetworkPolicy: all egress allowed except to the blocked CIDRs, on
//! every engine AKS ships (see docs/network-policy-engines.md).

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The spec of the metadata egress policy for `blocked` CIDRs.
///
/// One egress rule with up to three peers (peers of a rule are OR-ed):
/// - `0.0.0.0/0` except the blocked IPv4 CIDRs;
/// - with `ipv6`, `::/0` except the blocked IPv6 CIDRs, so a dual-stack cluster keeps its IPv6
///   egress (without it, every IPv6 destination is blocked, the blocked ones included);
/// - every pod in every namespace (`namespaceSelector: {}`), because on Cilium an `ipBlock`
///   does not match pod IPs and the policy would otherwise cut pods off from each other and DNS.
pub fn metadata_egress_spec(blocked: &[IpNet], ipv6: bool) -> NetworkPolicySpec {
    let except = |v4: bool| {
        let cidrs: Vec<String> = blocked
            .iter()
            .filter(|net| matches!(net, IpNet::V4(_)) == v4)
            .map(|net| net.trunc().to_string())
            .collect();
        // The API server stores an empty `except` as absent; match that so a compliant policy
        // compares equal to what we would write.
        (!cidrs.is_empty()).then_some(cidrs)
    };
    let ip_block = |cidr: &str, except| NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_string(),
            except,
        }),
        ..Default::default()
    };
    NetworkPolicySpec {
        pod_selector: Some(LabelSelector::default()),
        policy_types: Some(vec!["Egress".to_string()]),
        egress: Some(vec![NetworkPolicyEgressRule {
            ports: None,
            to: Some(
                [
                    Some(ip_block("0.0.0.0/0", except(true))),
                    ipv6.then(|| ip_block("::/0", except(false))),
                    Some(NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector::default()),
                        ..Default::default()
                    }),
                ]
                .into_iter()
                .flatten()
                .collect(),
            ),
        }]),
        ingress: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// Whether the policy lets a pod reach `ip` outside the cluster (no pod peer matches it),
    /// evaluated with NetworkPolicy's ipBlock semantics.
    fn allows(spec: &NetworkPolicySpec, ip: IpAddr) -> bool {
        spec.egress
            .iter()
            .flatten()
            .flat_map(|rule| rule.to.iter().flatten())
            .any(|peer| {
                peer.ip_block.as_ref().is_some_and(|block| {
                    let cidr: IpNet = block.cidr.parse().unwrap();
                    let excluded = block
                        .except
                        .iter()
                        .flatten()
                        .any(|e| e.parse::<IpNet>().unwrap().contains(&ip));
                    cidr.contains(&ip) && !excluded
                })
            })
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn default_policy_blocks_only_imds() {
        let spec = metadata_egress_spec(&[net("169.254.169.254/32")], true);
        assert!(!allows(&spec, "169.254.169.254".parse().unwrap()));
        assert!(allows(&spec, "169.254.169.253".parse().unwrap()));
        assert!(allows(&spec, "10.0.0.10".parse().unwrap()));
        assert!(
            allows(&spec, "2001:db8::1".parse().unwrap()),
            "IPv6 egress must stay open"
        );
    }

    #[test]
    fn policy_is_egress_only_for_every_pod_and_keeps_pod_to_pod_traffic() {
        let spec = metadata_egress_spec(&[net("169.254.169.254/32")], true);
        assert_eq!(spec.policy_types, Some(vec!["Egress".to_string()]));
        assert_eq!(spec.pod_selector, Some(LabelSelector::default()));
        assert!(spec.ingress.is_none());
        let peers = spec.egress.as_ref().unwrap()[0].to.as_ref().unwrap();
        assert!(
            peers
                .iter()
                .any(|p| p.namespace_selector == Some(LabelSelector::default()) && p.ip_block.is_none())
        );
    }

    #[test]
    fn ipv6_cidrs_go_into_the_ipv6_block_only() {
        let spec = metadata_egress_spec(&[net("169.254.169.254/32"), net("fd00:ec2::254/128")], true);
        let peers = spec.egress.as_ref().unwrap()[0].to.as_ref().unwrap();
        let v4 = peers[0].ip_block.as_ref().unwrap();
        let v6 = peers[1].ip_block.as_ref().unwrap();
        assert_eq!(
            (v4.cidr.as_str(), v4.except.clone()),
            ("0.0.0.0/0", Some(vec!["169.254.169.254/32".into()]))
        );
        assert_eq!(
            (v6.cidr.as_str(), v6.except.clone()),
            ("::/0", Some(vec!["fd00:ec2::254/128".into()]))
        );
    }

    #[test]
    fn ipv4_only_leaves_out_the_ipv6_peer_and_blocks_ipv6() {
        let spec = metadata_egress_spec(&[net("169.254.169.254/32")], false);
        let peers = spec.egress.as_ref().unwrap()[0].to.as_ref().unwrap();
        assert_eq!(peers.len(), 2);
        assert!(
            peers
                .iter()
                .all(|p| p.ip_block.as_ref().is_none_or(|b| b.cidr == "0.0.0.0/0"))
        );
        assert!(!allows(&spec, "2001:db8::1".parse().unwrap()));
        assert!(!allows(&spec, "169.254.169.254".parse().unwrap()));
        assert!(allows(&spec, "10.0.0.10".parse().unwrap()));
    }

    #[test]
    fn no_blocked_family_means_no_except_list() {
        let spec = metadata_egress_spec(&[net("169.254.169.254/32")], true);
        let peers = spec.egress.as_ref().unwrap()[0].to.as_ref().unwrap();
        assert_eq!(peers[1].ip_block.as_ref().unwrap().except, None);
    }

    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 1u8..=32).prop_map(|(a, p)| IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), p).unwrap().trunc()),
            (any::<u128>(), 1u8..=128).prop_map(|(a, p)| IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), p).unwrap().trunc()),
        ]
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
            any::<u128>().prop_map(|a| IpAddr::V6(a.into()))
        ]
    }

    proptest! {
        /// Any address inside a blocked CIDR is denied; every other address is allowed.
        #[test]
        fn blocks_exactly_the_blocked_cidrs(blocked in prop::collection::vec(arb_net(), 1..6), probes in prop::collection::vec(arb_ip(), 1..32)) {
            let spec = metadata_egress_spec(&blocked, true);
            // Probe the blocked networks' own edges too, where off-by-one errors live.
            let edges = blocked.iter().flat_map(|n| [n.network(), n.broadcast()]);
            for ip in probes.into_iter().chain(edges) {
                let is_blocked = blocked.iter().any(|n| n.contains(&ip));
                prop_assert_eq!(allows(&spec, ip), !is_blocked, "ip {} blocked={:?}", ip, blocked);
            }
        }
    }
}
