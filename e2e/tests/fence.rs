//! The fence (`config/fence`): the API server itself limits kube-baseline's ServiceAccount to
//! what the operator does, whatever its RBAC allows.
//!
//! Requests go out with the installed ServiceAccount's own token. Where RBAC refuses before
//! admission is reached (the escalation check for `cluster-admin`, no RBAC for creating
//! namespaces), the same user name is impersonated with the `system:masters` group: RBAC then
//! allows everything, so the refusal seen is the fence's own, as it would be if someone widened
//! the operator's RBAC.

#[path = "../harness/mod.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::*;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicySpec};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const OPERATOR_NS: &str = "kube-baseline-system";
const OPERATOR_USER: &str = "system:serviceaccount:kube-baseline-system:kube-baseline";
/// The operator's field manager (src/objects.rs).
const MANAGER: &str = "kube-baseline";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const GROUP: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

async fn client_from(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid");
    Client::try_from(config).expect("client")
}

/// A kubeconfig with the installed ServiceAccount's token, made once per test binary.
async fn operator_kubeconfig_file() -> PathBuf {
    static PATH: OnceCell<PathBuf> = OnceCell::const_new();
    PATH.get_or_init(|| async {
        install();
        operator_kubeconfig("operator-fence.kubeconfig").await
    })
    .await
    .clone()
}

/// The operator's identity, authenticated by its own token: its RBAC, then the fence.
async fn operator() -> Client {
    client_from(&operator_kubeconfig_file().await).await
}

/// The operator's user name with RBAC out of the way (`system:masters`): only the fence stands.
async fn operator_with_unlimited_rbac() -> Client {
    install();
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid");
    config.auth_info.impersonate = Some(OPERATOR_USER.into());
    config.auth_info.impersonate_groups = Some(vec!["system:masters".into(), "system:authenticated".into()]);
    Client::try_from(config).expect("client")
}

/// The labels the operator puts on everything it makes.
fn managed_labels() -> BTreeMap<String, String> {
    labels(&[
        (MANAGED_BY, "kube-baseline"),
        ("kubebaseline.io/baseline", "fence-test"),
    ])
}

fn meta(name: &str, managed: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: managed.then(managed_labels),
        ..Default::default()
    }
}

fn group(name: &str) -> Subject {
    Subject {
        kind: "Group".into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        name: name.into(),
        namespace: None,
    }
}

fn binding(name: &str, role: &str, managed: bool) -> RoleBinding {
    RoleBinding {
        metadata: meta(name, managed),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![group(GROUP)]),
    }
}

/// An egress policy shaped like the operator's (all egress but one address).
fn policy(name: &str, managed: bool) -> NetworkPolicy {
    let spec: NetworkPolicySpec = serde_json::from_value(json!({
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]}],
    }))
    .unwrap();
    NetworkPolicy {
        metadata: meta(name, managed),
        spec: Some(spec),
    }
}

/// The request was refused by the fence, with a message containing `says`.
#[track_caller]
fn assert_fenced<T: std::fmt::Debug>(result: Result<T, kube::Error>, says: &str) {
    match &result {
        Err(kube::Error::Api(s))
            if s.code == 403
                && (s.message.contains("ValidatingAdmissionPolicy 'kube-baseline-fence'")
                    || s.message
                        .contains("ValidatingAdmissionPolicy 'kube-baseline-fence-system-namespaces'"))
                && s.message.contains("kube-baseline's ServiceAccount may")
                && s.message.contains(says) => {}
        _ => panic!("expected the fence to refuse, saying {says:?}; got {result:?}"),
    }
}

fn apply_as_operator() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        field_manager: Some(MANAGER.into()),
    }
}

