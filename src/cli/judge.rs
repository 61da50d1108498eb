//! The read-only judgement of a whole cluster: for every namespace, the plan the controller
//! would make and how what is there measures up against it ([`crate::core::evaluate`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use serde::Serialize;

use crate::api::{ActiveExemption, Mode, Problem, SecurityBaseline};
use crate::cli::cluster::Snapshot;
use crate::core::cluster::Cluster;
use crate::core::desired::{self, InvalidSpec, NamespaceFacts, Plan, ValidBaseline};
use crate::core::evaluate::{self, Actual};
use crate::core::families;
use crate::core::objects;
use crate::core::status::NsState;

/// One namespace as one baseline sees it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub baseline: String,
    pub mode: Mode,
    pub state: NsState,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Problem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption: Option<ActiveExemption>,
}

/// A baseline the operator could not apply.
#[derive(Clone, Debug, Serialize)]
pub struct InvalidBaseline {
    pub baseline: String,
    pub message: String,
}

/// The whole answer.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub compliant: bool,
    /// By baseline with metadataEgress: the address families its policy is rendered for, and why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ip_families: BTreeMap<String, String>,
    /// By baseline with metadataEgress: the engine its policy is written for, and why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub engines: BTreeMap<String, String>,
    pub summary: BTreeMap<&'static str, usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid_baselines: Vec<InvalidBaseline>,
    pub namespaces: Vec<Row>,
}

/// Each baseline's validation, by name (what the controller computes once per baseline).
pub fn validated(baselines: &[SecurityBaseline]) -> BTreeMap<String, Result<ValidBaseline, InvalidSpec>> {
    baselines.iter().map(|b| (b.name_any(), desired::validate(b))).collect()
}

/// The facts the core reads about a namespace.
pub fn facts(meta: &ObjectMeta) -> NamespaceFacts {
    NamespaceFacts {
        name: meta.name.clone().unwrap_or_default(),
        labels: objects::selectable_labels(meta),
        terminating: meta.deletion_timestamp.is_some(),
    }
}

/// The plan of one namespace, exactly as the controller computes it.
pub fn plan_for(
    meta: &ObjectMeta,
    baselines: &[SecurityBaseline],
    validated: &BTreeMap<String, Result<ValidBaseline, InvalidSpec>>,
    system_namespaces: &BTreeSet<String>,
    cluster: &Cluster,
    now: Timestamp,
) -> Plan {
    let refs: Vec<&SecurityBaseline> = baselines.iter().collect();
    desired::plan(&facts(meta), &refs, validated, system_namespaces, cluster, now)
}

/// By baseline with metadataEgress: the families its policy is rendered for, and why.
pub fn rendered_families(baselines: &[SecurityBaseline], cluster: &Cluster) -> BTreeMap<String, String> {
    baselines
        .iter()
        .filter_map(|b| {
            let egress = b.spec.metadata_egress.as_ref()?;
            Some((b.name_any(), families::rendered(egress, &cluster.families).to_string()))
        })
        .collect()
}

/// By baseline with metadataEgress: the engine its policy is written for, and why (with the
/// evidence that disagrees, if any).
pub fn rendered_engines(baselines: &[SecurityBaseline], cluster: &Cluster) -> BTreeMap<String, String> {
    baselines
        .iter()
        .filter_map(|b| {
            let r = cluster.engine.resolve(b.spec.metadata_egress.as_ref()?);
            let warning = r.disagreement.map(|w| format!("; WARNING: {w}")).unwrap_or_default();
            Some((b.name_any(), format!("{} ({}){warning}", r.engine.as_str(), r.reason)))
        })
        .collect()
}

/// One comment line per baseline and fact: address families, then engine.
pub fn cluster_lines(baselines: &[SecurityBaseline], cluster: &Cluster) -> Vec<String> {
    let families = rendered_families(baselines, cluster);
    let engines = rendered_engines(baselines, cluster);
    families
        .iter()
        .map(|(b, f)| format!("{b}: address families {f}"))
        .chain(engines.iter().map(|(b, e)| format!("{b}: engine {e}")))
        .collect()
}

/// Judges every namespace of `snapshot` against `baselines`.
pub fn judge(
    snapshot: &Snapshot,
    baselines: &[SecurityBaseline],
    system_namespaces: &BTreeSet<String>,
    now: Timestamp,
) -> Report {
    let validated = validated(baselines);
    let empty_p = BTreeMap::new();
    let empty_b = BTreeMap::new();
    let empty_c = BTreeMap::new();
    let mut rows = Vec::new();
    for meta in &snapshot.namespaces {
        let ns = meta.name.clone().unwrap_or_default();
        let plan = plan_for(meta, baselines, &validated, system_namespaces, &snapshot.cluster, now);
        if plan.verdicts.is_empty() {
            continue;
        }
        let policies = snapshot.policies.get(&ns).unwrap_or(&empty_p);
        let actual = Actual {
            namespace: meta,
            policies,
            cilium_policies: snapshot.cilium_policies.get(&ns).unwrap_or(&empty_c),
            bindings: snapshot.bindings.get(&ns).unwrap_or(&empty_b),
        };
        let results = evaluate::inspect(&ns, &plan, &actual);
        let summaries = evaluate::summaries(policies);
        let findings = evaluate::protection_findings(&ns, meta, &plan, &summaries, &[]);
        for (baseline, outcome) in evaluate::outcomes(&ns, &plan, &results, &findings) {
            let mode = baselines
                .iter()
                .find(|b| b.name_any() == baseline)
                .map_or(Mode::Enforce, |b| b.spec.mode);
            rows.push(Row {
                namespace: ns.clone(),
                baseline,
                mode,
                state: outcome.state,
                problems: outcome.problems,
                warnings: outcome.warnings,
                exemption: outcome.exemption,
            });
        }
    }
    rows.sort_by(|a, b| (&a.namespace, &a.baseline).cmp(&(&b.namespace, &b.baseline)));
    let invalid_baselines: Vec<InvalidBaseline> = validated
        .iter()
        .filter_map(|(name, v)| {
            v.as_ref().err().map(|e| InvalidBaseline {
                baseline: name.clone(),
                message: e.0.clone(),
            })
        })
        .collect();
    let mut summary: BTreeMap<&'static str, usize> = BTreeMap::new();
    summary.insert("selected", rows.len());
    for row in &rows {
        *summary.entry(row.state.as_str()).or_default() += 1;
    }
    Report {
        compliant: invalid_baselines.is_empty() && rows.iter().all(|r| r.state.complies()),
        ip_families: rendered_families(baselines, &snapshot.cluster),
        engines: rendered_engines(baselines, &snapshot.cluster),
        summary,
        invalid_baselines,
        namespaces: rows,
    }
}
