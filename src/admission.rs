//! Prevention inside the API server: the ValidatingAdmissionPolicyBindings that bind the static
//! policies of `config/admission/` to each SecurityBaseline. A binding carries what the policy
//! cannot compute itself: which namespaces the baseline enforces a control in (its selector, minus
//! system, excluded and exempted namespaces; CEL has no clock, so exemptions are resolved here and
//! the bindings rewritten when one expires) and whether to deny or warn. Pure.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, ParamRef, ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{AdmissionMode, Control, Mode, SecurityBaseline};
use crate::desired::{self, Owner, SYSTEM_NAMESPACES};
use crate::objects::{self, BASELINE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Refuses NetworkPolicies that open a blocked CIDR (`config/admission/metadata-egress.yaml`).
pub const EGRESS_POLICY: &str = "kube-baseline-metadata-egress";
/// Refuses deleting or changing what a baseline made (`config/admission/managed-objects.yaml`).
pub const OBJECTS_POLICY: &str = "kube-baseline-managed-objects";
/// Refuses Pod Security labels below a baseline's (`config/admission/pod-security.yaml`).
pub const POD_SECURITY_POLICY: &str = "kube-baseline-pod-security";

/// The label every namespace carries with its own name (set by the API server).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Binding names are DNS subdomains: at most 253 characters.
const MAX_NAME: usize = 253;

/// The bindings one baseline wants now, and when that answer changes next (an exemption
/// expires). None: the baseline keeps its hands off (invalid or being deleted); what it has stays.
pub struct Wanted {
    pub bindings: Vec<ValidatingAdmissionPolicyBinding>,
    pub next_change: Option<Timestamp>,
}

/// The name of a baseline's binding for one policy; long baseline names are shortened with a
/// hash so the name stays unique and within limits.
pub fn binding_name(baseline: &str, suffix: &str) -> String {
    let name = format!("kube-baseline-{baseline}-{suffix}");
    if name.len() <= MAX_NAME {
        return name;
    }
    // FNV-1a: stable across releases (std's hasher is not).
    let hash = baseline.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let keep = MAX_NAME - format!("kube-baseline--{suffix}-{hash:016x}").len();
    format!(
        "kube-baseline-{}-{hash:016x}-{suffix}",
        baseline[..keep].trim_end_matches(['-', '.'])
    )
}

/// The namespaces where `control` of `baseline` applies, as a namespaceSelector: its own
/// selector, minus system, excluded and (at `now`) exempted namespaces.
fn namespace_selector(
    baseline: &SecurityBaseline,
    control: Control,
    system_namespaces: &BTreeSet<String>,
    now: Timestamp,
) -> LabelSelector {
    let spec = &baseline.spec;
    let mut out: BTreeSet<String> = SYSTEM_NAMESPACES.iter().map(|s| s.to_string()).collect();
    out.extend(system_namespaces.iter().cloned());
    out.extend(spec.excluded_namespaces.iter().cloned());
    out.extend(
        spec.exemptions
            .iter()
            .filter(|e| e.expires.0 > now && e.controls.contains(&control))
            .map(|e| e.namespace.clone()),
    );
    let mut selector = spec.namespace_selector.clone().unwrap_or_default();
    selector
        .match_expressions
        .get_or_insert_with(Vec::new)
        .push(LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.into(),
            operator: "NotIn".into(),
            values: Some(out.into_iter().collect()),
        });
    selector
}

fn binding(
    baseline: &SecurityBaseline,
    owner: &Owner,
    suffix: &str,
    policy: &str,
    param: bool,
    match_resources: MatchResources,
    actions: &[&str],
) -> ValidatingAdmissionPolicyBinding {
    let name = baseline.name_any();
    ValidatingAdmissionPolicyBinding {
        metadata: ObjectMeta {
            name: Some(binding_name(&name, suffix)),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                (BASELINE_LABEL.to_string(), name.clone()),
            ])),
            owner_references: Some(vec![objects::owner_reference(owner)]),
            ..Default::default()
        },
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(policy.into()),
            // A baseline deleted before its binding (the garbage collector is about to remove it)
            // must not block every NetworkPolicy write.
            param_ref: param.then(|| ParamRef {
                name: Some(name),
                parameter_not_found_action: Some("Allow".into()),
                ..Default::default()
            }),
            match_resources: Some(match_resources),
            validation_actions: Some(actions.iter().map(|a| a.to_string()).collect()),
        }),
    }
}

