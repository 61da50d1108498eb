//! Compliance as `wgpolicyk8s.io/v1alpha2` PolicyReports, the format Kyverno, Trivy operator and
//! Policy Reporter read: one report per selected namespace (a result per baseline control and
//! object) and one cluster summary (a result per baseline). Pure: outcomes in, JSON out.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::{Control, Mode};
use crate::core::desired::ObjectKey;
use crate::core::objects::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::core::status::NsOutcome;

pub const GROUP_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
/// The name of every report the operator writes.
pub const REPORT_NAME: &str = "kube-baseline";
const SOURCE: &str = "kube-baseline";
const CATEGORY: &str = "AKS security baseline";

/// One selecting baseline's outcome in a namespace.
pub struct BaselineOutcome<'a> {
    pub baseline: &'a str,
    pub mode: Mode,
    pub outcome: &'a NsOutcome,
}

fn rule(control: Control) -> &'static str {
    control.as_str()
}

fn severity(control: Control) -> &'static str {
    match control {
        Control::MetadataEgress => "high",
        Control::RoleBindings | Control::PodSecurity => "medium",
    }
}

fn control_of(key: &ObjectKey) -> Control {
    match key {
        ObjectKey::NetworkPolicy(_) | ObjectKey::CiliumPolicy(_) => Control::MetadataEgress,
        ObjectKey::RoleBinding(_) => Control::RoleBindings,
        ObjectKey::PodSecurityLabels => Control::PodSecurity,
    }
}

/// `Kind/name` (as problems name objects) as a report resource.
fn resource(ns: &str, object: &str) -> Value {
    let (kind, name) = object.split_once('/').unwrap_or(("Namespace", ""));
    match kind {
        "NetworkPolicy" => json!({"apiVersion": "networking.k8s.io/v1", "kind": kind, "namespace": ns, "name": name}),
        "CiliumNetworkPolicy" => json!({"apiVersion": "cilium.io/v2", "kind": kind, "namespace": ns, "name": name}),
        "RoleBinding" => {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "namespace": ns, "name": name})
        }
        _ => json!({"apiVersion": "v1", "kind": "Namespace", "name": ns}),
    }
}

