//! Judging one namespace against its plan: whether each desired object is there as wanted,
//! which other NetworkPolicies open a blocked address, and the outcome every selecting baseline
//! records. The controller judges after writing; `audit` judges what is, without writing. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{Mode, Problem, ResolvedEngine};
use crate::core::cilium::CiliumNetworkPolicy;
use crate::core::desired::{Content, DesiredObject, ObjectKey, PSA_PREFIX, Plan};
use crate::core::egress::{self, EgressSummary};
use crate::core::objects::{self, ManagedKind};
use crate::core::status::NsOutcome;

/// What reconciling (or, read-only, inspecting) one desired object found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectResult {
    InSync,
    /// Created, Updated, Adopted or Pruned.
    Repaired(&'static str),
    /// Differs from the baseline (or is missing) and was not written: the owning baseline is in
    /// Audit mode, or nothing writes (`audit`). The text says which.
    Drift(&'static str),
    Failed {
        reason: String,
        message: String,
    },
}

impl ObjectResult {
    /// A drift found by comparing: missing, or present with other content.
    pub fn drift(exists: bool) -> Self {
        Self::Drift(if exists { "differs from the baseline" } else { "missing" })
    }
}

/// The objects of one namespace as they are, for a read-only judgement.
pub struct Actual<'a> {
    pub namespace: &'a ObjectMeta,
    pub policies: &'a BTreeMap<String, NetworkPolicy>,
    pub cilium_policies: &'a BTreeMap<String, CiliumNetworkPolicy>,
    pub bindings: &'a BTreeMap<String, RoleBinding>,
}

/// Whether the object `name` of `have` is there as `want` says.
fn judged<K: ManagedKind>(ns: &str, name: &str, want: &DesiredObject, have: &BTreeMap<String, K>) -> ObjectResult {
    let have = have.get(name);
    if objects::holds(ns, name, want, have) {
        ObjectResult::InSync
    } else {
        ObjectResult::drift(have.is_some())
    }
}

/// Compares every object of `plan` with what is there, writing nothing.
pub fn inspect(ns: &str, plan: &Plan, actual: &Actual) -> BTreeMap<ObjectKey, ObjectResult> {
    plan.objects
        .iter()
        .map(|(key, want)| {
            let result = match key {
                ObjectKey::NetworkPolicy(name) => judged(ns, name, want, actual.policies),
                ObjectKey::CiliumPolicy(name) => judged(ns, name, want, actual.cilium_policies),
                ObjectKey::RoleBinding(name) => judged(ns, name, want, actual.bindings),
                ObjectKey::PodSecurityLabels => match &want.content {
                    Content::PodSecurityLabels(labels) => {
                        let floor = objects::pod_security_floor(actual.namespace, labels);
                        if objects::pod_security_in_sync(actual.namespace, &floor) {
                            ObjectResult::InSync
                        } else {
                            ObjectResult::Drift("Pod Security labels differ from the baseline")
                        }
                    }
                    _ => ObjectResult::drift(false),
                },
            };
            (key.clone(), result)
        })
        .collect()
}

