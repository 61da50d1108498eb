//! The instance-metadata egress part of a baseline's spec: which addresses its policy blocks,
//! the policy's name, the engine and address families it is written for.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::DNS_SUBDOMAIN;

/// The instance-metadata egress policy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataEgress {
    /// Name of the policy (NetworkPolicy or CiliumNetworkPolicy) in each namespace.
    #[serde(default = "default_policy_name")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub policy_name: String,

    /// Destinations pods may not reach, as canonical IPv4 or IPv6 CIDRs (no bits set past the
    /// prefix). Everything else stays reachable, including every pod in the cluster.
    #[serde(default = "default_blocked_cidrs", rename = "blockedCIDRs")]
    #[schemars(length(min = 1, max = 64), inner(length(max = 64)))]
    #[x_kube(
        merge_strategy = ListMerge::Set,
        validation = Rule::new("self.all(c, isCIDR(c) && cidr(c).prefixLength() > 0 && cidr(c) == cidr(c).masked())")
            .message("blockedCIDRs must be canonical IPv4 or IPv6 CIDRs with a non-zero prefix, such as 169.254.169.254/32 or fd00:ec2::254/128")
    )]
    pub blocked_cidrs: Vec<String>,

    /// The address families pods keep egress for: an ipBlock peer each (`0.0.0.0/0`, `::/0`),
    /// each excepting the blocked CIDRs of its family. Omitted (the default): the families the
    /// cluster uses, read from the default/kubernetes Service and node podCIDRs, and shown in
    /// status.ipFamilies. IPv6 is rendered only where the cluster uses it: Azure Network Policy
    /// Manager drops a whole policy that holds an IPv6 ipBlock, which leaves the metadata
    /// endpoint reachable (see docs/network-policy-engines.md). IPv4 is always there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(
        merge_strategy = ListMerge::Set,
        validation = Rule::new("'IPv4' in self").message("ipFamilies must contain IPv4: without it pods would lose all IPv4 egress")
    )]
    pub ip_families: Option<Vec<IpFamily>>,

    /// Which object blocks the blocked CIDRs. Auto (the default): a CiliumNetworkPolicy where
    /// Cilium enforces policy (the API serves ciliumnetworkpolicies.cilium.io/v2 and CiliumNode
    /// objects show running agents), a Kubernetes NetworkPolicy everywhere else; when the two
    /// disagree (Cilium's CRDs left behind by an uninstall), a NetworkPolicy, with a warning
    /// condition. NetworkPolicy or Cilium: always that object. On Cilium the policy is a deny
    /// (egressDeny to each blocked CIDR, default-deny off), which no other policy can re-open
    /// and which leaves node, host and LocalDNS traffic alone; a NetworkPolicy there cuts those.
    /// Shown in status.engine.
    #[serde(default, skip_serializing_if = "Engine::is_auto")]
    pub engine: Engine,
}

/// The policy engine a baseline writes for.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Engine {
    #[default]
    Auto,
    NetworkPolicy,
    Cilium,
}

impl Engine {
    pub fn is_auto(&self) -> bool {
        *self == Self::Auto
    }
}

/// The object kind written to block the metadata endpoint.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
pub enum ResolvedEngine {
    NetworkPolicy,
    Cilium,
}

impl ResolvedEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NetworkPolicy => "NetworkPolicy",
            Self::Cilium => "Cilium",
        }
    }
}

/// An IP address family.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

impl Default for MetadataEgress {
    fn default() -> Self {
        Self {
            policy_name: default_policy_name(),
            blocked_cidrs: default_blocked_cidrs(),
            ip_families: None,
            engine: Engine::Auto,
        }
    }
}

fn default_policy_name() -> String {
    "restrict-instance-metadata".into()
}

fn default_blocked_cidrs() -> Vec<String> {
    vec!["169.254.169.254/32".into()]
}