#[tokio::test]
async fn the_issue_reproduction_is_refused() {
    // `kubectl create rolebinding x --clusterrole=edit --group=evil -n kube-system` with the
    // operator's token: exactly the command of the issue.
    let kubeconfig = operator_kubeconfig_file().await;
    let name = unique("evil");
    let out = Command::new(kubectl_path())
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "create",
            "rolebinding",
            &name,
            "--clusterrole=edit",
            "--group=evil",
            "-n",
            "kube-system",
        ])
        .output()
        .expect("kubectl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the binding was created: {stderr}");
    assert!(
        stderr.contains("kube-baseline's ServiceAccount may") && stderr.contains("kube-system is a system namespace"),
        "{stderr}"
    );
}

#[tokio::test]
async fn bindings_and_policies_in_system_namespaces_are_refused() {
    let op = operator().await;
    for ns in ["kube-system", "kube-public", OPERATOR_NS] {
        let name = unique("fence-sys");
        let bindings: Api<RoleBinding> = Api::namespaced(op.clone(), ns);
        assert_fenced(
            bindings
                .create(&PostParams::default(), &binding(&name, "edit", true))
                .await,
            &format!("{ns} is a system namespace"),
        );
        let policies: Api<NetworkPolicy> = Api::namespaced(op.clone(), ns);
        assert_fenced(
            policies.create(&PostParams::default(), &policy(&name, true)).await,
            &format!("{ns} is a system namespace"),
        );
    }
}

