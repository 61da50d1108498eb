//! Cilium's `CiliumNetworkPolicy` (`cilium.io/v2`): the fields this operator writes and compares,
//! and the deny policy it writes on Cilium. Pure.
//!
//! On Cilium a Kubernetes NetworkPolicy that selects a pod cuts it off from its node, the host
//! network and AKS LocalDNS (an `ipBlock` matches none of those identities), so there the
//! metadata endpoint is blocked with a deny instead: one `egressDeny` rule to the blocked CIDRs,
//! with `enableDefaultDeny` off in both directions so the policy makes no pod default-deny. A
//! deny beats every allow of any NetworkPolicy, CNP or CCNP, so no team policy re-opens it.
//! Verified with Cilium's own policy engine (e2e/cilium, `make test`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const GROUP: &str = "cilium.io";
pub const VERSION: &str = "v2";
pub const KIND: &str = "CiliumNetworkPolicy";
pub const PLURAL: &str = "ciliumnetworkpolicies";
/// The object whose presence says a Cilium agent runs (each agent keeps its node's).
pub const NODE_PLURAL: &str = "ciliumnodes";

/// A CiliumNetworkPolicy. Only `spec` is typed; the rest of what Cilium's schema allows
/// (`specs`, a status) is kept as it is, so reading a team's policy never fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CiliumNetworkPolicy {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<CiliumPolicySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specs: Option<Vec<Value>>,
}

impl Default for CiliumNetworkPolicy {
    fn default() -> Self {
        Self {
            api_version: api_version(),
            kind: kind(),
            metadata: ObjectMeta::default(),
            spec: None,
            specs: None,
        }
    }
}

fn api_version() -> String {
    format!("{GROUP}/{VERSION}")
}

fn kind() -> String {
    KIND.into()
}

impl kube::Resource for CiliumNetworkPolicy {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// One rule of a CiliumNetworkPolicy, as far as this operator declares it. Fields it does not
/// declare (`egress`, `ingress`, `description`, ...) are kept in `other`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CiliumPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_deny: Option<Vec<EgressDenyRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_default_deny: Option<DefaultDeny>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// An `egressDeny` rule. Compared whole: a `toPorts` added to it would narrow the deny to some
/// ports and leave the rest of the blocked address open.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EgressDenyRule {
    #[serde(default, rename = "toCIDRSet", skip_serializing_if = "Option::is_none")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CidrRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultDeny {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<bool>,
}

/// The spec of the deny policy for `blocked` CIDRs: every endpoint of the namespace, egress
/// denied to each blocked CIDR (both families: a deny of a family the cluster does not use
/// matches nothing and costs nothing), and no default-deny in either direction.
pub fn metadata_deny_spec(blocked: &[IpNet]) -> CiliumPolicySpec {
    CiliumPolicySpec {
        endpoint_selector: Some(LabelSelector::default()),
        egress_deny: Some(vec![EgressDenyRule {
            to_cidr_set: Some(
                blocked
                    .iter()
                    .map(|net| CidrRule {
                        cidr: Some(net.trunc().to_string()),
                        other: BTreeMap::new(),
                    })
                    .collect(),
            ),
            other: BTreeMap::new(),
        }]),
        enable_default_deny: Some(DefaultDeny {
            egress: Some(false),
            ingress: Some(false),
        }),
        other: BTreeMap::new(),
    }
}

/// Whether a policy's spec holds what the operator declares. Fields it does not declare are
/// not compared: a forced apply cannot remove what another manager added, and none of them can
/// undo a deny (an allow never beats it).
pub fn spec_in_sync(actual: Option<&CiliumPolicySpec>, desired: &CiliumPolicySpec) -> bool {
    actual.is_some_and(|a| {
        a.endpoint_selector == desired.endpoint_selector
            && a.egress_deny == desired.egress_deny
            && a.enable_default_deny == desired.enable_default_deny
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_deny_policy_names_every_blocked_cidr_and_turns_default_deny_off() {
        let blocked: Vec<IpNet> = vec![
            "169.254.169.254/32".parse().unwrap(),
            "fd00:ec2::254/128".parse().unwrap(),
        ];
        let spec = serde_json::to_value(metadata_deny_spec(&blocked)).unwrap();
        assert_eq!(
            spec,
            json!({
                "endpointSelector": {},
                "egressDeny": [{"toCIDRSet": [{"cidr": "169.254.169.254/32"}, {"cidr": "fd00:ec2::254/128"}]}],
                "enableDefaultDeny": {"egress": false, "ingress": false}
            })
        );
    }

    #[test]
    fn a_stored_policy_reads_back_and_compares_on_the_declared_fields_only() {
        let blocked: Vec<IpNet> = vec!["169.254.169.254/32".parse().unwrap()];
        let desired = metadata_deny_spec(&blocked);
        let stored: CiliumNetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "restrict-instance-metadata", "namespace": "a"},
            "spec": {"endpointSelector": {}, "enableDefaultDeny": {"egress": false, "ingress": false},
                     "egressDeny": [{"toCIDRSet": [{"cidr": "169.254.169.254/32"}]}],
                     "description": "added by hand"},
            "status": {"derivativePolicies": {}}
        }))
        .unwrap();
        assert!(spec_in_sync(stored.spec.as_ref(), &desired));
        // A deny narrowed to one port is not the deny.
        let mut narrowed = stored.clone();
        narrowed.spec.as_mut().unwrap().egress_deny.as_mut().unwrap()[0]
            .other
            .insert("toPorts".into(), json!([{"ports": [{"port": "443"}]}]));
        assert!(!spec_in_sync(narrowed.spec.as_ref(), &desired));
        let mut selective = stored.clone();
        selective.spec.as_mut().unwrap().endpoint_selector = Some(LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        });
        assert!(!spec_in_sync(selective.spec.as_ref(), &desired));
        // Only `specs` (no `spec`): readable, and not the deny.
        let only_specs: CiliumNetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "x"}, "specs": [{"endpointSelector": {}}]
        }))
        .unwrap();
        assert!(!spec_in_sync(only_specs.spec.as_ref(), &desired));
        assert_eq!(only_specs.api_version, "cilium.io/v2");
    }
}
