//! The pure core: which baselines select a namespace, what objects they want there, who wins
//! when two want the same object differently, and which exemptions are in force. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::NetworkPolicySpec;
use k8s_openapi::api::rbac::v1::{RoleRef, Subject};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::api::{ActiveExemption, Control, GroupFormat, Mode, ResolvedEngine, SecurityBaseline};
use crate::core::cilium::CiliumPolicySpec;
use crate::core::cluster::Cluster;
use crate::core::wants::{Want, wants};

/// Namespaces no baseline ever touches, whatever its selector says.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
/// The Pod Security Admission label prefix; the operator owns only these namespace labels.
pub const PSA_PREFIX: &str = "pod-security.kubernetes.io/";

/// The namespace facts the core needs (from the metadata-only namespace cache).
#[derive(Clone, Debug, Default)]
pub struct NamespaceFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub terminating: bool,
}

/// One managed object in a namespace, by kind and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    NetworkPolicy(String),
    /// A CiliumNetworkPolicy (the metadata policy on Cilium).
    CiliumPolicy(String),
    RoleBinding(String),
    /// The Pod Security Admission labels of the namespace itself.
    PodSecurityLabels,
}

impl ObjectKey {
    /// Whether this is a policy that blocks the metadata endpoint (of either engine).
    pub fn is_metadata_policy(&self) -> bool {
        matches!(self, Self::NetworkPolicy(_) | Self::CiliumPolicy(_))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NetworkPolicy(name) => write!(f, "NetworkPolicy/{name}"),
            Self::CiliumPolicy(name) => write!(f, "CiliumNetworkPolicy/{name}"),
            Self::RoleBinding(name) => write!(f, "RoleBinding/{name}"),
            Self::PodSecurityLabels => f.write_str("Namespace/pod-security-labels"),
        }
    }
}

/// What an object must contain (metadata labels and owner are added by the writer).
#[derive(Clone, Debug, PartialEq)]
pub enum Content {
    NetworkPolicy(NetworkPolicySpec),
    CiliumPolicy(CiliumPolicySpec),
    RoleBinding { role_ref: RoleRef, subjects: Vec<Subject> },
    PodSecurityLabels(BTreeMap<String, String>),
}

/// The baseline an object is written for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub uid: String,
    pub mode: Mode,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObject {
    pub content: Content,
    /// The baseline it is written for (labels, ownerReference): the first by precedence.
    pub owner: Owner,
    /// Every baseline whose wants it holds, by name (the owner included): baselines of one mode
    /// compose, the strictest wins (see [`Want::merge`]).
    pub contributors: Vec<String>,
}

/// A baseline wants an object that an older baseline wants differently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub key: ObjectKey,
    pub winner: String,
}

/// What one selecting baseline gets in one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    /// Objects this baseline wants and that will be written as it wants (by it or an older
    /// baseline that wants the same content).
    pub wanted: Vec<ObjectKey>,
    pub conflicts: Vec<Conflict>,
    pub exemption: Option<ActiveExemption>,
    /// The CIDRs no pod here may reach, when this baseline's metadataEgress control applies
    /// (declared and not exempted): other NetworkPolicies are checked against them.
    pub blocked: Vec<IpNet>,
    /// The engine the metadata policy is written for, when that control applies. On Cilium it is
    /// a deny, which no other policy can re-open: other NetworkPolicies are not bypasses there.
    pub engine: Option<ResolvedEngine>,
}

/// Everything a namespace should look like.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub objects: BTreeMap<ObjectKey, DesiredObject>,
    /// Verdicts of the baselines that select the namespace, by baseline name.
    pub verdicts: BTreeMap<String, Verdict>,
    /// Baselines whose objects must not be written or pruned here (Audit mode, invalid, or
    /// being deleted: the garbage collector removes what they made).
    pub hands_off: BTreeSet<String>,
    /// Pod Security labels this operator set must stay: a hands-off baseline that wants them here
    /// (or may, when invalid) could be the one that set them.
    pub keep_pod_security_labels: bool,
    /// When the earliest exemption in force here expires: reconcile again then.
    pub next_expiry: Option<Timestamp>,
    /// Whether an enforcing baseline selects the namespace: it then carries the guard label
    /// ([`crate::core::objects::GUARD_LABEL`]) that scopes the protection policy's Deny bindings.
    pub guarded: bool,
}

/// A baseline whose spec cannot be applied; admission catches most of this, the rest lands here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// A baseline's spec, parsed once into what the core computes with.
#[derive(Clone, Debug)]
pub struct ValidBaseline {
    pub selector: Selector,
    pub blocked: Vec<IpNet>,
}

