//! Which policy engine a baseline writes for: a Kubernetes NetworkPolicy, or on Cilium a deny
//! CiliumNetworkPolicy (see [`crate::core::cilium`]). Auto must not fail open: Cilium's CRDs
//! outlive an uninstalled Cilium, and then nothing enforces a CiliumNetworkPolicy, so Auto picks
//! Cilium only when the API serves its policies *and* agents are running. Pure.

use crate::api::{Engine, MetadataEgress, ResolvedEngine};

/// What the cluster says about Cilium.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterEngine {
    /// The API serves `ciliumnetworkpolicies.cilium.io/v2`.
    pub cilium_policies_served: bool,
    /// How many CiliumNode objects exist (each agent keeps its node's): None when they could not
    /// be listed.
    pub cilium_nodes: Option<usize>,
    /// Set when the cluster could not be asked at all.
    pub unknown: Option<String>,
}

/// The engine a baseline writes for, why, and what the evidence said against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub engine: ResolvedEngine,
    pub reason: String,
    /// Evidence that disagrees (a warning condition and Event): the baseline may be writing
    /// an object that nothing enforces.
    pub disagreement: Option<String>,
}

impl ClusterEngine {
    /// What is assumed when nothing could be read (offline, or every read failed).
    pub fn unknown(why: &str) -> Self {
        Self {
            unknown: Some(why.to_string()),
            ..Default::default()
        }
    }

    /// What Auto resolves to here.
    pub fn detected(&self) -> Resolution {
        if let Some(why) = &self.unknown {
            return Resolution {
                engine: ResolvedEngine::NetworkPolicy,
                reason: format!("Auto: the engine is not known ({why}), NetworkPolicy assumed"),
                disagreement: None,
            };
        }
        let nodes = self.cilium_nodes.unwrap_or(0);
        match (self.cilium_policies_served, nodes) {
            (true, n) if n > 0 => Resolution {
                engine: ResolvedEngine::Cilium,
                reason: format!(
                    "Auto: the API serves ciliumnetworkpolicies.cilium.io/v2 and {n} CiliumNode object(s) show running Cilium agents"
                ),
                disagreement: None,
            },
            (true, _) => {
                let nodes = match self.cilium_nodes {
                    Some(_) => "no CiliumNode object exists",
                    None => "CiliumNode objects could not be listed",
                };
                Resolution {
                    engine: ResolvedEngine::NetworkPolicy,
                    reason: format!(
                        "Auto: the API serves ciliumnetworkpolicies.cilium.io/v2 but {nodes}, so no Cilium agent is known to run: NetworkPolicy"
                    ),
                    disagreement: Some(format!(
                        "Cilium's policy CRD is served but {nodes}: Cilium may have been uninstalled (its CRDs stay) or not be running yet. A NetworkPolicy is written, which Cilium would enforce too but which cuts node, host and LocalDNS traffic there. Set metadataEgress.engine to NetworkPolicy or Cilium to decide"
                    )),
                }
            }
            (false, n) if n > 0 => Resolution {
                engine: ResolvedEngine::NetworkPolicy,
                reason: "Auto: the API does not serve ciliumnetworkpolicies.cilium.io/v2: NetworkPolicy".into(),
                disagreement: Some(format!(
                    "{n} CiliumNode object(s) exist but the API does not serve ciliumnetworkpolicies.cilium.io/v2: a NetworkPolicy is written. Check Cilium's installation, or set metadataEgress.engine"
                )),
            },
            (false, _) => Resolution {
                engine: ResolvedEngine::NetworkPolicy,
                reason: "Auto: the API does not serve ciliumnetworkpolicies.cilium.io/v2: NetworkPolicy".into(),
                disagreement: None,
            },
        }
    }

    /// The engine `egress` writes for.
    pub fn resolve(&self, egress: &MetadataEgress) -> Resolution {
        match egress.engine {
            Engine::Auto => self.detected(),
            Engine::NetworkPolicy => Resolution {
                engine: ResolvedEngine::NetworkPolicy,
                reason: "set in the baseline (metadataEgress.engine)".into(),
                disagreement: None,
            },
            Engine::Cilium => Resolution {
                engine: ResolvedEngine::Cilium,
                reason: "set in the baseline (metadataEgress.engine)".into(),
                disagreement: (self.unknown.is_none() && !self.cilium_policies_served).then(|| {
                    "engine is Cilium but the API does not serve ciliumnetworkpolicies.cilium.io/v2: the policy cannot be written".to_string()
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(engine: Engine) -> MetadataEgress {
        MetadataEgress {
            engine,
            ..Default::default()
        }
    }

    fn cluster(served: bool, nodes: Option<usize>) -> ClusterEngine {
        ClusterEngine {
            cilium_policies_served: served,
            cilium_nodes: nodes,
            unknown: None,
        }
    }

    #[test]
    fn auto_picks_cilium_only_with_its_api_and_a_running_agent() {
        let auto = egress(Engine::Auto);
        let r = cluster(true, Some(3)).resolve(&auto);
        assert_eq!((r.engine, r.disagreement), (ResolvedEngine::Cilium, None));
        let r = cluster(false, Some(0)).resolve(&auto);
        assert_eq!((r.engine, r.disagreement), (ResolvedEngine::NetworkPolicy, None));
        let r = ClusterEngine::unknown("offline").resolve(&auto);
        assert_eq!((r.engine, r.disagreement), (ResolvedEngine::NetworkPolicy, None));
    }

    #[test]
    fn auto_says_so_when_the_evidence_disagrees_and_writes_a_network_policy() {
        let auto = egress(Engine::Auto);
        for c in [cluster(true, Some(0)), cluster(true, None), cluster(false, Some(2))] {
            let r = c.resolve(&auto);
            assert_eq!(r.engine, ResolvedEngine::NetworkPolicy, "{c:?}");
            assert!(r.disagreement.is_some(), "{c:?}");
        }
    }

    #[test]
    fn an_explicit_engine_wins_over_the_evidence() {
        let r = cluster(true, Some(3)).resolve(&egress(Engine::NetworkPolicy));
        assert_eq!((r.engine, r.disagreement), (ResolvedEngine::NetworkPolicy, None));
        let r = cluster(false, Some(0)).resolve(&egress(Engine::Cilium));
        assert_eq!(r.engine, ResolvedEngine::Cilium);
        assert!(r.disagreement.unwrap().contains("cannot be written"));
        assert_eq!(
            cluster(true, Some(0)).resolve(&egress(Engine::Cilium)).disagreement,
            None
        );
    }
}