/// The results of one namespace, without timestamps (see [`with_timestamps`]).
pub fn namespace_results(ns: &str, outcomes: &[BaselineOutcome]) -> Vec<Value> {
    let mut out = Vec::new();
    for o in outcomes {
        // The engine the baseline's metadata policy is written for here, from its kind.
        let engine = o.outcome.wanted.iter().find_map(|key| match key {
            ObjectKey::NetworkPolicy(_) => Some("NetworkPolicy"),
            ObjectKey::CiliumPolicy(_) => Some("Cilium"),
            _ => None,
        });
        let result = |control: Control, object: &str, result: &str, message: String| {
            let mut properties = json!({"mode": format!("{:?}", o.mode)});
            if let Some(engine) = engine.filter(|_| control == Control::MetadataEgress) {
                properties["engine"] = json!(engine);
            }
            json!({
                "policy": o.baseline,
                "rule": rule(control),
                "result": result,
                "message": message,
                "source": SOURCE,
                "category": CATEGORY,
                "severity": severity(control),
                "scored": true,
                "resources": [resource(ns, object)],
                "properties": properties,
            })
        };
        for key in o.outcome.wanted.iter() {
            let object = key.to_string();
            let problems: Vec<_> = o.outcome.problems.iter().filter(|p| p.object == object).collect();
            let verdict = match problems.iter().map(|p| p.reason.as_str()).next() {
                None => "pass",
                Some("Drift" | "Conflict") => "fail",
                Some(_) => "error",
            };
            let message = if problems.is_empty() {
                format!("{object} is as the baseline declares")
            } else {
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.reason, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            out.push(result(control_of(key), &object, verdict, message));
        }
        // Problems about objects the baseline does not own: conflicts lost, policies that open a
        // blocked address.
        for p in o
            .outcome
            .problems
            .iter()
            .filter(|p| !o.outcome.wanted.iter().any(|k| k.to_string() == p.object))
        {
            let control = if p.object.starts_with("RoleBinding/") {
                Control::RoleBindings
            } else if p.object.starts_with("NetworkPolicy/") || p.object.starts_with("CiliumNetworkPolicy/") {
                Control::MetadataEgress
            } else {
                Control::PodSecurity
            };
            out.push(result(
                control,
                &p.object,
                "fail",
                format!("{}: {}", p.reason, p.message),
            ));
        }
        for w in &o.outcome.warnings {
            out.push(result(
                Control::PodSecurity,
                &w.object,
                "warn",
                format!("{}: {}", w.reason, w.message),
            ));
        }
        if let Some(ex) = &o.outcome.exemption {
            for control in &ex.controls {
                out.push(result(
                    *control,
                    "Namespace/",
                    "skip",
                    format!("exempted until {}", ex.expires.0),
                ));
            }
        }
    }
    out.sort_by_key(|r| r.to_string());
    out
}

/// Gives each result the timestamp of the same result in `previous` (the stored report), or
/// `now` when it is new or changed: a report is rewritten only when a result changes.
pub fn with_timestamps(results: Vec<Value>, previous: Option<&Value>, now: Timestamp) -> Vec<Value> {
    let old: BTreeMap<String, Value> = previous
        .and_then(|p| p.get("results"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let mut bare = r.clone();
            let ts = bare.as_object_mut()?.remove("timestamp")?;
            Some((bare.to_string(), ts))
        })
        .collect();
    results
        .into_iter()
        .map(|mut r| {
            let ts = old
                .get(&r.to_string())
                .cloned()
                .unwrap_or_else(|| json!({"seconds": now.as_second(), "nanos": 0}));
            r["timestamp"] = ts;
            r
        })
        .collect()
}

fn summary(results: &[Value]) -> Value {
    let mut counts: BTreeMap<&str, i64> = ["pass", "fail", "warn", "error", "skip"]
        .into_iter()
        .map(|k| (k, 0))
        .collect();
    for r in results {
        if let Some(c) = r.get("result").and_then(Value::as_str).and_then(|k| counts.get_mut(k)) {
            *c += 1;
        }
    }
    json!(counts)
}

fn labels() -> Value {
    json!({MANAGED_BY_LABEL: MANAGED_BY_VALUE})
}

/// The PolicyReport of namespace `ns`, or None when no baseline selects it (no report).
pub fn namespace_report(
    ns: &str,
    outcomes: &[BaselineOutcome],
    previous: Option<&Value>,
    now: Timestamp,
) -> Option<Value> {
    if outcomes.is_empty() {
        return None;
    }
    let results = with_timestamps(namespace_results(ns, outcomes), previous, now);
    Some(json!({
        "apiVersion": GROUP_VERSION,
        "kind": "PolicyReport",
        "metadata": {"name": REPORT_NAME, "namespace": ns, "labels": labels()},
        "scope": {"apiVersion": "v1", "kind": "Namespace", "name": ns},
        "summary": summary(&results),
        "results": results,
    }))
}

/// How many selected namespaces of one baseline are in each state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BaselineCounts {
    pub mode: Option<Mode>,
    pub selected: usize,
    pub complying: usize,
    pub by_state: BTreeMap<String, usize>,
    /// Some of the namespaces that do not comply (at most 20), for the message.
    pub failing: Vec<String>,
}

/// The cluster summary: one result per baseline, so its size does not grow with namespaces.
pub fn cluster_report(counts: &BTreeMap<String, BaselineCounts>, previous: Option<&Value>, now: Timestamp) -> Value {
    let results: Vec<Value> = counts
        .iter()
        .map(|(baseline, c)| {
            let ok = c.complying == c.selected;
            let mut message = format!("{} of {} selected namespaces comply", c.complying, c.selected);
            if !c.failing.is_empty() {
                message.push_str(&format!("; not: {}", c.failing.join(", ")));
                if c.selected - c.complying > c.failing.len() {
                    message.push_str(", ...");
                }
            }
            let mut properties: BTreeMap<String, String> =
                c.by_state.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            properties.insert("selected".into(), c.selected.to_string());
            properties.insert("mode".into(), c.mode.map(|m| format!("{m:?}")).unwrap_or_default());
            json!({
                "policy": baseline,
                "rule": "compliance",
                "result": if ok { "pass" } else { "fail" },
                "message": message,
                "source": SOURCE,
                "category": CATEGORY,
                "severity": "high",
                "scored": true,
                "resources": [{"apiVersion": "kubebaseline.io/v1alpha1", "kind": "SecurityBaseline", "name": baseline}],
                "properties": properties,
            })
        })
        .collect();
    let results = with_timestamps(results, previous, now);
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": "ClusterPolicyReport",
        "metadata": {"name": REPORT_NAME, "labels": labels()},
        "summary": summary(&results),
        "results": results,
    })
}

/// Whether a stored report already says what `desired` says (the fields the operator writes).
pub fn same(stored: &Value, desired: &Value) -> bool {
    ["scope", "summary", "results"]
        .iter()
        .all(|f| stored.get(f) == desired.get(f))
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
