//! What the core needs to know about the cluster it renders for: the address families pods use
//! and the policy engine that enforces what it writes.

use crate::core::engine::ClusterEngine;
use crate::core::families::ClusterFamilies;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cluster {
    pub families: ClusterFamilies,
    pub engine: ClusterEngine,
}

impl Cluster {
    /// Nothing known (offline): IPv4, and a NetworkPolicy.
    pub fn unknown(why: &str) -> Self {
        Self {
            families: ClusterFamilies::unknown(why),
            engine: ClusterEngine::unknown(why),
        }
    }
}
