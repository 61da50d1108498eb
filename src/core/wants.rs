//! What one baseline asks of each object in a namespace it selects, in a form that composes with
//! what another baseline asks of the same object (strictest wins): the part of the plan that
//! [`crate::core::desired::plan`] merges across baselines. No I/O.

use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::api::rbac::v1::{RoleRef, Subject};

use crate::api::{Control, GroupFormat, IpFamily, ResolvedEngine, SecurityBaseline};
use crate::core::cilium::metadata_deny_spec;
use crate::core::cluster::Cluster;
use crate::core::desired::{Content, ObjectKey, PSA_PREFIX, ValidBaseline};
use crate::core::families;
use crate::core::policy::metadata_egress_spec;

/// What one baseline asks of an object, in a form that composes with what another asks.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Want {
    NetworkPolicy {
        blocked: Vec<IpNet>,
        ipv6: bool,
    },
    CiliumPolicy {
        blocked: Vec<IpNet>,
    },
    RoleBinding {
        role_ref: RoleRef,
        subjects: Vec<Subject>,
    },
    /// Mode (enforce, audit, warn) -> level and version.
    PodSecurity(BTreeMap<&'static str, (crate::api::PodSecurityLevel, String)>),
}

impl Want {
    /// What two baselines' wants of one object come to, strictest first: blocked CIDRs are
    /// united (and IPv6 egress kept where either keeps it), Pod Security takes the strictest
    /// level per mode (with that level's version; on a tie, `self`'s, the earlier baseline's).
    /// None for a contradiction no merge resolves: two bindings of one name that differ.
    pub(crate) fn merge(&self, other: &Want) -> Option<Want> {
        let union = |a: &[IpNet], b: &[IpNet]| {
            let mut all: Vec<IpNet> = a.iter().chain(b).copied().collect();
            all.sort();
            all.dedup();
            all
        };
        match (self, other) {
            (Want::NetworkPolicy { blocked: a, ipv6: x }, Want::NetworkPolicy { blocked: b, ipv6: y }) => {
                Some(Want::NetworkPolicy {
                    blocked: union(a, b),
                    ipv6: *x || *y,
                })
            }
            (Want::CiliumPolicy { blocked: a }, Want::CiliumPolicy { blocked: b }) => {
                Some(Want::CiliumPolicy { blocked: union(a, b) })
            }
            (Want::PodSecurity(a), Want::PodSecurity(b)) => {
                let mut merged = a.clone();
                for (mode, (level, version)) in b {
                    let stricter = merged.get(mode).is_none_or(|(have, _)| rank(*level) > rank(*have));
                    if stricter {
                        merged.insert(mode, (*level, version.clone()));
                    }
                }
                Some(Want::PodSecurity(merged))
            }
            (a, b) if a == b => Some(a.clone()),
            _ => None,
        }
    }

    pub(crate) fn content(&self) -> Content {
        match self {
            Want::NetworkPolicy { blocked, ipv6 } => Content::NetworkPolicy(metadata_egress_spec(blocked, *ipv6)),
            Want::CiliumPolicy { blocked } => Content::CiliumPolicy(metadata_deny_spec(blocked)),
            Want::RoleBinding { role_ref, subjects } => Content::RoleBinding {
                role_ref: role_ref.clone(),
                subjects: subjects.clone(),
            },
            Want::PodSecurity(modes) => {
                let mut labels = BTreeMap::new();
                for (mode, (level, version)) in modes {
                    labels.insert(format!("{PSA_PREFIX}{mode}"), level.as_str().to_string());
                    labels.insert(format!("{PSA_PREFIX}{mode}-version"), version.clone());
                }
                Content::PodSecurityLabels(labels)
            }
        }
    }
}

fn rank(level: crate::api::PodSecurityLevel) -> u8 {
    use crate::api::PodSecurityLevel::*;
    match level {
        Privileged => 0,
        Baseline => 1,
        Restricted => 2,
    }
}

/// [`wanted_objects`], as wants that compose with other baselines'.
pub(crate) fn wants(
    baseline: &SecurityBaseline,
    valid: &ValidBaseline,
    cluster: &Cluster,
) -> Vec<(Control, ObjectKey, Want)> {
    let spec = &baseline.spec;
    let mut out = Vec::new();
    if let Some(egress) = &spec.metadata_egress {
        let name = egress.policy_name.clone();
        let blocked = valid.blocked.clone();
        out.push(match cluster.engine.resolve(egress).engine {
            ResolvedEngine::NetworkPolicy => {
                let families = families::rendered(egress, &cluster.families).families;
                let ipv6 = families.contains(&IpFamily::IPv6);
                (
                    Control::MetadataEgress,
                    ObjectKey::NetworkPolicy(name),
                    Want::NetworkPolicy { blocked, ipv6 },
                )
            }
            ResolvedEngine::Cilium => (
                Control::MetadataEgress,
                ObjectKey::CiliumPolicy(name),
                Want::CiliumPolicy { blocked },
            ),
        });
    }
    for rb in &spec.role_bindings {
        let subjects = group_names(rb, spec.group_format)
            .into_iter()
            .map(|name| Subject {
                kind: "Group".into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                name,
                namespace: None,
            })
            .collect();
        let role_ref = RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: rb.cluster_role.clone(),
        };
        out.push((
            Control::RoleBindings,
            ObjectKey::RoleBinding(rb.name.clone()),
            Want::RoleBinding { role_ref, subjects },
        ));
    }
    if let Some(psa) = &spec.pod_security {
        let modes: BTreeMap<&'static str, _> = [("enforce", psa.enforce), ("audit", psa.audit), ("warn", psa.warn)]
            .into_iter()
            .filter_map(|(mode, level)| Some((mode, (level?, psa.version.clone()))))
            .collect();
        if !modes.is_empty() {
            out.push((
                Control::PodSecurity,
                ObjectKey::PodSecurityLabels,
                Want::PodSecurity(modes),
            ));
        }
    }
    out
}

/// The subjects' group names, sorted and without duplicates. Entra ID object IDs are lower-case
/// and RBAC compares names case-sensitively, so a GUID written in upper case is bound in lower
/// case (a binding to `3F25…` would grant nothing); other OIDC group names are kept as written.
fn group_names(rb: &crate::api::BaselineRoleBinding, format: GroupFormat) -> Vec<String> {
    let mut names: Vec<String> = rb
        .groups
        .iter()
        .map(|g| {
            if format == GroupFormat::Guid {
                g.to_ascii_lowercase()
            } else {
                g.clone()
            }
        })
        .collect();
    names.sort();
    names.dedup();
    names
}