#[tokio::test]
async fn a_labelled_edit_binding_in_a_user_namespace_is_allowed_and_an_unlabelled_one_refused() {
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-rb", &[]).await;
    let bindings: Api<RoleBinding> = Api::namespaced(operator().await, &ns);

    assert_fenced(
        bindings
            .create(&PostParams::default(), &binding("team-dev", "edit", false))
            .await,
        &format!(
            "may only create objects labelled app.kubernetes.io/managed-by=kube-baseline, and RoleBinding {ns}/team-dev would not be"
        ),
    );

    // What the operator does: create and repair by server-side apply, then prune.
    let desired = binding("team-dev", "edit", true);
    bindings
        .patch("team-dev", &apply_as_operator(), &Patch::Apply(&desired))
        .await
        .expect("a labelled edit binding is the operator's job");
    let mut repaired = desired.clone();
    repaired.subjects = Some(vec![group("6b1c0f7e-2a3d-4c5e-8f90-123456789abc")]);
    bindings
        .patch("team-dev", &apply_as_operator(), &Patch::Apply(&repaired))
        .await
        .expect("updating it too");
    // Stripping its label while changing what it grants is not something the operator does;
    // stripping it alone is releasing (content kept), which it does.
    assert_fenced(
        bindings
            .patch(
                "team-dev",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {MANAGED_BY: null}},
                    "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"}]})),
            )
            .await,
        "would not be",
    );
    bindings
        .delete("team-dev", &DeleteParams::default())
        .await
        .expect("pruning it too");
    bindings
        .patch("team-dev", &apply_as_operator(), &Patch::Apply(&desired))
        .await
        .expect("made again");
    bindings
        .patch(
            "team-dev",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {MANAGED_BY: null}}})),
        )
        .await
        .expect("releasing it (content kept) is the operator's job too");
    assert_fenced(bindings.delete("team-dev", &DeleteParams::default()).await, "is not");
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn bindings_to_roles_off_the_allow_list_are_refused() {
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-roles", &[]).await;
    let bindings: Api<RoleBinding> = Api::namespaced(operator().await, &ns);
    let unlimited: Api<RoleBinding> = Api::namespaced(operator_with_unlimited_rbac().await, &ns);
    for role in ["cluster-admin", "admin"] {
        let desired = binding(&format!("team-{role}"), role, true);
        // With its own token the API server's escalation check refuses first: `bind` is granted
        // for view and edit only, and RoleBinding storage checks it before admission runs.
        let err = bindings.create(&PostParams::default(), &desired).await.unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 403), "{role}: {err:?}");
        // With RBAC out of the way, the fence refuses on its own.
        assert_fenced(
            unlimited.create(&PostParams::default(), &desired).await,
            &format!(
                "may only bind the ClusterRoles view, edit, and RoleBinding {ns}/team-{role} refers to ClusterRole {role}"
            ),
        );
    }
    // A namespaced Role of the same name is no way around it.
    let mut to_a_role = binding("team-role", "edit", true);
    to_a_role.role_ref.kind = "Role".into();
    assert_fenced(
        unlimited.create(&PostParams::default(), &to_a_role).await,
        "refers to Role edit",
    );
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn bindings_to_users_service_accounts_or_system_groups_are_refused() {
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-subj", &[]).await;
    let bindings: Api<RoleBinding> = Api::namespaced(operator().await, &ns);
    let subjects = [
        Subject {
            kind: "User".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: "mallory".into(),
            namespace: None,
        },
        Subject {
            kind: "ServiceAccount".into(),
            api_group: None,
            name: "default".into(),
            namespace: Some(ns.clone()),
        },
        group("system:authenticated"),
    ];
    for subject in subjects {
        let mut desired = binding("team-dev", "edit", true);
        desired.subjects = Some(vec![group(GROUP), subject.clone()]);
        assert_fenced(
            bindings.create(&PostParams::default(), &desired).await,
            &format!("binds {} {}", subject.kind, subject.name),
        );
    }
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn the_dry_run_probe_before_a_role_change_passes() {
    // Before replacing a binding whose role changes, the operator dry-runs the new one under a
    // scratch name (src/controller.rs): the fence must let it through, and store nothing.
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-probe", &[]).await;
    let bindings: Api<RoleBinding> = Api::namespaced(operator().await, &ns);
    let probe = binding("team-dev-kube-baseline-probe", "view", true);
    bindings
        .create(&dry_run(), &probe)
        .await
        .expect("the probe passes the fence");
    assert!(
        bindings
            .get_opt("team-dev-kube-baseline-probe")
            .await
            .unwrap()
            .is_none()
    );
    // A dry run is checked like the real request.
    assert_fenced(
        bindings
            .create(&dry_run(), &binding("team-dev-kube-baseline-probe", "view", false))
            .await,
        "would not be",
    );
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn only_labelled_policies_are_deleted_and_a_hand_made_one_can_be_adopted() {
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-np", &[]).await;
    let as_admin: Api<NetworkPolicy> = Api::namespaced(admin.clone(), &ns);
    let policies: Api<NetworkPolicy> = Api::namespaced(operator().await, &ns);
    as_admin
        .create(&PostParams::default(), &policy("team-own", false))
        .await
        .unwrap();
    as_admin
        .create(&PostParams::default(), &policy("ours", true))
        .await
        .unwrap();

    assert_fenced(
        policies.delete("team-own", &DeleteParams::default()).await,
        &format!(
            "may only delete objects labelled app.kubernetes.io/managed-by=kube-baseline, and NetworkPolicy {ns}/team-own is not"
        ),
    );
    assert!(policies.get_opt("team-own").await.unwrap().is_some());
    policies
        .delete("ours", &DeleteParams::default())
        .await
        .expect("a labelled policy may be pruned");

    // Adoption: the operator server-side-applies its labels onto the hand-made policy.
    let adopted = policies
        .patch(
            "team-own",
            &apply_as_operator(),
            &Patch::Apply(&policy("team-own", true)),
        )
        .await
        .expect("adopting adds the label, which the new object carries");
    assert_eq!(adopted.labels()[MANAGED_BY], "kube-baseline");
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn ingress_policies_are_refused() {
    // An ingress policy allowing everything would open pods that a team's own default-deny
    // policy isolates; the operator only ever writes egress policies.
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-ingress", &[]).await;
    let policies: Api<NetworkPolicy> = Api::namespaced(operator().await, &ns);
    let mut open = policy("open-ingress", true);
    let spec = open.spec.as_mut().unwrap();
    spec.policy_types = Some(vec!["Ingress".into(), "Egress".into()]);
    spec.ingress = Some(vec![Default::default()]);
    spec.egress = Some(vec![NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            ..Default::default()
        }]),
        ..Default::default()
    }]);
    assert_fenced(
        policies.create(&PostParams::default(), &open).await,
        "has policyTypes [Ingress, Egress]",
    );
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn only_pod_security_labels_of_a_namespace_may_change() {
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-ns", &[("team", "a")]).await;
    let namespaces: Api<Namespace> = Api::all(operator().await);
    let apply =
        |labels: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}});

    // What the operator does: set its Pod Security labels, change them, release them.
    namespaces
        .patch(
            &ns,
            &apply_as_operator(),
            &Patch::Apply(apply(
                json!({PSA_ENFORCE: "baseline", "pod-security.kubernetes.io/enforce-version": "latest"}),
            )),
        )
        .await
        .expect("Pod Security labels may be set");
    namespaces
        .patch(
            &ns,
            &apply_as_operator(),
            &Patch::Apply(apply(json!({PSA_ENFORCE: "restricted"}))),
        )
        .await
        .expect("changed, and one released");

    // Anything else is refused, whichever way it is sent.
    assert_fenced(
        namespaces
            .patch(
                &ns,
                &apply_as_operator(),
                &Patch::Apply(apply(json!({PSA_ENFORCE: "restricted", "team": "b"}))),
            )
            .await,
        &format!("this update of Namespace {ns} changes team"),
    );
    assert_fenced(
        namespaces
            .patch(
                &ns,
                &apply_as_operator(),
                &Patch::Apply(apply(json!({PSA_ENFORCE: "restricted", "extra": "x"}))),
            )
            .await,
        "changes extra",
    );
    assert_fenced(
        namespaces
            .patch(
                &ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
            )
            .await,
        "changes team",
    );
    assert_fenced(
        namespaces
            .patch(
                &ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"x": "y"}}})),
            )
            .await,
        "changes its annotations, ownerReferences, finalizers or spec",
    );
    // (Not the Pod Security labels: an operator running on the same cluster, e.g. another test
    // binary's, releases the labels its field manager owns in a namespace no baseline selects.)
    let labels = admin_namespace_labels(&admin, &ns).await;
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("a"),
        "refused changes left no trace"
    );

    namespaces
        .patch(&ns, &apply_as_operator(), &Patch::Apply(apply(json!({}))))
        .await
        .expect("releasing every Pod Security label");
    assert!(!admin_namespace_labels(&admin, &ns).await.contains_key(PSA_ENFORCE));
    delete_namespace(&admin, &ns).await;
}