/// What each selecting baseline finds beyond its own objects: problems (a NetworkPolicy that
/// lets pods reach its blocked CIDRs) and warnings (a Pod Security level admitting hostNetwork
/// pods, which no NetworkPolicy restricts).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// The findings of every baseline of `plan` in namespace `ns`, given summaries of all its
/// NetworkPolicies (the baselines' own are judged as objects, not as bypasses) and the names of
/// its running hostNetwork pods.
pub fn protection_findings<'a>(
    ns: &str,
    ns_meta: &ObjectMeta,
    plan: &Plan,
    summaries: impl IntoIterator<Item = &'a EgressSummary>,
    host_network_pods: &[String],
) -> BTreeMap<String, Findings> {
    // Never skipped by name: a same-named policy the baselines do not own (a squatter that could
    // not be adopted) is judged like any other.
    let others: Vec<&EgressSummary> = summaries.into_iter().filter(|s| !s.ours).collect();
    let enforce = effective_enforce_level(ns_meta, plan);
    let mut out = BTreeMap::new();
    for (baseline, verdict) in plan.verdicts.iter().filter(|(_, v)| !v.blocked.is_empty()) {
        let f: &mut Findings = out.entry(baseline.clone()).or_default();
        // A Cilium deny beats every allow: no NetworkPolicy re-opens what it blocks.
        let allows_can_bypass = verdict.engine != Some(ResolvedEngine::Cilium);
        let others = others.iter().copied().filter(|_| allows_can_bypass);
        for bypass in egress::bypasses(others, &verdict.blocked) {
            f.problems.push(Problem {
                namespace: ns.into(),
                object: format!("NetworkPolicy/{}", bypass.policy),
                reason: "Bypassed".into(),
                message: bypass.message(),
            });
        }
        // The Pod Security floor stops new hostNetwork pods, not those already running: no
        // NetworkPolicy applies to them, so they reach every blocked address.
        for pod in host_network_pods {
            f.problems.push(Problem {
                namespace: ns.into(),
                object: format!("Pod/{pod}"),
                reason: "HostNetworkPod".into(),
                message: format!(
                    "pod {pod} runs on its node's network (hostNetwork): no NetworkPolicy applies to it, so it can reach {}; a Pod Security level of baseline or restricted refuses new such pods but not this one, so move it out of the namespace or delete it",
                    verdict.blocked.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        if enforce.as_deref().and_then(objects::pod_security_rank).unwrap_or(0) == 0 {
            f.warnings.push(Problem {
                namespace: ns.into(),
                object: "Namespace/pod-security-labels".into(),
                reason: "HostNetworkAllowed".into(),
                message: format!(
                    "Pod Security enforce level is {}: hostNetwork pods are admitted, and no NetworkPolicy restricts them; set podSecurity.enforce to baseline or restricted",
                    enforce.as_deref().unwrap_or("unset (privileged)")
                ),
            });
        }
    }
    out
}

/// The Pod Security `enforce` level the namespace has once this reconcile's writes land: what an
/// enforcing baseline sets (a stricter level set by hand stays), else the label as it is.
fn effective_enforce_level(ns_meta: &ObjectMeta, plan: &Plan) -> Option<String> {
    let key = format!("{PSA_PREFIX}enforce");
    let actual = ns_meta.labels.as_ref().and_then(|l| l.get(&key)).cloned();
    let written = plan
        .objects
        .get(&ObjectKey::PodSecurityLabels)
        .and_then(|want| match &want.content {
            Content::PodSecurityLabels(labels) if want.owner.mode == Mode::Enforce => {
                objects::pod_security_floor(ns_meta, labels).get(&key).cloned()
            }
            _ => None,
        });
    written.or(actual)
}

/// The outcome of namespace `ns` for every baseline that selects it: its conflicts, its objects
/// that drifted or failed, and its findings.
pub fn outcomes(
    ns: &str,
    plan: &Plan,
    results: &BTreeMap<ObjectKey, ObjectResult>,
    findings: &BTreeMap<String, Findings>,
) -> BTreeMap<String, NsOutcome> {
    let mut out = BTreeMap::new();
    for (bname, verdict) in &plan.verdicts {
        let mut problems: Vec<Problem> = verdict
            .conflicts
            .iter()
            .map(|c| Problem {
                namespace: ns.into(),
                object: c.key.to_string(),
                reason: "Conflict".into(),
                message: format!(
                    "the older baseline {} wants this object with different content",
                    c.winner
                ),
            })
            .collect();
        for key in &verdict.wanted {
            let problem = |reason: &str, message: String| Problem {
                namespace: ns.into(),
                object: key.to_string(),
                reason: reason.into(),
                message,
            };
            match results.get(key) {
                Some(ObjectResult::Drift(what)) => problems.push(problem(
                    "Drift",
                    if plan.objects.get(key).is_some_and(|o| o.owner.mode == Mode::Audit) {
                        format!("{what} (Audit mode: not repaired)")
                    } else {
                        (*what).to_string()
                    },
                )),
                Some(ObjectResult::Failed { reason, message }) => problems.push(problem(reason, message.clone())),
                _ => {}
            }
        }
        let found = findings.get(bname);
        problems.extend(found.iter().flat_map(|f| f.problems.iter().cloned()));
        let mut outcome = NsOutcome::from_problems(problems, verdict.exemption.clone());
        outcome.warnings = found.map(|f| f.warnings.clone()).unwrap_or_default();
        outcome.wanted = std::sync::Arc::new(verdict.wanted.clone());
        out.insert(bname.clone(), outcome);
    }
    out
}

/// Summaries of a namespace's NetworkPolicies, for [`protection_findings`].
pub fn summaries(policies: &BTreeMap<String, NetworkPolicy>) -> Vec<EgressSummary> {
    policies.values().filter_map(EgressSummary::of).collect()
}

#[cfg(test)]
#[path = "evaluate_tests.rs"]
mod tests;