/// What the API server stores for a MatchResources we send: the defaults spelled out, so a
/// stored binding compares equal to the desired one.
fn match_resources(namespace_selector: LabelSelector, object_selector: LabelSelector) -> MatchResources {
    MatchResources {
        namespace_selector: Some(namespace_selector),
        object_selector: Some(object_selector),
        match_policy: Some("Equivalent".into()),
        ..Default::default()
    }
}

/// The bindings `baseline` wants at `now`.
pub fn wanted(baseline: &SecurityBaseline, system_namespaces: &BTreeSet<String>, now: Timestamp) -> Option<Wanted> {
    if baseline.metadata.deletion_timestamp.is_some() || desired::validate(baseline).is_err() {
        return None;
    }
    let spec = &baseline.spec;
    let actions: &[&str] = match spec.effective_admission() {
        AdmissionMode::Off => {
            return Some(Wanted {
                bindings: vec![],
                next_change: None,
            });
        }
        AdmissionMode::Deny => &["Deny"],
        AdmissionMode::Warn => &["Warn"],
    };
    let owner = Owner {
        name: baseline.name_any(),
        uid: baseline.uid().unwrap_or_default(),
        mode: spec.mode,
    };
    let selector = |control| namespace_selector(baseline, control, system_namespaces, now);
    let mut bindings = Vec::new();
    if spec.metadata_egress.is_some() {
        let resources = match_resources(selector(Control::MetadataEgress), LabelSelector::default());
        bindings.push(binding(
            baseline,
            &owner,
            "egress",
            EGRESS_POLICY,
            true,
            resources,
            actions,
        ));
    }
    if spec
        .pod_security
        .as_ref()
        .is_some_and(|p| p.enforce.or(p.audit).or(p.warn).is_some())
    {
        let resources = match_resources(selector(Control::PodSecurity), LabelSelector::default());
        bindings.push(binding(
            baseline,
            &owner,
            "pod-security",
            POD_SECURITY_POLICY,
            true,
            resources,
            actions,
        ));
    }
    // Only an enforcing baseline makes objects; they exist only where it applies, so the binding
    // selects them by label, wherever they are.
    if spec.mode == Mode::Enforce && (spec.metadata_egress.is_some() || !spec.role_bindings.is_empty()) {
        let objects = LabelSelector {
            match_labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                (BASELINE_LABEL.to_string(), owner.name.clone()),
            ])),
            ..Default::default()
        };
        let resources = match_resources(LabelSelector::default(), objects);
        bindings.push(binding(
            baseline,
            &owner,
            "objects",
            OBJECTS_POLICY,
            false,
            resources,
            actions,
        ));
    }
    let next_change = spec.exemptions.iter().map(|e| e.expires.0).filter(|t| *t > now).min();
    Some(Wanted { bindings, next_change })
}