/// Checks what admission could not (or did not, for objects stored before a CRD upgrade).
pub fn validate(baseline: &SecurityBaseline) -> Result<ValidBaseline, InvalidSpec> {
    if let Some(e) = baseline
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::api::UNDECODABLE_ANNOTATION))
    {
        return Err(InvalidSpec(format!("the stored baseline cannot be read: {e}")));
    }
    let spec = &baseline.spec;
    let selector = Selector::try_from(spec.namespace_selector.clone().unwrap_or_default())
        .map_err(|e| InvalidSpec(format!("namespaceSelector: {e}")))?;
    let mut blocked = Vec::new();
    if let Some(egress) = &spec.metadata_egress {
        for cidr in &egress.blocked_cidrs {
            let net: IpNet = cidr
                .parse()
                .map_err(|_| InvalidSpec(format!("metadataEgress.blockedCIDRs: {cidr:?} is not a CIDR")))?;
            if net.prefix_len() == 0 {
                return Err(InvalidSpec(format!(
                    "metadataEgress.blockedCIDRs: {cidr} would block all egress"
                )));
            }
            blocked.push(net);
        }
    }
    // Content never depends on the order a list was written in (two baselines listing the same
    // CIDRs or groups in another order want the same objects).
    blocked.sort();
    blocked.dedup();
    let mut names = BTreeSet::new();
    for rb in &spec.role_bindings {
        if !names.insert(rb.name.as_str()) {
            return Err(InvalidSpec(format!("roleBindings: duplicate name {:?}", rb.name)));
        }
        if spec.group_format == GroupFormat::Guid
            && let Some(bad) = rb.groups.iter().find(|g| !is_guid(g))
        {
            return Err(InvalidSpec(format!(
                "roleBindings[{}].groups: {bad:?} is not a GUID",
                rb.name
            )));
        }
    }
    Ok(ValidBaseline { selector, blocked })
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Whether a namespace is one no baseline may touch.
pub fn is_system_namespace(name: &str, extra: &BTreeSet<String>) -> bool {
    SYSTEM_NAMESPACES.contains(&name) || extra.contains(name)
}

/// Whether `baseline` selects namespace `ns` (system namespaces are filtered by the caller).
pub fn selects(baseline: &SecurityBaseline, valid: &ValidBaseline, ns: &NamespaceFacts) -> bool {
    !baseline.spec.excluded_namespaces.contains(&ns.name) && valid.selector.matches(&ns.labels)
}

/// Why namespace `ns`, which `baseline` selected when its spec was at `generation_then`, is no
/// longer selected; None when it still is, when the namespace itself is going away, or when the
/// baseline is invalid (its Invalid condition says so for every namespace at once).
pub fn departure(
    baseline: &SecurityBaseline,
    valid: Option<&ValidBaseline>,
    ns: &NamespaceFacts,
    system_namespaces: &BTreeSet<String>,
    generation_then: Option<i64>,
) -> Option<String> {
    if ns.terminating {
        return None;
    }
    if baseline.metadata.deletion_timestamp.is_some() {
        return Some("the SecurityBaseline is being deleted".into());
    }
    let valid = valid?;
    if is_system_namespace(&ns.name, system_namespaces) {
        return Some("it is a system namespace (the operator's --system-namespace)".into());
    }
    if baseline.spec.excluded_namespaces.contains(&ns.name) {
        return Some("the baseline's excludedNamespaces lists it".into());
    }
    if valid.selector.matches(&ns.labels) {
        return None;
    }
    let labels: Vec<String> = ns.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let labels = if labels.is_empty() {
        "none".to_string()
    } else {
        labels.join(", ")
    };
    Some(
        if generation_then.is_some() && generation_then != baseline.metadata.generation {
            format!("the baseline's namespaceSelector changed and no longer matches its labels ({labels})")
        } else {
            format!("its labels changed and no longer match the baseline's namespaceSelector (labels now: {labels})")
        },
    )
}

/// Who gets an object two baselines want: Enforce before Audit (a report-only baseline never
/// keeps an enforcing one from writing), then the older (creation time, then name).
pub fn precedence(a: &SecurityBaseline, b: &SecurityBaseline) -> std::cmp::Ordering {
    let key = |x: &SecurityBaseline| {
        (
            x.spec.mode != Mode::Enforce,
            x.metadata.creation_timestamp.as_ref().map(|t| t.0),
        )
    };
    key(a).cmp(&key(b)).then_with(|| a.name_any().cmp(&b.name_any()))
}

/// The objects one baseline wants in one namespace, before exemptions, with the control each
/// belongs to.
pub fn wanted_objects(
    baseline: &SecurityBaseline,
    valid: &ValidBaseline,
    cluster: &Cluster,
) -> Vec<(Control, ObjectKey, Content)> {
    wants(baseline, valid, cluster)
        .into_iter()
        .map(|(control, key, want)| (control, key, want.content()))
        .collect()
}

