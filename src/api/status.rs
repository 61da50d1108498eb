//! What the operator reports on a baseline (`status`): compliance counts, conditions, problems,
//! exemptions in force and departures. The operator writes it; admission reads its exemptions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::{Deserialize, Serialize};

use super::{Control, IpFamily, ResolvedEngine};

/// What the operator last observed for a baseline.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityBaselineStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Degraded, Conflict, Invalid and (with metadataEgress) EngineUncertain, in
    /// metav1.Condition shape.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// How many selected namespaces are in each compliance state.
    #[serde(default)]
    pub namespaces: NamespaceCounts,
    /// Drift repairs made since the baseline was created.
    #[serde(default)]
    pub repairs: i64,
    /// When the last repair was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair_time: Option<Time>,
    /// Exemptions in force now.
    #[serde(default)]
    pub active_exemptions: Vec<ActiveExemption>,
    /// The namespaces that are not compliant and why (at most 50, by namespace name).
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// Risks that do not make a namespace non-compliant, such as a Pod Security level that
    /// admits hostNetwork pods, which no NetworkPolicy restricts (at most 50).
    #[serde(default)]
    pub warnings: Vec<Problem>,
    /// The address families the metadata NetworkPolicy is rendered for, and why (the spec's
    /// ipFamilies, or the cluster's and how they were found). Absent without metadataEgress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_families: Option<RenderedFamilies>,
    /// The namespaces that left the baseline most recently (at most 20, newest first), and what
    /// changed: leaving removes a namespace's objects and Pod Security labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departures: Vec<Departure>,
    /// The policy engine the baseline writes for (NetworkPolicy or Cilium), and why (the spec's
    /// engine, or what was found in the cluster). Absent without metadataEgress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineStatus>,
}

/// A namespace that stopped being selected.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct Departure {
    pub namespace: String,
    /// What changed: the namespace's labels, the baseline's selector or exclusions, or the
    /// baseline's deletion.
    pub reason: String,
    pub time: Time,
}

/// The engine a baseline writes for, and why.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct EngineStatus {
    pub engine: ResolvedEngine,
    pub reason: String,
}

/// The address families a policy is rendered for.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct RenderedFamilies {
    pub families: Vec<IpFamily>,
    pub reason: String,
}

/// Namespaces by compliance state. `selected` is the sum of the others.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct NamespaceCounts {
    pub selected: i64,
    pub compliant: i64,
    pub drifted: i64,
    /// The baseline is not in force there: another NetworkPolicy lets pods reach a blocked CIDR,
    /// or a same-named object another controller owns stands in for the baseline's (see
    /// problems, reason Bypassed).
    #[serde(default)]
    pub bypassed: i64,
    pub exempted: i64,
    pub conflicted: i64,
    pub failed: i64,
}

/// An exemption in force in one namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveExemption {
    pub namespace: String,
    pub controls: Vec<Control>,
    pub expires: Time,
}

/// Why one object in one namespace does not match the baseline.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema)]
pub struct Problem {
    pub namespace: String,
    /// `Kind/name` of the object.
    pub object: String,
    /// A CamelCase reason: Drift, Bypassed, HostNetworkPod, Conflict, Forbidden, Invalid,
    /// ApplyFailed (and HostNetworkAllowed among warnings).
    pub reason: String,
    pub message: String,
}
