//! The `SecurityBaseline` API (`kubebaseline.io/v1alpha1`): the Rust types the CRD is generated
//! from (the status in `status.rs`, the metadata-egress part in `egress.rs`), with the
//! admission-time validation (OpenAPI patterns and CEL rules) that keeps malformed baselines out
//! of the cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

mod egress;
mod status;
pub use egress::*;
pub use status::*;

/// The group every kube-baseline API lives in.
pub const GROUP: &str = "kubebaseline.io";

/// Set, in the operator's memory only, on a stored baseline it cannot decode (stored before a
/// CRD upgrade, or past a gap in admission): the baseline is Invalid with the decoding error, and
/// the others go on (one undecodable object would otherwise fail the whole baseline list).
pub const UNDECODABLE_ANNOTATION: &str = "kubebaseline.io/undecodable";

/// A stored baseline as the operator works with it: decoded, or, when it cannot be, a stand-in
/// with its metadata that validation reports as Invalid and that keeps its hands off everything
/// (its Pod Security labels included, which it may have set).
pub fn decode(obj: kube::api::DynamicObject) -> SecurityBaseline {
    let metadata = obj.metadata.clone();
    match serde_json::to_value(&obj).and_then(serde_json::from_value::<SecurityBaseline>) {
        Ok(b) => b,
        Err(e) => {
            let mut metadata = metadata;
            metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(UNDECODABLE_ANNOTATION.into(), e.to_string());
            SecurityBaseline {
                metadata,
                spec: SecurityBaselineSpec {
                    pod_security: Some(PodSecurity::default()),
                    ..Default::default()
                },
                status: None,
            }
        }
    }
}

/// DNS-1123 label: the shape of a namespace name.
const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// DNS-1123 subdomain: the shape of NetworkPolicy and RoleBinding names.
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A ClusterRole name is any path segment; built-in ones contain `:` (`system:aggregate-to-edit`).
const CLUSTER_ROLE_NAME: &str = r"^[A-Za-z0-9:._-]+$";

/// Declares the security objects every selected namespace must carry: the instance-metadata
/// egress NetworkPolicy, RoleBindings to Entra ID groups, and Pod Security Admission labels.
/// kube-baseline creates, repairs and prunes them continuously and reports compliance here.
// clippy reads the repeated `printcolumn(type_ = ..)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubebaseline.io",
    version = "v1alpha1",
    kind = "SecurityBaseline",
    shortname = "sbl",
    status = "SecurityBaselineStatus",
    category = "all-baselines",
    doc = "A security baseline every selected namespace is kept on (see spec).",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Selected", type_ = "integer", json_path = ".status.namespaces.selected"),
    printcolumn(name = "Compliant", type_ = "integer", json_path = ".status.namespaces.compliant"),
    printcolumn(name = "Exempted", type_ = "integer", json_path = ".status.namespaces.exempted"),
    printcolumn(name = "Bypassed", type_ = "integer", json_path = ".status.namespaces.bypassed"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Engine",
        type_ = "string",
        json_path = ".status.engine.engine",
        priority = "1"
    ),
    printcolumn(
        name = "Drifted",
        type_ = "integer",
        json_path = ".status.namespaces.drifted",
        priority = "1"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.namespaces.failed",
        priority = "1"
    ),
    printcolumn(
        name = "Conflicted",
        type_ = "integer",
        json_path = ".status.namespaces.conflicted",
        priority = "1"
    )
)]
#[x_kube(validation = Rule::new(
    "self.groupFormat == 'Any' || self.roleBindings.all(rb, rb.groups.all(g, g.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')))"
).message("roleBindings[].groups must be Microsoft Entra ID group object IDs (GUIDs such as 3f2504e0-4f89-11d3-9a0c-0305e82c3301); set groupFormat: Any to allow other OIDC group names"))]
#[serde(rename_all = "camelCase")]
pub struct SecurityBaselineSpec {
    /// Enforce writes and repairs the baseline's objects; Audit only reports what Enforce would
    /// change and never writes to a namespace.
    #[serde(default)]
    pub mode: Mode,

    /// Which namespaces the baseline applies to, by label. Empty or omitted selects every
    /// namespace (system namespaces and excludedNamespaces are always left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Dynamic (default): a namespace whose labels stop matching namespaceSelector leaves the
    /// baseline, and its objects and Pod Security labels are removed (a Warning Event and
    /// status.departures say so). Sticky: in the namespaces where this baseline enforces
    /// (admission Deny), a Namespace label change that would take the namespace out of the
    /// baseline is refused at admission; cluster administrators (break-glass) and edits of the
    /// baseline itself still can.
    #[serde(default, skip_serializing_if = "Selection::is_dynamic")]
    pub selection: Selection,

    /// Namespaces never touched by this baseline, by name, in addition to the system namespaces
    /// (kube-system, kube-public, kube-node-lease and the operator's --system-namespace flag).
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub excluded_namespaces: Vec<String>,

    /// Time-boxed, accountable exceptions: in the named namespace the listed controls are not
    /// applied (and their objects are pruned) until `expires`, then enforced again automatically.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub exemptions: Vec<Exemption>,

    /// The policy that blocks pod egress to the cloud Instance Metadata endpoint (a NetworkPolicy
    /// that allows all egress but that, or on Cilium a deny CiliumNetworkPolicy; see engine).
    /// Omitted means no such policy is managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_egress: Option<MetadataEgress>,

    /// RoleBindings created in every selected namespace, each granting a ClusterRole to groups.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub role_bindings: Vec<BaselineRoleBinding>,

    /// Pod Security Admission labels set on each selected namespace. Omitted means the baseline
    /// owns no namespace labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecurity>,