/// The exemption of `baseline` in force in `namespace` at `now`, if any.
pub fn active_exemption(baseline: &SecurityBaseline, namespace: &str, now: Timestamp) -> Option<ActiveExemption> {
    let mut controls = BTreeSet::new();
    let mut expires: Option<Timestamp> = None;
    for ex in baseline
        .spec
        .exemptions
        .iter()
        .filter(|e| e.namespace == namespace && e.expires.0 > now)
    {
        controls.extend(ex.controls.iter().copied());
        // Several exemptions for one namespace: the earliest expiry is when the answer changes.
        expires = Some(expires.map_or(ex.expires.0, |e| e.min(ex.expires.0)));
    }
    expires.map(|e| ActiveExemption {
        namespace: namespace.to_string(),
        controls: controls.into_iter().collect(),
        expires: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(e),
    })
}

/// The desired state of namespace `ns` under all `baselines` (in any order) at `now`.
///
/// `validated` holds the result of [`validate`] for each baseline by name; invalid baselines
/// contribute nothing and keep their hands off what they made before.
pub fn plan(
    ns: &NamespaceFacts,
    baselines: &[&SecurityBaseline],
    validated: &BTreeMap<String, Result<ValidBaseline, InvalidSpec>>,
    system_namespaces: &BTreeSet<String>,
    cluster: &Cluster,
    now: Timestamp,
) -> Plan {
    let mut plan = Plan::default();
    let deleting = |b: &SecurityBaseline| b.metadata.deletion_timestamp.is_some();
    for b in baselines {
        let valid = validated.get(&b.name_any()).and_then(|v| v.as_ref().ok());
        if b.spec.mode == Mode::Audit || valid.is_none() || deleting(b) {
            plan.hands_off.insert(b.name_any());
        }
        if b.spec.pod_security.is_some() && !deleting(b) {
            let may_select = valid.is_none_or(|v| selects(b, v, ns));
            plan.keep_pod_security_labels |= (b.spec.mode == Mode::Audit || valid.is_none()) && may_select;
        }
    }
    if ns.terminating || is_system_namespace(&ns.name, system_namespaces) {
        return plan;
    }
    let mut ordered: Vec<&SecurityBaseline> = baselines.to_vec();
    ordered.sort_by(|a, b| precedence(a, b));
    let mut wanted: BTreeMap<ObjectKey, (Want, Owner, Vec<String>)> = BTreeMap::new();
    for baseline in ordered.into_iter().filter(|b| !deleting(b)) {
        let name = baseline.name_any();
        let Some(Ok(valid)) = validated.get(&name) else {
            continue;
        };
        if !selects(baseline, valid, ns) {
            continue;
        }
        let owner = Owner {
            name: name.clone(),
            uid: baseline.uid().unwrap_or_default(),
            mode: baseline.spec.mode,
        };
        plan.guarded |= owner.mode == Mode::Enforce;
        let mut verdict = Verdict {
            exemption: active_exemption(baseline, &ns.name, now),
            ..Default::default()
        };
        if let Some(ex) = &verdict.exemption {
            plan.next_expiry = Some(plan.next_expiry.map_or(ex.expires.0, |t| t.min(ex.expires.0)));
        }
        let exempted = |c: Control| verdict.exemption.as_ref().is_some_and(|ex| ex.controls.contains(&c));
        if let Some(egress) = &baseline.spec.metadata_egress
            && !exempted(Control::MetadataEgress)
        {
            verdict.blocked = valid.blocked.clone();
            verdict.engine = Some(cluster.engine.resolve(egress).engine);
        }
        for (control, key, want) in wants(baseline, valid, cluster) {
            if verdict
                .exemption
                .as_ref()
                .is_some_and(|ex| ex.controls.contains(&control))
            {
                continue;
            }
            match wanted.get_mut(&key) {
                None => {
                    wanted.insert(key.clone(), (want, owner.clone(), vec![name.clone()]));
                    verdict.wanted.push(key);
                }
                // Baselines of one mode compose: the object holds what each asks, strictest
                // wins. An Audit baseline never changes what an Enforce one writes.
                Some((have, first, contributors)) if first.mode == owner.mode => match have.merge(&want) {
                    Some(merged) => {
                        *have = merged;
                        contributors.push(name.clone());
                        verdict.wanted.push(key);
                    }
                    None => verdict.conflicts.push(Conflict {
                        key,
                        winner: first.name.clone(),
                    }),
                },
                Some((have, _, _)) if *have == want => verdict.wanted.push(key),
                Some((_, first, _)) => verdict.conflicts.push(Conflict {
                    key,
                    winner: first.name.clone(),
                }),
            }
        }
        // Independent of the order the baseline lists its objects in.
        verdict.wanted.sort();
        verdict.conflicts.sort_by(|a, b| a.key.cmp(&b.key));
        plan.verdicts.insert(name, verdict);
    }
    plan.objects = wanted
        .into_iter()
        .map(|(key, (want, owner, mut contributors))| {
            contributors.sort();
            let content = want.content();
            (
                key,
                DesiredObject {
                    content,
                    owner,
                    contributors,
                },
            )
        })
        .collect();
    plan
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