async fn admin_namespace_labels(admin: &Client, ns: &str) -> BTreeMap<String, String> {
    Api::<Namespace>::all(admin.clone())
        .get(ns)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default()
}

#[tokio::test]
async fn system_namespaces_keep_their_pod_security_labels() {
    let namespaces: Api<Namespace> = Api::all(operator().await);
    let patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-public", "labels": {PSA_ENFORCE: "privileged"}}});
    assert_fenced(
        namespaces
            .patch("kube-public", &apply_as_operator(), &Patch::Apply(&patch))
            .await,
        "Namespace kube-public: it is a system namespace",
    );
}

#[tokio::test]
async fn namespaces_are_neither_created_nor_deleted() {
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-nsdel", &[]).await;
    let namespaces: Api<Namespace> = Api::all(operator_with_unlimited_rbac().await);
    assert_fenced(
        namespaces.delete(&ns, &DeleteParams::default()).await,
        &format!("may not delete Namespace {ns}"),
    );
    let new = Namespace {
        metadata: ObjectMeta {
            name: Some(unique("fence-new")),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_fenced(
        namespaces.create(&PostParams::default(), &new).await,
        "may not create Namespace",
    );
    // Nor finalized or given a status: the operator writes no subresource.
    assert_fenced(
        namespaces
            .patch_status(&ns, &PatchParams::default(), &Patch::Merge(json!({"status": {}})))
            .await,
        &format!("may not update the status subresource of Namespace {ns}"),
    );
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn other_identities_are_not_fenced() {
    // The fence matches one user name: another ServiceAccount with the same powers is not held.
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-other", &[]).await;
    let mut config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig_path()).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{OPERATOR_NS}:someone-else"));
    config.auth_info.impersonate_groups = Some(vec!["system:masters".into()]);
    let other: Api<RoleBinding> = Api::namespaced(Client::try_from(config).unwrap(), &ns);
    other
        .create(&PostParams::default(), &binding("hand-made", "admin", false))
        .await
        .expect("not the operator: RBAC alone decides");
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn the_fenced_identity_cannot_remove_the_fence() {
    let op = operator().await;
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(op.clone());
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(op);
    let dry_run_delete = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    let dry_run_patch = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let refused = |result: Result<(), kube::Error>, what: &str| {
        assert!(
            matches!(&result, Err(kube::Error::Api(s)) if s.code == 403),
            "the operator's token may {what}: {result:?}"
        );
    };
    refused(
        bindings.delete("kube-baseline-fence", &dry_run_delete).await.map(drop),
        "delete the fence's binding",
    );
    refused(
        bindings
            .patch(
                "kube-baseline-fence",
                &dry_run_patch,
                &Patch::Merge(json!({"spec": {"validationActions": ["Audit"]}})),
            )
            .await
            .map(drop),
        "turn the fence's binding into an audit-only one",
    );
    refused(
        policies.delete("kube-baseline-fence", &dry_run_delete).await.map(drop),
        "delete the fence",
    );
}

#[tokio::test]
async fn policies_registered_through_the_api_never_see_policy_bindings() {
    // Documents a limit of Kubernetes, not of the fence: the API server skips every policy
    // registered through its API on ValidatingAdmissionPolicy(Binding) requests, so the fence's
    // rules for those bindings hold only where it is also loaded as a static manifest. Should
    // this test fail, Kubernetes changed, and the fence's comment and this test must follow.
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(operator_with_unlimited_rbac().await);
    let unfenced = ValidatingAdmissionPolicyBinding {
        metadata: meta(&unique("not-kube-baseline"), false),
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some("no-such-policy".into()),
            validation_actions: Some(vec!["Deny".into()]),
            ..Default::default()
        }),
    };
    let created = bindings.create(&dry_run(), &unfenced).await;
    assert!(created.is_ok(), "the fence now applies to policy bindings: {created:?}");
}

/// `kubectl kustomize <dir>` as parsed documents.
fn render(dir: &str) -> Vec<Value> {
    let out = Command::new(kubectl_path())
        .args(["kustomize", repo_root().join(dir).to_str().unwrap()])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).expect("rendered YAML parses")
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The strings of a CEL list literal of string literals, e.g. `['view', 'edit']`.
fn cel_string_list(expression: &str) -> Vec<String> {
    let inner = expression
        .trim()
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a CEL list literal: {expression}"));
    inner
        .split(',')
        .map(|item| {
            let item = item.trim();
            item.strip_prefix('\'')
                .and_then(|i| i.strip_suffix('\''))
                .unwrap_or_else(|| panic!("not a string literal: {item} (in {expression})"))
                .to_string()
        })
        .collect()
}

fn fence_variable(fence: &Value, name: &str) -> Vec<String> {
    let variable = fence["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("the fence has no variable {name}"));
    cel_string_list(variable["expression"].as_str().unwrap())
}

/// The namespace names a policy's `matchConstraints.namespaceSelector` matches with `operator`.
fn selected_namespaces(policy: &Value, operator: &str) -> Vec<String> {
    let expressions = policy["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"]
        .as_array()
        .unwrap();
    assert_eq!(expressions.len(), 1, "{expressions:?}");
    let e = &expressions[0];
    assert_eq!(e["key"], "kubernetes.io/metadata.name");
    assert_eq!(e["operator"], operator);
    e["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The roles the fence's match condition lets through without its rules (its routine).
fn routine_roles(fence: &Value) -> Vec<String> {
    let condition = fence["spec"]["matchConditions"][0]["expression"].as_str().unwrap();
    let (_, rest) = condition
        .split_once("object.roleRef.name in ")
        .expect("the routine names its roles");
    cel_string_list(&rest[..=rest.find(']').unwrap()])
}

/// The roles the operator may `bind` (RBAC) and the roles the fence lets it bind, sorted.
fn allow_lists(docs: &[Value]) -> (Vec<String>, Vec<String>) {
    let role = find(docs, "ClusterRole", "kube-baseline-bind-allowlist");
    let mut rbac: Vec<String> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verbs"].as_array().unwrap().iter().any(|v| v == "bind"))
        .flat_map(|r| r["resourceNames"].as_array().unwrap().iter())
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let mut fence = fence_variable(
        find(docs, "ValidatingAdmissionPolicy", "kube-baseline-fence"),
        "allowedClusterRoles",
    );
    rbac.sort();
    fence.sort();
    (rbac, fence)
}

#[test]
fn fence_and_rbac_allow_the_same_roles() {
    let (rbac, fence) = allow_lists(&render("config/default"));
    assert_eq!(
        rbac, fence,
        "bind-allowlist.yaml and the fence's allowedClusterRoles differ"
    );
    assert_eq!(rbac, ["edit", "view"], "admin is opt-in");

    let (rbac, fence) = allow_lists(&render("config/overlays/allow-admin"));
    assert_eq!(
        rbac, fence,
        "the allow-admin component widens one list but not the other"
    );
    assert_eq!(rbac, ["admin", "edit", "view"]);

    // What the match condition lets through unchecked must be allowed by the rules too.
    for config in ["config/default", "config/overlays/allow-admin"] {
        let docs = render(config);
        let (allowed, _) = allow_lists(&docs);
        let routine = routine_roles(find(&docs, "ValidatingAdmissionPolicy", "kube-baseline-fence"));
        assert!(
            routine.iter().all(|r| allowed.contains(r)),
            "{config}: the fence's routine binds {routine:?}, the allow-list is {allowed:?}"
        );
    }
}

#[test]
fn fence_matches_the_installed_identity_and_its_system_namespaces() {
    let docs = render("config/default");
    let fence = find(&docs, "ValidatingAdmissionPolicy", "kube-baseline-fence");
    let account = find(&docs, "ServiceAccount", "kube-baseline");
    let user = format!(
        "system:serviceaccount:{}:{}",
        account["metadata"]["namespace"].as_str().unwrap(),
        account["metadata"]["name"].as_str().unwrap()
    );
    let system = find(
        &docs,
        "ValidatingAdmissionPolicy",
        "kube-baseline-fence-system-namespaces",
    );
    for policy in [fence, system] {
        let condition = policy["spec"]["matchConditions"][0]["expression"].as_str().unwrap();
        assert!(
            condition.contains(&format!("'{user}'")),
            "{condition} does not name {user}"
        );
    }

    for name in ["kube-baseline-fence", "kube-baseline-fence-system-namespaces"] {
        let binding = find(&docs, "ValidatingAdmissionPolicyBinding", name);
        assert_eq!(binding["spec"]["policyName"], name);
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
        assert!(
            binding["metadata"]["labels"].get(MANAGED_BY).is_none(),
            "the operator may write what carries its managed-by label; the fence's binding {name} must not"
        );
    }

    // The fence skips exactly the namespaces the system-namespaces policy refuses everything in.
    let protected = selected_namespaces(system, "In");
    assert_eq!(
        selected_namespaces(fence, "NotIn"),
        protected,
        "the fence and its system-namespaces policy disagree on the system namespaces"
    );
    let deployment = find(&docs, "Deployment", "kube-baseline");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    for arg in args
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix("--system-namespace="))
    {
        assert!(
            protected.iter().any(|p| p == arg),
            "{arg} is a system namespace the fence does not protect"
        );
    }
    for ns in ["kube-system", "kube-public", "kube-node-lease"] {
        assert!(protected.iter().any(|p| p == ns), "{ns}");
    }
}