    /// Guid (default) requires every group to be an Entra ID object ID; Any accepts any
    /// non-empty group name, for non-Entra OIDC providers.
    #[serde(default)]
    pub group_format: GroupFormat,

    /// Prevention inside the API server (the ValidatingAdmissionPolicy of config/admission, which
    /// takes every baseline as a parameter): Deny refuses, in the namespaces where this baseline
    /// enforces a control, NetworkPolicies that would open a blocked CIDR, edits and deletes of
    /// the objects it made, and Pod Security labels below its levels; Warn admits them with a
    /// warning; Off guards nothing. Default: Deny for Enforce baselines, Warn for Audit ones (an
    /// Audit baseline never denies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionMode>,

    /// What happens to the objects this baseline made when it is deleted: Delete (default)
    /// removes them; Orphan releases them (labels and ownerReference removed, content kept, Pod
    /// Security labels left in place). Objects it adopted are always released, never deleted.
    /// While anything is to be released the baseline carries the finalizer
    /// kubebaseline.io/release (see docs/operations.md, Uninstalling).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Whether a namespace may leave a baseline by changing its own labels.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Selection {
    #[default]
    Dynamic,
    Sticky,
}

impl Selection {
    pub fn is_dynamic(&self) -> bool {
        *self == Self::Dynamic
    }
}

/// What deleting a baseline does to what it made.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Orphan,
}

/// What the API server does with a request a baseline's admission rules refuse.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum AdmissionMode {
    Deny,
    Warn,
    Off,
}

/// Whether a baseline writes (Enforce) or only reports (Audit).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// How roleBindings[].groups are validated at admission.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum GroupFormat {
    #[default]
    Guid,
    Any,
}

/// A part of the baseline that an exemption can switch off in one namespace.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Control {
    MetadataEgress,
    RoleBindings,
    PodSecurity,
}

impl Control {
    /// As the API spells it (the field it switches off).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MetadataEgress => "metadataEgress",
            Self::RoleBindings => "roleBindings",
            Self::PodSecurity => "podSecurity",
        }
    }
}

/// One time-boxed exception.
// The API server does not type-check a field with a `format` (an array passes as `expires`),
// and one baseline the operator cannot decode would stop its whole baseline watch: a CEL rule
// that reads the field makes the API server check it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("type(self.expires) == google.protobuf.Timestamp")
    .message("expires must be an RFC 3339 time such as 2027-01-31T00:00:00Z"))]
pub struct Exemption {
    /// The namespace the exception applies to.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL))]
    pub namespace: String,
    /// The controls that do not apply in that namespace until `expires`.
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub controls: Vec<Control>,
    /// Why the exception exists and who accepted it (shown in status; required for audits).
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// The instant (RFC 3339) after which the controls are enforced again.
    pub expires: Time,
}

/// A RoleBinding granting a ClusterRole to groups in every selected namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineRoleBinding {
    /// Name of the RoleBinding; unique within the baseline.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// The ClusterRole granted (roleRef). The operator may only bind ClusterRoles its own RBAC
    /// allows it to bind; anything else is refused by the API server and reported.
    #[schemars(length(min = 1, max = 253), regex(pattern = CLUSTER_ROLE_NAME))]
    pub cluster_role: String,
    /// The groups granted the role: Entra ID group object IDs (see groupFormat). These are the
    /// binding's only subjects; subjects added by hand are removed.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub groups: Vec<String>,
}

/// Pod Security Admission levels.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    Privileged,
    Baseline,
    Restricted,
}

impl PodSecurityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// The `pod-security.kubernetes.io/*` labels to set on each selected namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurity {
    /// Level whose violations reject the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce: Option<PodSecurityLevel>,
    /// Level whose violations are recorded in the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<PodSecurityLevel>,
    /// Level whose violations are returned to the user as warnings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn: Option<PodSecurityLevel>,
    /// Policy version for every level set (the `-version` labels): `latest` or `v1.N`.
    #[serde(default = "default_psa_version")]
    #[schemars(regex(pattern = r"^(latest|v1\.[0-9]+)$"))]
    pub version: String,
}

impl Default for PodSecurity {
    fn default() -> Self {
        Self {
            enforce: None,
            audit: None,
            warn: None,
            version: default_psa_version(),
        }
    }
}

fn default_psa_version() -> String {
    "latest".into()
}

/// The CRD as YAML, exactly as `kube-baseline crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let mut crd = serde_json::to_value(SecurityBaseline::crd()).expect("a CRD serializes to JSON");
    unwrap_descriptions(&mut crd);
    serde_saphyr::to_string(&crd)
}

/// Doc comments are wrapped for source files; `kubectl explain` wraps on its own, so single line
/// breaks become spaces (paragraph breaks stay).
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|p| p.split('\n').collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_field_has_a_description_without_hard_wraps() {
        let crd = serde_json::to_value(SecurityBaseline::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        fn check(path: &str, schema: &serde_json::Value) {
            for (name, field) in schema["properties"].as_object().into_iter().flatten() {
                let here = format!("{path}.{name}");
                assert!(
                    field
                        .get("description")
                        .and_then(|d| d.as_str())
                        .is_some_and(|d| !d.is_empty()),
                    "{here} has no description"
                );
                check(&here, field);
                check(&here, &field["items"]);
            }
        }
        check("spec", spec);
        let printed: serde_json::Value = serde_saphyr::from_str(&crd_yaml().unwrap()).unwrap();
        let spec = &printed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let cidrs = spec["properties"]["metadataEgress"]["properties"]["blockedCIDRs"]["description"]
            .as_str()
            .unwrap();
        assert!(cidrs.starts_with(
            "Destinations pods may not reach, as canonical IPv4 or IPv6 CIDRs (no bits set past the prefix)."
        ));
    }
}
