//! Which address families the metadata NetworkPolicy keeps egress for. A baseline may say; by
//! default it is the families the cluster uses, because an IPv6 `ipBlock` is not harmless where
//! nothing uses IPv6: Azure Network Policy Manager drops a whole policy that holds one (so the
//! metadata endpoint stays open), and IPv4-only Cilium builds may read `::/0` as "all outside
//! traffic", IPv4 included.

use std::fmt;

use crate::api::{IpFamily, MetadataEgress};

/// The families the cluster uses, and how that was found out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFamilies {
    pub families: Vec<IpFamily>,
    pub source: String,
}

impl ClusterFamilies {
    /// From the `default/kubernetes` Service's `spec.ipFamilies` (what the API server was
    /// configured with) and the `spec.podCIDRs` of some nodes (what pods get: a cluster whose
    /// Service is single-stack can still hand pods both families). None where neither says
    /// anything usable.
    pub fn from_api(service: Option<&[String]>, pod_cidrs: &[String]) -> Option<Self> {
        let mut families = Vec::new();
        let mut said = Vec::new();
        if let Some(service) = service.filter(|s| !s.is_empty()) {
            for f in service {
                match f.as_str() {
                    "IPv4" => families.push(IpFamily::IPv4),
                    "IPv6" => families.push(IpFamily::IPv6),
                    _ => {}
                }
            }
            said.push(format!("the default/kubernetes Service ({})", service.join(", ")));
        }
        let from_nodes: Vec<IpFamily> = pod_cidrs
            .iter()
            .filter_map(|c| crate::core::cel::parse_cidr(c))
            .map(|(ip, _)| if ip.is_ipv4() { IpFamily::IPv4 } else { IpFamily::IPv6 })
            .collect();
        if !from_nodes.is_empty() {
            let mut seen = from_nodes.clone();
            seen.sort();
            seen.dedup();
            said.push(format!("node podCIDRs ({})", list(&seen)));
            families.extend(from_nodes);
        }
        families.sort();
        families.dedup();
        if families.is_empty() {
            return None;
        }
        Some(Self {
            families,
            source: said.join(" and "),
        })
    }

    /// What is assumed when the cluster cannot be asked (a read failed, or offline): IPv4
    /// alone. Rendering IPv6 where nothing uses it can leave the endpoint open (see the module
    /// doc); leaving it out of a dual-stack cluster only costs IPv6 egress, and says so.
    pub fn unknown(why: &str) -> Self {
        Self {
            families: vec![IpFamily::IPv4],
            source: format!("{why}, IPv4 assumed"),
        }
    }
}

impl Default for ClusterFamilies {
    fn default() -> Self {
        Self::unknown("not read")
    }
}

/// The families a baseline's policy is rendered for, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub families: Vec<IpFamily>,
    pub reason: String,
}

impl fmt::Display for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", list(&self.families), self.reason)
    }
}

/// The families `egress` is rendered for in a cluster that uses `cluster`'s: the baseline's own
/// `ipFamilies` where it sets them, else the cluster's. IPv4 is always among them (the API
/// refuses a baseline without it, and a cluster with IPv6 alone still routes IPv4 to the node).
pub fn rendered(egress: &MetadataEgress, cluster: &ClusterFamilies) -> Rendered {
    let (mut families, reason) = match &egress.ip_families {
        Some(explicit) => (explicit.clone(), "spec.metadataEgress.ipFamilies".to_string()),
        None => (cluster.families.clone(), format!("the cluster's: {}", cluster.source)),
    };
    families.push(IpFamily::IPv4);
    families.sort();
    families.dedup();
    Rendered { families, reason }
}

fn list(families: &[IpFamily]) -> String {
    families.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_single_stack_cluster_renders_ipv4_alone() {
        let c = ClusterFamilies::from_api(Some(&strings(&["IPv4"])), &strings(&["10.244.0.0/24"])).unwrap();
        assert_eq!(c.families, vec![IpFamily::IPv4]);
        let r = rendered(&MetadataEgress::default(), &c);
        assert_eq!(r.families, vec![IpFamily::IPv4]);
        assert_eq!(
            r.to_string(),
            "IPv4 (the cluster's: the default/kubernetes Service (IPv4) and node podCIDRs (IPv4))"
        );
    }

    #[test]
    fn pods_with_ipv6_addresses_make_it_dual_stack_whatever_the_service_says() {
        let c = ClusterFamilies::from_api(
            Some(&strings(&["IPv4"])),
            &strings(&["10.244.0.0/24", "fd00:10:244::/64"]),
        )
        .unwrap();
        assert_eq!(c.families, vec![IpFamily::IPv4, IpFamily::IPv6]);
    }

    #[test]
    fn an_ipv6_cluster_still_renders_ipv4() {
        let c = ClusterFamilies::from_api(Some(&strings(&["IPv6"])), &[]).unwrap();
        assert_eq!(
            rendered(&MetadataEgress::default(), &c).families,
            vec![IpFamily::IPv4, IpFamily::IPv6]
        );
    }

    #[test]
    fn the_baselines_own_families_win() {
        let c = ClusterFamilies::from_api(Some(&strings(&["IPv4"])), &[]).unwrap();
        let egress = MetadataEgress {
            ip_families: Some(vec![IpFamily::IPv4, IpFamily::IPv6]),
            ..Default::default()
        };
        let r = rendered(&egress, &c);
        assert_eq!(r.families, vec![IpFamily::IPv4, IpFamily::IPv6]);
        assert_eq!(r.reason, "spec.metadataEgress.ipFamilies");
    }

    #[test]
    fn nothing_usable_is_unknown_and_unknown_means_ipv4() {
        assert_eq!(ClusterFamilies::from_api(None, &[]), None);
        assert_eq!(ClusterFamilies::from_api(Some(&[]), &strings(&["not a cidr"])), None);
        let u = ClusterFamilies::unknown("not known offline");
        assert_eq!(u.families, vec![IpFamily::IPv4]);
        assert_eq!(
            rendered(&MetadataEgress::default(), &u).reason,
            "the cluster's: not known offline, IPv4 assumed"
        );
    }
}