/// Whether a stored binding matches the desired one in what the operator declares.
pub fn in_sync(actual: &ValidatingAdmissionPolicyBinding, desired: &ValidatingAdmissionPolicyBinding) -> bool {
    actual.spec == desired.spec && objects::meta_in_sync(&actual.metadata, &desired.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Exemption, MetadataEgress, PodSecurity, PodSecurityLevel, SecurityBaselineSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn baseline(spec: SecurityBaselineSpec) -> SecurityBaseline {
        let mut b = SecurityBaseline::new("aks", spec);
        b.metadata.uid = Some("u1".into());
        b
    }

    fn full() -> SecurityBaselineSpec {
        SecurityBaselineSpec {
            metadata_egress: Some(MetadataEgress::default()),
            pod_security: Some(PodSecurity {
                enforce: Some(PodSecurityLevel::Baseline),
                ..Default::default()
            }),
            exemptions: vec![Exemption {
                namespace: "legacy".into(),
                controls: vec![Control::MetadataEgress],
                reason: "vendor agent".into(),
                expires: Time(Timestamp::from_second(1000).unwrap()),
            }],
            excluded_namespaces: vec!["ingress".into()],
            ..Default::default()
        }
    }

    fn not_in(b: &ValidatingAdmissionPolicyBinding) -> Vec<String> {
        let selector = b
            .spec
            .as_ref()
            .unwrap()
            .match_resources
            .as_ref()
            .unwrap()
            .namespace_selector
            .as_ref();
        selector.unwrap().match_expressions.as_ref().unwrap()[0]
            .values
            .clone()
            .unwrap()
    }

    #[test]
    fn an_enforcing_baseline_binds_each_control_where_it_applies() {
        let extra = BTreeSet::from(["platform".to_string()]);
        let w = wanted(&baseline(full()), &extra, Timestamp::from_second(10).unwrap()).unwrap();
        let names: Vec<_> = w.bindings.iter().map(|b| b.name_any()).collect();
        assert_eq!(
            names,
            [
                "kube-baseline-aks-egress",
                "kube-baseline-aks-pod-security",
                "kube-baseline-aks-objects"
            ]
        );
        assert_eq!(
            not_in(&w.bindings[0]),
            [
                "ingress",
                "kube-node-lease",
                "kube-public",
                "kube-system",
                "legacy",
                "platform"
            ]
        );
        assert!(
            !not_in(&w.bindings[1]).contains(&"legacy".to_string()),
            "exempted for egress only"
        );
        assert_eq!(w.next_change, Some(Timestamp::from_second(1000).unwrap()));
        let spec = w.bindings[0].spec.as_ref().unwrap();
        assert_eq!(spec.validation_actions, Some(vec!["Deny".to_string()]));
        assert_eq!(spec.param_ref.as_ref().unwrap().name.as_deref(), Some("aks"));
        // After expiry the namespace is guarded again.
        let later = wanted(&baseline(full()), &extra, Timestamp::from_second(1000).unwrap()).unwrap();
        assert!(!not_in(&later.bindings[0]).contains(&"legacy".to_string()));
        assert_eq!(later.next_change, None);
    }

    #[test]
    fn audit_baselines_only_warn_and_off_binds_nothing() {
        let now = Timestamp::from_second(10).unwrap();
        let audit = SecurityBaselineSpec {
            mode: Mode::Audit,
            admission: Some(AdmissionMode::Deny),
            ..full()
        };
        let w = wanted(&baseline(audit), &BTreeSet::new(), now).unwrap();
        assert_eq!(w.bindings.len(), 2, "an audit baseline makes no objects to guard");
        assert!(
            w.bindings
                .iter()
                .all(|b| b.spec.as_ref().unwrap().validation_actions == Some(vec!["Warn".to_string()]))
        );
        let off = SecurityBaselineSpec {
            admission: Some(AdmissionMode::Off),
            ..full()
        };
        assert!(
            wanted(&baseline(off), &BTreeSet::new(), now)
                .unwrap()
                .bindings
                .is_empty()
        );
    }

    #[test]
    fn invalid_or_deleted_baselines_keep_hands_off() {
        let mut spec = full();
        spec.metadata_egress = Some(MetadataEgress {
            blocked_cidrs: vec!["nonsense".into()],
            ..Default::default()
        });
        assert!(wanted(&baseline(spec), &BTreeSet::new(), Timestamp::UNIX_EPOCH).is_none());
        let mut deleted = baseline(full());
        deleted.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(wanted(&deleted, &BTreeSet::new(), Timestamp::UNIX_EPOCH).is_none());
    }

    #[test]
    fn long_baseline_names_give_unique_names_within_limits() {
        let a = "a".repeat(253);
        let mut b = a.clone();
        b.replace_range(252.., "b");
        let (na, nb) = (binding_name(&a, "pod-security"), binding_name(&b, "pod-security"));
        assert!(na.len() <= MAX_NAME && nb.len() <= MAX_NAME);
        assert_ne!(na, nb);
        assert_eq!(binding_name("x", "egress"), "kube-baseline-x-egress");
    }
}
