//! `render --diff`: the rendered objects beside what a live cluster holds (read-only), as the
//! fields the operator declares, with a line diff per object that differs.

use super::*;

/// The part of an object the operator declares, as YAML lines to compare.
fn declared(value: &Rendered) -> String {
    let view = match value {
        Rendered::Policy(p) => serde_json::json!({
            "labels": p.metadata.labels,
            "spec": p.spec.clone().map(|s| k8s_openapi::api::networking::v1::NetworkPolicySpec { ingress: None, ..s }),
        }),
        Rendered::Cilium(p) => serde_json::json!({
            "labels": p.metadata.labels,
            "spec": p.spec.as_ref().map(|s| serde_json::json!({
                "endpointSelector": s.endpoint_selector,
                "egressDeny": s.egress_deny,
                "enableDefaultDeny": s.enable_default_deny,
            })),
        }),
        Rendered::Binding(b) => {
            let mut subjects: Vec<_> = b.subjects.clone().unwrap_or_default();
            subjects.sort_by(|x, y| x.name.cmp(&y.name));
            serde_json::json!({"labels": b.metadata.labels, "roleRef": b.role_ref, "subjects": subjects})
        }
        Rendered::Namespace(n) => serde_json::json!({"labels": n.metadata.labels}),
    };
    serde_saphyr::to_string(&view).unwrap_or_default()
}

/// The managed labels of a live object (ours only: the rest is someone else's).
fn ours(
    labels: Option<&BTreeMap<String, String>>,
    keep: &BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    let labels = labels?;
    Some(
        keep.keys()
            .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
            .collect(),
    )
}

/// The live object `name` as far as the operator declares it (its own labels only), and whether
/// it holds what `want` says.
fn live_view<K: ManagedKind + Into<Rendered>>(
    ns: &str,
    name: &str,
    want: &DesiredObject,
    live: &BTreeMap<String, K>,
) -> (Option<Rendered>, bool) {
    let live = live.get(name);
    let ok = objects::holds(ns, name, want, live);
    let desired = objects::expected::<K>(ns, name, want, live).expect("desired content matches its key");
    let view = live.map(|l| {
        let mut l = l.clone();
        let keep = desired.meta().labels.clone().unwrap_or_default();
        l.meta_mut().labels = ours(l.meta().labels.as_ref(), &keep);
        l.into()
    });
    (view, ok)
}

/// Compares the rendered objects with the live ones.
pub fn diff(
    baselines: &[SecurityBaseline],
    namespaces: &[ObjectMeta],
    snapshot: &Snapshot,
    system: &BTreeSet<String>,
    now: Timestamp,
) -> Changes {
    let validated = judge::validated(baselines);
    let names: BTreeSet<String> = baselines.iter().map(|b| b.name_any()).collect();
    let empty_p = BTreeMap::new();
    let empty_b = BTreeMap::new();
    let empty_c = BTreeMap::new();
    let mut text: String = judge::cluster_lines(baselines, &snapshot.cluster)
        .into_iter()
        .map(|line| format!("# {line}\n"))
        .collect();
    let mut count = 0;
    for meta in namespaces {
        let ns = meta.name.clone().unwrap_or_default();
        let plan = judge::plan_for(meta, baselines, &validated, system, &snapshot.cluster, now);
        let policies = snapshot.policies.get(&ns).unwrap_or(&empty_p);
        let bindings = snapshot.bindings.get(&ns).unwrap_or(&empty_b);
        let cilium = snapshot.cilium_policies.get(&ns).unwrap_or(&empty_c);
        // An Audit baseline's objects are compared too (its drift is what `audit` reports), and
        // marked: the operator does not write them, Enforce would.
        for (key, want) in &plan.objects {
            let rendered = build(meta, key, want);
            let (live, in_sync): (Option<Rendered>, bool) = match (key, &rendered) {
                (ObjectKey::NetworkPolicy(n), _) => live_view(&ns, n, want, policies),
                (ObjectKey::CiliumPolicy(n), _) => live_view(&ns, n, want, cilium),
                (ObjectKey::RoleBinding(n), _) => live_view(&ns, n, want, bindings),
                (_, Rendered::Namespace(d)) => {
                    let want_labels = d.metadata.labels.clone().unwrap_or_default();
                    let ok = objects::pod_security_in_sync(meta, &want_labels);
                    let live = Namespace {
                        metadata: ObjectMeta {
                            labels: ours(meta.labels.as_ref(), &want_labels),
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    (Some(Rendered::Namespace(live)), ok)
                }
                (ObjectKey::PodSecurityLabels, _) => unreachable!("labels render as a namespace"),
            };
            let what = match want.owner.mode {
                Mode::Enforce => format!("{key} in {ns}"),
                Mode::Audit => format!(
                    "{key} in {ns} (Audit baseline {}: not written; what Enforce would write)",
                    want.owner.name
                ),
            };
            if in_sync {
                let _ = writeln!(text, "= {what}: unchanged");
                continue;
            }
            count += 1;
            let verb = match (&live, &rendered) {
                (None, _) => "create",
                (Some(Rendered::Binding(l)), Rendered::Binding(d)) if l.role_ref != d.role_ref => {
                    "replace (roleRef is immutable)"
                }
                _ => "update",
            };
            let _ = writeln!(text, "~ {what}: {verb}");
            let before = live.as_ref().map(declared).unwrap_or_default();
            text.push_str(&unified(&before, &declared(&rendered)));
        }
        // Objects the given baselines made here and no longer want: pruned.
        let stale = |m: &ObjectMeta, key: ObjectKey| -> Option<String> {
            let owner = m.labels.as_ref()?.get(objects::BASELINE_LABEL)?;
            (objects::is_managed(m) && names.contains(owner) && !plan.objects.contains_key(&key)).then(|| {
                let how = if objects::is_adopted(m) {
                    "release (adopted: labels removed, content kept)"
                } else {
                    "delete"
                };
                format!("- {key} in {ns}: {how} (no longer wanted by {owner})")
            })
        };
        for line in policies
            .values()
            .filter_map(|p| stale(&p.metadata, ObjectKey::NetworkPolicy(p.name_any())))
            .chain(
                cilium
                    .values()
                    .filter_map(|p| stale(&p.metadata, ObjectKey::CiliumPolicy(p.name_any()))),
            )
            .chain(
                bindings
                    .values()
                    .filter_map(|b| stale(&b.metadata, ObjectKey::RoleBinding(b.name_any()))),
            )
        {
            count += 1;
            let _ = writeln!(text, "{line}");
        }
    }
    let _ = writeln!(text, "{count} change(s)");
    Changes { text, count }
}

/// A line diff of two short texts (`-` live, `+` rendered), longest common subsequence.
pub(super) fn unified(before: &str, after: &str) -> String {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "      {}", a[i]);
            (i, j) = (i + 1, j + 1);
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            let _ = writeln!(out, "    + {}", b[j]);
            j += 1;
        } else {
            let _ = writeln!(out, "    - {}", a[i]);
            i += 1;
        }
    }
    out
}
