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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use kube_baseline::api::SecurityBaseline;
use kube_baseline::core::cilium::{CiliumNetworkPolicy, metadata_deny_spec};
use kube_baseline::core::objects::release_patch;
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
        made_fence_baseline().await;
        operator_kubeconfig("operator-fence.kubeconfig").await
    })
    .await
    .clone()
}

/// The label that makes a namespace one the shared fence baseline selects.
const SELECTED: &str = "e2e.kubebaseline.io/fence";

/// The baseline every managed object of these tests names (its name and uid): it selects the
/// namespaces made by [`selected_namespace`], asks for the NetworkPolicy `POLICY_NAME` and the
/// RoleBindings team-dev (edit) and team-read (view) to `GROUP`. No operator runs in this
/// binary: the requests below are the operator's, sent by hand.
static FENCE_BASELINE: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
const POLICY_NAME: &str = "restrict-instance-metadata";

async fn fence_baseline() -> &'static (String, String) {
    // Every test waits for the per-baseline fence, not only the first (which sets the baseline).
    static IN_FORCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let baseline = made_fence_baseline().await;
    IN_FORCE.get_or_init(per_baseline_fence_in_force).await;
    baseline
}

async fn made_fence_baseline() -> &'static (String, String) {
    if let Some(b) = FENCE_BASELINE.get() {
        return b;
    }
    install();
    // One name for every run: the baseline is made once per control plane and reused, so runs
    // leave no baselines behind (each is a parameter of every admission policy).
    let name = "e2e-fence-test".to_string();
    let spec = json!({
        "metadataEgress": {"policyName": POLICY_NAME},
        "roleBindings": [
            {"name": "team-dev", "clusterRole": "edit", "groups": [GROUP]},
            {"name": "team-read", "clusterRole": "view", "groups": [GROUP]},
        ],
    });
    let api = baselines_api(client().await);
    let made = match api.create(&PostParams::default(), &baseline_object(&name, spec)).await {
        Ok(made) => made,
        Err(kube::Error::Api(s)) if s.code == 409 => api.get(&name).await.expect("the fence tests' baseline"),
        Err(e) => panic!("the fence tests' baseline: {e:?}"),
    };
    let _ = FENCE_BASELINE.set((name, made.metadata.uid.unwrap()));
    FENCE_BASELINE.get().unwrap()
}

/// Waits (up to two minutes) until the per-baseline fence refuses what it must. Its parameters
/// are SecurityBaselines, and after an API server restart (e2e_faults restarts it just before
/// this binary) the API server takes 30 s and more to discover their kind; until then that policy
/// is not configured and, failing open by design (config/fence/per-baseline.yaml), admits.
async fn per_baseline_fence_in_force() {
    install();
    let admin = client().await;
    let elsewhere = create_namespace(&admin, "fence-probe", &[]).await;
    let bindings = Api::<RoleBinding>::namespaced(client_from(&operator_kubeconfig_file().await).await, &elsewhere);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let probe = binding("team-dev", "edit", true);
    eventually(
        "the per-baseline fence in force",
        std::time::Duration::from_secs(120),
        || async {
            matches!(bindings.create(&dry_run, &probe).await,
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("kube-baseline-fence-per-baseline"))
            .then_some(())
        },
    )
    .await;
    delete_namespace(&admin, &elsewhere).await;
}

/// A SecurityBaseline named `name` with `spec`, selecting the namespaces labelled `SELECTED=name`.
fn baseline_object(name: &str, mut spec: Value) -> DynamicObject {
    spec["namespaceSelector"] = json!({"matchLabels": {SELECTED: name}});
    serde_json::from_value(json!({
        "apiVersion": "kubebaseline.io/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// A namespace the shared fence baseline selects.
async fn selected_namespace(admin: &Client, prefix: &str, extra: &[(&str, &str)]) -> String {
    let baseline = &fence_baseline().await.0;
    let mut labels = vec![(SELECTED, baseline.as_str())];
    labels.extend_from_slice(extra);
    create_namespace(admin, prefix, &labels).await
}

/// The operator's identity, authenticated by its own token: its RBAC, then the fence.
async fn operator() -> Client {
    fence_baseline().await;
    client_from(&operator_kubeconfig_file().await).await
}

/// The operator's user name with RBAC out of the way (`system:masters`): only the fence stands.
async fn operator_with_unlimited_rbac() -> Client {
    install();
    fence_baseline().await;
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid");
    config.auth_info.impersonate = Some(OPERATOR_USER.into());
    config.auth_info.impersonate_groups = Some(vec!["system:masters".into(), "system:authenticated".into()]);
    Client::try_from(config).expect("client")
}

/// The labels and controller ownerReference the operator puts on everything it makes for the
/// shared fence baseline.
fn managed_meta(name: &str) -> ObjectMeta {
    let (baseline, uid) = FENCE_BASELINE
        .get()
        .expect("operator() or operator_with_unlimited_rbac() first");
    owned_by(name, baseline, uid)
}

/// Labelled and owned as the operator does it, for the baseline `baseline` (which need not exist).
fn owned_by(name: &str, baseline: &str, uid: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(labels(&[
            (MANAGED_BY, "kube-baseline"),
            ("kubebaseline.io/baseline", baseline),
        ])),
        owner_references: Some(vec![OwnerReference {
            api_version: "kubebaseline.io/v1alpha1".into(),
            kind: "SecurityBaseline".into(),
            name: baseline.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]),
        ..Default::default()
    }
}

/// Labelled and owned for a baseline that does not exist: only policy.yaml's rules apply then,
/// so each test below sees the refusal it is about.
fn ghost_meta(name: &str) -> ObjectMeta {
    owned_by(name, "no-such-baseline", "00000000-0000-0000-0000-000000000000")
}

/// A binding of `role` labelled and owned for a baseline that does not exist.
fn ghost_binding(name: &str, role: &str) -> RoleBinding {
    RoleBinding {
        metadata: ghost_meta(name),
        ..binding(name, role, false)
    }
}

fn meta(name: &str, managed: bool) -> ObjectMeta {
    if managed {
        managed_meta(name)
    } else {
        ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        }
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
                && [
                    "kube-baseline-fence",
                    "kube-baseline-fence-system-namespaces",
                    "kube-baseline-fence-baselines",
                    "kube-baseline-fence-per-baseline",
                ]
                .iter()
                .any(|p| s.message.contains(&format!("ValidatingAdmissionPolicy '{p}'")))
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
    let ns = selected_namespace(&admin, "fence-rb", &[]).await;
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
    // Someone adds a subject; the repair takes it out again.
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .patch(
            "team-dev",
            &PatchParams::default(),
            &Patch::Merge(json!({"subjects": [group(GROUP), group("6b1c0f7e-2a3d-4c5e-8f90-123456789abc")]})),
        )
        .await
        .unwrap();
    bindings
        .patch("team-dev", &apply_as_operator(), &Patch::Apply(&desired))
        .await
        .expect("repairing it too");
    // Stripping its label while changing what it grants is not something the operator does;
    // stripping it alone is releasing (content kept), which it does.
    assert_fenced(
        bindings
            .patch(
                "team-dev",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {MANAGED_BY: null}},
                    "subjects": [group("6b1c0f7e-2a3d-4c5e-8f90-123456789abc")]})),
            )
            .await,
        "without changing its content",
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
        let desired = ghost_binding(&format!("team-{role}"), role);
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
    let mut to_a_role = ghost_binding("team-role", "edit");
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
        let mut desired = ghost_binding("team-dev", "edit");
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
    let ns = selected_namespace(&admin, "fence-probe", &[]).await;
    let bindings: Api<RoleBinding> = Api::namespaced(operator().await, &ns);
    // The probe stands for team-dev as the baseline now asks for it (edit).
    let probe = binding("team-dev-kube-baseline-probe", "edit", true);
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
            .create(&dry_run(), &binding("team-dev-kube-baseline-probe", "edit", false))
            .await,
        "would not be",
    );
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn only_labelled_policies_are_deleted_and_a_hand_made_one_can_be_adopted() {
    let admin = client().await;
    let ns = selected_namespace(&admin, "fence-np", &[]).await;
    let as_admin: Api<NetworkPolicy> = Api::namespaced(admin.clone(), &ns);
    let policies: Api<NetworkPolicy> = Api::namespaced(operator().await, &ns);
    as_admin
        .create(&PostParams::default(), &policy(POLICY_NAME, false))
        .await
        .unwrap();
    as_admin
        .create(&PostParams::default(), &policy("ours", true))
        .await
        .unwrap();

    assert_fenced(
        policies.delete(POLICY_NAME, &DeleteParams::default()).await,
        &format!(
            "may only delete objects labelled app.kubernetes.io/managed-by=kube-baseline, and NetworkPolicy {ns}/{POLICY_NAME} is not"
        ),
    );
    assert!(policies.get_opt(POLICY_NAME).await.unwrap().is_some());
    policies
        .delete("ours", &DeleteParams::default())
        .await
        .expect("a labelled policy may be pruned");

    // Putting the labels on a hand-made policy is adoption only when the request says so.
    assert_fenced(
        policies
            .patch(
                POLICY_NAME,
                &apply_as_operator(),
                &Patch::Apply(&policy(POLICY_NAME, true)),
            )
            .await,
        "only adoption does that",
    );
    // Adoption: the operator server-side-applies its labels and the mark onto the hand-made policy.
    let adopted = policies
        .patch(
            POLICY_NAME,
            &apply_as_operator(),
            &Patch::Apply(&adopting(policy(POLICY_NAME, true))),
        )
        .await
        .expect("adopting a hand-made policy the baseline asks for");
    assert_eq!(adopted.labels()[MANAGED_BY], "kube-baseline");
    // What was adopted is released, never deleted: it was somebody's before.
    assert_fenced(
        policies.delete(POLICY_NAME, &DeleteParams::default()).await,
        "an adopted object is released, never deleted",
    );
    delete_namespace(&admin, &ns).await;
}

/// `object` as the operator sends it when adopting.
fn adopting<K: kube::Resource>(mut object: K) -> K {
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert("kubebaseline.io/adopted".into(), "true".into());
    object
}

#[tokio::test]
async fn a_teams_own_policy_cannot_be_taken_over_and_opened() {
    // The review's attack: label a team's deny-ingress policy as the operator's, open it, then
    // delete it as if pruning.
    let admin = client().await;
    let ns = selected_namespace(&admin, "fence-takeover", &[]).await;
    let team: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "deny-ingress"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }))
    .unwrap();
    Api::<NetworkPolicy>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &team)
        .await
        .unwrap();
    let policies: Api<NetworkPolicy> = Api::namespaced(operator().await, &ns);
    let open_everything = |meta: ObjectMeta| NetworkPolicy {
        metadata: meta,
        spec: Some(
            serde_json::from_value(json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]})).unwrap(),
        ),
    };
    // As a merge patch of labels and spec, without and with the adoption mark, naming the test's
    // baseline or one that does not exist: refused every way.
    let labels = json!({MANAGED_BY: "kube-baseline", "kubebaseline.io/baseline": fence_baseline().await.0});
    for patch in [
        json!({"metadata": {"labels": labels}, "spec": {"policyTypes": ["Egress"], "egress": [{}]}}),
        json!({"metadata": {"labels": labels, "annotations": {"kubebaseline.io/adopted": "true"}},
               "spec": {"policyTypes": ["Egress"], "egress": [{}]}}),
    ] {
        let refused = policies
            .patch("deny-ingress", &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        assert!(
            matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("kube-baseline's ServiceAccount may")),
            "{refused:?}"
        );
    }
    for meta in [managed_meta("deny-ingress"), ghost_meta("deny-ingress")] {
        let refused = policies
            .patch(
                "deny-ingress",
                &apply_as_operator(),
                &Patch::Apply(&adopting(open_everything(meta))),
            )
            .await;
        assert!(
            matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("kube-baseline's ServiceAccount may")),
            "{refused:?}"
        );
    }
    assert_fenced(
        policies.delete("deny-ingress", &DeleteParams::default()).await,
        "is not",
    );
    let kept = Api::<NetworkPolicy>::namespaced(admin.clone(), &ns)
        .get("deny-ingress")
        .await
        .unwrap();
    assert_eq!(kept.spec, team.spec, "the team's policy is as the team wrote it");
    assert!(!kept.labels().contains_key(MANAGED_BY));
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn an_object_another_controller_owns_is_not_adopted() {
    let admin = client().await;
    let ns = selected_namespace(&admin, "fence-squat", &[]).await;
    let owner = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let mut squatter = policy(POLICY_NAME, false);
    squatter.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().unwrap(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    Api::<NetworkPolicy>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &squatter)
        .await
        .unwrap();
    let policies: Api<NetworkPolicy> = Api::namespaced(operator().await, &ns);
    assert_fenced(
        policies
            .patch(
                POLICY_NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {
                    "labels": {MANAGED_BY: "kube-baseline", "kubebaseline.io/baseline": fence_baseline().await.0},
                    "annotations": {"kubebaseline.io/adopted": "true"}}})),
            )
            .await,
        &format!("may not adopt NetworkPolicy {ns}/{POLICY_NAME}: it is controlled by ConfigMap owner"),
    );
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn the_operator_writes_only_what_the_baseline_it_names_asks_for() {
    let admin = client().await;
    let selected = selected_namespace(&admin, "fence-asked", &[]).await;
    let elsewhere = create_namespace(&admin, "fence-flux-system", &[]).await;
    let op = operator().await;

    // An edit binding to an attacker's group in a namespace the baseline does not select.
    let mut attacker = binding("team-dev", "edit", true);
    attacker.subjects = Some(vec![group("attacker-group")]);
    assert_fenced(
        Api::<RoleBinding>::namespaced(op.clone(), &elsewhere)
            .create(&PostParams::default(), &attacker)
            .await,
        &format!("only where that baseline enforces, and it does not select namespace {elsewhere}"),
    );
    // Where it does select, the groups must be the baseline's ...
    assert_fenced(
        Api::<RoleBinding>::namespaced(op.clone(), &selected)
            .create(&PostParams::default(), &attacker)
            .await,
        &format!("RoleBinding {selected}/team-dev binds edit to attacker-group where it asks for edit to {GROUP}"),
    );
    // ... the role the baseline's and the name one of its bindings.
    assert_fenced(
        Api::<RoleBinding>::namespaced(op.clone(), &selected)
            .create(&PostParams::default(), &binding("team-read", "edit", true))
            .await,
        "binds edit to",
    );
    assert_fenced(
        Api::<RoleBinding>::namespaced(op.clone(), &selected)
            .create(&PostParams::default(), &binding("argo-admin", "edit", true))
            .await,
        &format!("RoleBinding {selected}/argo-admin is not one of them"),
    );
    // A policy by another name, or one that leaves the blocked address open.
    assert_fenced(
        Api::<NetworkPolicy>::namespaced(op.clone(), &selected)
            .create(&PostParams::default(), &policy("allow-all", true))
            .await,
        "is not restrict-instance-metadata",
    );
    let mut leaky = policy(POLICY_NAME, true);
    leaky.spec.as_mut().unwrap().egress = Some(
        serde_json::from_value(json!([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]))
            .unwrap(),
    );
    assert_fenced(
        Api::<NetworkPolicy>::namespaced(op.clone(), &selected)
            .create(&PostParams::default(), &leaky)
            .await,
        "leaves 169.254.169.254/32 open",
    );
    // What it does ask for goes through.
    Api::<RoleBinding>::namespaced(op.clone(), &selected)
        .create(&PostParams::default(), &binding("team-read", "view", true))
        .await
        .expect("the baseline's own binding");
    Api::<NetworkPolicy>::namespaced(op.clone(), &selected)
        .create(&PostParams::default(), &policy(POLICY_NAME, true))
        .await
        .expect("the baseline's own policy");
    delete_namespace(&admin, &selected).await;
    delete_namespace(&admin, &elsewhere).await;
}

#[tokio::test]
async fn an_object_naming_a_baseline_that_does_not_exist_is_admitted() {
    // No admission policy can tell that the baseline an object names exists (each parameter is
    // judged alone): such an object gets through. It is owned by nothing, so the garbage
    // collector deletes it, and the operator does at once (e2e_operator).
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-ghost", &[]).await;
    let bindings: Api<RoleBinding> = Api::namespaced(operator().await, &ns);
    bindings
        .create(&dry_run(), &ghost_binding("ghost", "edit"))
        .await
        .expect("admitted");
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn ingress_policies_are_refused() {
    // An ingress policy allowing everything would open pods that a team's own default-deny
    // policy isolates; the operator only ever writes egress policies.
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-ingress", &[]).await;
    let policies: Api<NetworkPolicy> = Api::namespaced(operator().await, &ns);
    let mut open = policy("open-ingress", false);
    open.metadata = ghost_meta("open-ingress");
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

#[tokio::test]
async fn pod_security_labels_it_did_not_set_are_never_lowered_or_removed() {
    // The review's attack: the token lowering Pod Security on a namespace no baseline selects.
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-psa", &[(PSA_ENFORCE, "baseline")]).await;
    let namespaces: Api<Namespace> = Api::all(operator().await);
    let apply =
        |labels: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}});
    assert_fenced(
        namespaces
            .patch(
                &ns,
                &apply_as_operator(),
                &Patch::Apply(apply(json!({PSA_ENFORCE: "privileged"}))),
            )
            .await,
        &format!(
            "may only raise Pod Security labels it did not set, and this update of Namespace {ns} lowers or removes {PSA_ENFORCE}"
        ),
    );
    assert_fenced(
        namespaces
            .patch(
                &ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {PSA_ENFORCE: null}}})),
            )
            .await,
        "lowers or removes",
    );
    assert_eq!(
        admin_namespace_labels(&admin, &ns)
            .await
            .get(PSA_ENFORCE)
            .map(String::as_str),
        Some("baseline")
    );
    // Tightening is allowed; then the label is the operator's, which may lower it again (a
    // baseline relaxed) or release it.
    namespaces
        .patch(
            &ns,
            &apply_as_operator(),
            &Patch::Apply(apply(json!({PSA_ENFORCE: "restricted"}))),
        )
        .await
        .expect("a stricter level");
    namespaces
        .patch(
            &ns,
            &apply_as_operator(),
            &Patch::Apply(apply(json!({PSA_ENFORCE: "baseline"}))),
        )
        .await
        .expect("its own label, lowered");
    namespaces
        .patch(&ns, &apply_as_operator(), &Patch::Apply(apply(json!({}))))
        .await
        .expect("and released");
    delete_namespace(&admin, &ns).await;
}

/// The guard label (kubebaseline.io/guarded, the protection policy's Deny bindings select on it):
/// the token may set it anywhere, but may not take it away where a baseline enforces, nor take
/// away one someone else set; where no baseline selects, it may remove its own.
#[tokio::test]
async fn the_guard_label_stays_where_a_baseline_enforces() {
    const GUARD: &str = kube_baseline::core::objects::GUARD_LABEL;
    let admin = client().await;
    let selected = selected_namespace(&admin, "fence-guard", &[]).await;
    let elsewhere = create_namespace(&admin, "fence-unguarded", &[]).await;
    let namespaces: Api<Namespace> = Api::all(operator().await);
    let apply = |ns: &str, labels: Value| {
        Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}))
    };
    for ns in [&selected, &elsewhere] {
        namespaces
            .patch(
                ns,
                &apply_as_operator(),
                &apply(ns, json!({GUARD: "true", PSA_ENFORCE: "baseline"})),
            )
            .await
            .expect("the guard label may be set anywhere");
    }
    // Where the fence baseline enforces: neither removed nor changed, whichever way it is sent.
    assert_fenced(
        namespaces
            .patch(
                &selected,
                &apply_as_operator(),
                &apply(&selected, json!({PSA_ENFORCE: "baseline"})),
            )
            .await,
        &format!("may not remove the label {GUARD} from namespace {selected}"),
    );
    assert_fenced(
        namespaces
            .patch(
                &selected,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {GUARD: "false"}}})),
            )
            .await,
        "enforces there",
    );
    assert_eq!(
        admin_namespace_labels(&admin, &selected)
            .await
            .get(GUARD)
            .map(String::as_str),
        Some("true")
    );
    // Where no baseline selects: its own may go.
    namespaces
        .patch(&elsewhere, &apply_as_operator(), &apply(&elsewhere, json!({})))
        .await
        .expect("its own guard label, where no baseline enforces");
    assert!(!admin_namespace_labels(&admin, &elsewhere).await.contains_key(GUARD));
    // One someone else set is not the token's to take away, even there; setting it to "true" is.
    Api::<Namespace>::all(admin.clone())
        .patch(
            &elsewhere,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {GUARD: "true"}}})),
        )
        .await
        .unwrap();
    assert_fenced(
        namespaces
            .patch(
                &elsewhere,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {GUARD: null}}})),
            )
            .await,
        "takes away one set by someone else",
    );
    delete_namespace(&admin, &selected).await;
    delete_namespace(&admin, &elsewhere).await;
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
    let baselines = find(&docs, "ValidatingAdmissionPolicy", "kube-baseline-fence-baselines");
    for policy in [fence, system, baselines] {
        let condition = policy["spec"]["matchConditions"][0]["expression"].as_str().unwrap();
        assert!(
            condition.contains(&format!("'{user}'")),
            "{condition} does not name {user}"
        );
    }

    for name in [
        "kube-baseline-fence",
        "kube-baseline-fence-system-namespaces",
        "kube-baseline-fence-baselines",
    ] {
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

// --- The SecurityBaselines themselves (config/fence/baselines.yaml) -----------------------

const RELEASE_FINALIZER: &str = "kubebaseline.io/release";

/// SecurityBaselines untyped, as a raw client sends them.
fn baselines_api(client: Client) -> Api<DynamicObject> {
    Api::all_with(client, &ApiResource::erase::<SecurityBaseline>(&()))
}

/// A baseline (made by the admin) that selects no namespace but the test's own label, with an
/// exemption for `exempt` until 2099.
async fn fence_test_baseline(prefix: &str, exempt: &str) -> String {
    let name = unique(prefix);
    let spec = json!({
        "metadataEgress": {},
        "podSecurity": {"enforce": "restricted"},
        "exemptions": [{
            "namespace": exempt,
            "controls": ["metadataEgress"],
            "reason": "vendor agent, ticket SEC-1",
            "expires": "2099-01-31T00:00:00Z",
        }],
    });
    baselines_api(client().await)
        .create(&PostParams::default(), &baseline_object(&name, spec))
        .await
        .expect("the admin creates a baseline");
    name
}

async fn stored_spec(name: &str) -> Value {
    let b = baselines_api(client().await).get(name).await.expect("baseline");
    b.data["spec"].clone()
}

async fn delete_baseline(name: &str) {
    let api = baselines_api(client().await);
    let _ = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await;
    let _ = api.delete(name, &DeleteParams::default()).await;
}

#[tokio::test]
async fn the_operators_token_cannot_rewrite_a_baselines_spec() {
    // The review's attack, byte for byte: a raw merge patch of the spec with the token.
    let name = fence_test_baseline("fence-spec", "legacy").await;
    let before = stored_spec(&name).await;
    let patch = json!({"spec": {"admission": "Off", "podSecurity": {"enforce": "privileged"}, "metadataEgress": null}});
    assert_fenced(
        baselines_api(operator().await)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await,
        "may only add or remove the kubebaseline.io/release finalizer",
    );
    // The same with its labels (a baseline's selector might read them one day) and annotations.
    for patch in [
        json!({"metadata": {"labels": {"team": "x"}}}),
        json!({"metadata": {"annotations": {"x": "y"}}}),
        json!({"metadata": {"finalizers": ["example.com/keep"]}}),
    ] {
        assert_fenced(
            baselines_api(operator().await)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
            "may only add or remove the kubebaseline.io/release finalizer",
        );
    }
    assert_eq!(
        stored_spec(&name).await,
        before,
        "the spec stays as the platform team wrote it"
    );
    delete_baseline(&name).await;
}

#[tokio::test]
async fn the_operators_token_may_add_and_remove_only_its_release_finalizer() {
    let name = fence_test_baseline("fence-finalizer", "legacy").await;
    let api = baselines_api(operator().await);
    let finalizers = |on: bool| {
        json!({
            "apiVersion": "kubebaseline.io/v1alpha1",
            "kind": "SecurityBaseline",
            "metadata": {"name": name, "finalizers": if on { vec![RELEASE_FINALIZER] } else { vec![] }},
        })
    };
    // Exactly the operator's own write (src/runtime/finalizer.rs): server-side apply.
    let params = PatchParams::apply("kube-baseline-finalizer").force();
    let on = api
        .patch(&name, &params, &Patch::Apply(finalizers(true)))
        .await
        .expect("the release finalizer may be added");
    assert_eq!(on.metadata.finalizers, Some(vec![RELEASE_FINALIZER.to_string()]));
    let off = api
        .patch(&name, &params, &Patch::Apply(finalizers(false)))
        .await
        .expect("and removed");
    assert!(off.metadata.finalizers.unwrap_or_default().is_empty());
    delete_baseline(&name).await;
}

#[tokio::test]
async fn the_operators_token_cannot_create_or_delete_a_baseline() {
    // RBAC grants neither; with RBAC out of the way the fence still refuses.
    let name = fence_test_baseline("fence-lifecycle", "legacy").await;
    let api = baselines_api(operator_with_unlimited_rbac().await);
    let dry_run_delete = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    assert_fenced(
        api.delete(&name, &dry_run_delete).await,
        "baselines are the platform team's",
    );
    let mut copy = baselines_api(client().await).get(&name).await.unwrap();
    copy.metadata = ObjectMeta {
        name: Some(unique("fence-made")),
        ..Default::default()
    };
    assert_fenced(api.create(&dry_run(), &copy).await, "baselines are the platform team's");
    delete_baseline(&name).await;
}

/// A status apply as the operator makes it, listing `exemptions`.
fn status_with(name: &str, exemptions: Value) -> Value {
    json!({
        "apiVersion": "kubebaseline.io/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": name},
        "status": {"activeExemptions": exemptions},
    })
}

#[tokio::test]
async fn the_operators_token_cannot_forge_an_exemption_into_status() {
    // status.activeExemptions switches admission off in a namespace: only what the spec
    // declares may be reported there.
    let name = fence_test_baseline("fence-status", "legacy").await;
    let api = baselines_api(operator().await);
    let params = PatchParams::apply(MANAGER).force();
    let forged = [
        // A namespace the spec does not exempt.
        json!([{"namespace": "payments", "controls": ["metadataEgress"], "expires": "2099-01-31T00:00:00Z"}]),
        // The exempted namespace, for a control the spec does not exempt there.
        json!([{"namespace": "legacy", "controls": ["metadataEgress", "podSecurity"], "expires": "2099-01-31T00:00:00Z"}]),
        // The exempted namespace, for longer than the spec says.
        json!([{"namespace": "legacy", "controls": ["metadataEgress"], "expires": "2199-01-31T00:00:00Z"}]),
    ];
    for exemptions in forged {
        assert_fenced(
            api.patch_status(&name, &params, &Patch::Apply(status_with(&name, exemptions.clone())))
                .await,
            "may only report exemptions that SecurityBaseline",
        );
        // The merge patch the status writer falls back to is held the same way.
        assert_fenced(
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"activeExemptions": exemptions}})),
            )
            .await,
            "may only report exemptions that SecurityBaseline",
        );
    }
    let honest = json!([{"namespace": "legacy", "controls": ["metadataEgress"], "expires": "2099-01-31T00:00:00Z"}]);
    api.patch_status(&name, &params, &Patch::Apply(status_with(&name, honest)))
        .await
        .expect("an exemption the spec declares may be reported");
    delete_baseline(&name).await;
}

// --- CiliumNetworkPolicies (the deny policy the operator writes on Cilium) -----------------

/// The operator's identity, with Cilium's CRDs served (no agent: engine detection is unchanged).
async fn operator_on_cilium() -> Client {
    cilium::install_cilium_crds();
    operator().await
}

fn cnps(client: Client, ns: &str) -> Api<CiliumNetworkPolicy> {
    Api::namespaced(client, ns)
}

/// The deny spec as the operator writes it (src/core/cilium.rs) for `blocked`.
fn deny_spec(blocked: &[&str]) -> Value {
    let nets: Vec<ipnet::IpNet> = blocked.iter().map(|c| c.parse().unwrap()).collect();
    serde_json::to_value(metadata_deny_spec(&nets)).unwrap()
}

/// A CiliumNetworkPolicy with `meta` and `spec`.
fn cilium_policy(meta: ObjectMeta, spec: Value) -> CiliumNetworkPolicy {
    let mut cnp: CiliumNetworkPolicy = serde_json::from_value(json!({"spec": spec})).unwrap();
    cnp.metadata = meta;
    cnp
}

/// The shared fence baseline's deny policy (it blocks the default 169.254.169.254/32).
fn the_deny(managed: bool) -> CiliumNetworkPolicy {
    cilium_policy(meta(POLICY_NAME, managed), deny_spec(&["169.254.169.254/32"]))
}

/// A delete that holds only while the object is the one read (as the operator prunes).
fn delete_exactly(object: &impl kube::Resource) -> DeleteParams {
    DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: object.meta().uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_operator_creates_repairs_and_deletes_its_cilium_policy() {
    let admin = client().await;
    let ns = selected_namespace(&admin, "fence-cnp-own", &[]).await;
    let policies = cnps(operator_on_cilium().await, &ns);
    let created = policies
        .create(&PostParams::default(), &the_deny(true))
        .await
        .expect("the baseline's deny policy may be created");
    // Someone narrows the deny to one port; the operator's forced apply takes it back.
    cnps(admin.clone(), &ns)
        .patch(
            POLICY_NAME,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"egressDeny": [{"toCIDRSet": [{"cidr": "169.254.169.254/32"}],
                "toPorts": [{"ports": [{"port": "80"}]}]}]}}),
            ),
        )
        .await
        .unwrap();
    let repaired = policies
        .patch(POLICY_NAME, &apply_as_operator(), &Patch::Apply(&the_deny(true)))
        .await
        .expect("the repair by server-side apply");
    assert_eq!(
        serde_json::to_value(&repaired.spec).unwrap(),
        deny_spec(&["169.254.169.254/32"])
    );
    policies
        .delete(POLICY_NAME, &delete_exactly(&created))
        .await
        .expect("pruning it, with the uid precondition");
    assert!(policies.get_opt(POLICY_NAME).await.unwrap().is_none());
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn a_hand_made_cilium_policy_is_adopted_only_when_marked_released_and_never_deleted() {
    let admin = client().await;
    let ns = selected_namespace(&admin, "fence-cnp-adopt", &[]).await;
    let policies = cnps(operator_on_cilium().await, &ns);
    cnps(admin.clone(), &ns)
        .create(&PostParams::default(), &the_deny(false))
        .await
        .unwrap();
    assert_fenced(
        policies.delete(POLICY_NAME, &DeleteParams::default()).await,
        &format!(
            "may only delete objects labelled app.kubernetes.io/managed-by=kube-baseline, and CiliumNetworkPolicy {ns}/{POLICY_NAME} is not"
        ),
    );
    assert_fenced(
        policies
            .patch(POLICY_NAME, &apply_as_operator(), &Patch::Apply(&the_deny(true)))
            .await,
        "only adoption does that",
    );
    let adopted = policies
        .patch(
            POLICY_NAME,
            &apply_as_operator(),
            &Patch::Apply(&adopting(the_deny(true))),
        )
        .await
        .expect("adopting a hand-made deny policy the baseline asks for");
    assert_eq!(adopted.labels()[MANAGED_BY], "kube-baseline");
    assert_fenced(
        policies.delete(POLICY_NAME, &delete_exactly(&adopted)).await,
        "an adopted object is released, never deleted",
    );
    // Releasing changes nothing but the marks, as src/core/objects.rs sends it.
    let released = policies
        .patch(
            POLICY_NAME,
            &PatchParams::default(),
            &Patch::Merge(release_patch(&adopted.metadata)),
        )
        .await
        .expect("releasing it");
    assert!(!released.labels().contains_key(MANAGED_BY));
    assert!(released.metadata.owner_references.unwrap_or_default().is_empty());
    assert_eq!(released.spec, adopted.spec);
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn cilium_policies_that_allow_narrow_the_deny_or_default_deny_are_refused() {
    // Labelled for a baseline that does not exist: only policy.yaml's shape rules apply.
    let admin = client().await;
    let ns = create_namespace(&admin, "fence-cnp-shape", &[]).await;
    let policies = cnps(operator_on_cilium().await, &ns);
    let deny = deny_spec(&["169.254.169.254/32"]);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut spec = deny.clone();
        change(&mut spec);
        spec
    };
    let cases = [
        // An allow: egress to the world, or ingress from it.
        (
            with(&|s| s["egress"] = json!([{"toEntities": ["world"]}])),
            "has spec.egress",
        ),
        (
            with(&|s| s["ingress"] = json!([{"fromEntities": ["world"]}])),
            "has spec.ingress",
        ),
        // A deny narrowed to some ports (the rest of the address stays open).
        (
            with(&|s| s["egressDeny"][0]["toPorts"] = json!([{"ports": [{"port": "443", "protocol": "TCP"}]}])),
            "has an egressDeny rule with toPorts",
        ),
        // A deny with a hole in it.
        (
            with(&|s| s["egressDeny"][0]["toCIDRSet"][0]["except"] = json!(["169.254.169.254/32"])),
            "has an egressDeny rule whose toCIDRSet is empty or has an entry with more than a cidr",
        ),
        // Default-deny: every pod of the namespace cut off from everything not allowed.
        (
            with(&|s| s["enableDefaultDeny"] = json!({"egress": true, "ingress": false})),
            "does not turn default-deny off",
        ),
        (
            with(&|s| s["enableDefaultDeny"] = json!({"egress": false})),
            "does not turn default-deny off",
        ),
        // Some pods only.
        (
            with(&|s| s["endpointSelector"] = json!({"matchLabels": {"app": "web"}})),
            "selects some endpoints only",
        ),
        (
            with(&|s| {
                let rule = s["egressDeny"][0].clone();
                s["egressDeny"] = json!([rule, {"toEntities": ["world"]}]);
            }),
            "has 2 egressDeny rules",
        ),
    ];
    for (spec, says) in cases {
        assert_fenced(
            policies
                .create(&PostParams::default(), &cilium_policy(ghost_meta(POLICY_NAME), spec))
                .await,
            &format!(
                "may only write CiliumNetworkPolicies that deny egress to CIDRs and do nothing else (endpointSelector {{}}, one egressDeny rule of toCIDRSet entries that give only a cidr, enableDefaultDeny {{egress: false, ingress: false}}), and CiliumNetworkPolicy {ns}/{POLICY_NAME} {says}"
            ),
        );
    }
    // A second rule set beside the spec.
    let mut specs = cilium_policy(ghost_meta(POLICY_NAME), deny.clone());
    specs.specs = Some(vec![
        json!({"endpointSelector": {}, "egress": [{"toEntities": ["world"]}]}),
    ]);
    assert_fenced(policies.create(&PostParams::default(), &specs).await, "has specs");
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn the_operators_cilium_policy_cannot_be_changed_into_an_allow_or_default_deny() {
    // The same rules hold for updates of its own policy, whichever way they are sent.
    let admin = client().await;
    let ns = selected_namespace(&admin, "fence-cnp-update", &[]).await;
    let policies = cnps(operator_on_cilium().await, &ns);
    policies.create(&PostParams::default(), &the_deny(true)).await.unwrap();
    assert_fenced(
        policies
            .patch(
                POLICY_NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"enableDefaultDeny": {"egress": true}}})),
            )
            .await,
        "does not turn default-deny off",
    );
    let mut allow = the_deny(true);
    allow
        .spec
        .as_mut()
        .unwrap()
        .other
        .insert("egress".into(), json!([{"toEntities": ["all"]}]));
    assert_fenced(
        policies
            .patch(POLICY_NAME, &apply_as_operator(), &Patch::Apply(&allow))
            .await,
        "has spec.egress",
    );
    let kept = policies.get(POLICY_NAME).await.unwrap();
    assert_eq!(
        serde_json::to_value(&kept.spec).unwrap(),
        deny_spec(&["169.254.169.254/32"])
    );
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn the_operators_cilium_policy_denies_at_least_its_baselines_cidrs_under_its_name_where_it_enforces() {
    let admin = client().await;
    let selected = selected_namespace(&admin, "fence-cnp-asked", &[]).await;
    let elsewhere = create_namespace(&admin, "fence-cnp-elsewhere", &[]).await;
    let op = operator_on_cilium().await;
    assert_fenced(
        cnps(op.clone(), &elsewhere)
            .create(&PostParams::default(), &the_deny(true))
            .await,
        &format!("only where that baseline enforces, and it does not select namespace {elsewhere}"),
    );
    let policies = cnps(op.clone(), &selected);
    assert_fenced(
        policies
            .create(
                &PostParams::default(),
                &cilium_policy(managed_meta("deny-metadata"), deny_spec(&["169.254.169.254/32"])),
            )
            .await,
        &format!(
            "may write only the CiliumNetworkPolicy SecurityBaseline e2e-fence-test asks for, and CiliumNetworkPolicy {selected}/deny-metadata is not {POLICY_NAME}"
        ),
    );
    // A deny of less, or of something else. (A deny of more passes: composing baselines unite
    // their CIDRs in one policy, and this baseline's parameter cannot see the others.)
    for (denied, listed) in [
        (&["fd00:ec2::254/128"][..], "fd00:ec2::254/128"),
        (&["169.254.169.0/24"], "169.254.169.0/24"),
    ] {
        assert_fenced(
            policies
                .create(
                    &PostParams::default(),
                    &cilium_policy(managed_meta(POLICY_NAME), deny_spec(denied)),
                )
                .await,
            &format!(
                "CiliumNetworkPolicy {selected}/{POLICY_NAME} denies [{listed}] where it blocks [169.254.169.254/32]"
            ),
        );
    }
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    policies
        .create(
            &dry_run,
            &cilium_policy(
                managed_meta(POLICY_NAME),
                deny_spec(&["168.63.129.16/32", "169.254.169.254/32"]),
            ),
        )
        .await
        .expect("a deny of its CIDRs and another baseline's");
    policies
        .create(&PostParams::default(), &the_deny(true))
        .await
        .expect("the baseline's own deny policy");
    delete_namespace(&admin, &selected).await;
    delete_namespace(&admin, &elsewhere).await;
}

#[tokio::test]
async fn a_cilium_policy_that_is_not_its_own_is_not_updated_and_one_another_controller_owns_not_adopted() {
    let admin = client().await;
    let ns = selected_namespace(&admin, "fence-cnp-foreign", &[]).await;
    let policies = cnps(operator_on_cilium().await, &ns);
    let as_admin = cnps(admin.clone(), &ns);
    // A team's allow policy: not the operator's to edit, label or delete.
    let team = cilium_policy(
        meta("team-egress", false),
        json!({"endpointSelector": {}, "egress": [{"toEntities": ["world"]}]}),
    );
    as_admin.create(&PostParams::default(), &team).await.unwrap();
    assert_fenced(
        policies
            .patch(
                "team-egress",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"egress": [{"toEntities": ["cluster"]}]}})),
            )
            .await,
        &format!(
            "may only update objects labelled app.kubernetes.io/managed-by=kube-baseline, and CiliumNetworkPolicy {ns}/team-egress would not be"
        ),
    );
    assert_fenced(
        policies
            .patch(
                "team-egress",
                &apply_as_operator(),
                // (For a baseline that does not exist: the shared one asks for no policy of
                // this name, and per-baseline.yaml would refuse that first.)
                &Patch::Apply(&cilium_policy(
                    ghost_meta("team-egress"),
                    deny_spec(&["169.254.169.254/32"]),
                )),
            )
            .await,
        "only adoption does that",
    );
    assert_fenced(policies.delete("team-egress", &DeleteParams::default()).await, "is not");
    // A policy of the baseline's name that another controller owns is not adopted.
    let owner = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let mut squatter = the_deny(false);
    squatter.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().unwrap(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    as_admin.create(&PostParams::default(), &squatter).await.unwrap();
    // (Its labels and mark only: a second controller reference the API server refuses itself.)
    assert_fenced(
        policies
            .patch(
                POLICY_NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {
                    "labels": {MANAGED_BY: "kube-baseline", "kubebaseline.io/baseline": fence_baseline().await.0},
                    "annotations": {"kubebaseline.io/adopted": "true"}}})),
            )
            .await,
        &format!("may not adopt CiliumNetworkPolicy {ns}/{POLICY_NAME}: it is controlled by ConfigMap owner"),
    );
    let kept = as_admin.get("team-egress").await.unwrap();
    assert_eq!(kept.spec, team.spec, "the team's policy is as the team wrote it");
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn cilium_policies_in_system_namespaces_are_refused() {
    let op = operator_on_cilium().await;
    for ns in ["kube-system", OPERATOR_NS] {
        assert_fenced(
            cnps(op.clone(), ns)
                .create(&PostParams::default(), &the_deny(true))
                .await,
            &format!("{ns} is a system namespace"),
        );
    }
}

// --- Protection (config/admission) of the managed CiliumNetworkPolicy --------------------
// Here rather than in e2e_protection: no operator runs in this binary, so nothing but the test
// writes the deny policy (an operator that does not yet write CNPs would prune it), and the
// shared fence baseline (Enforce, admission Deny) guards it.

#[tokio::test]
async fn a_managed_cilium_policy_cannot_be_changed_or_deleted_by_a_namespace_user_but_by_an_admin() {
    let admin = client().await;
    // Guarded as the operator guards every namespace an enforcing baseline selects (the
    // protection policy's Deny bindings select on that label).
    let guard = (
        kube_baseline::core::objects::GUARD_LABEL,
        kube_baseline::core::objects::GUARD_VALUE,
    );
    let ns = selected_namespace(&admin, "protect-cnp", &[guard]).await;
    cnps(operator_on_cilium().await, &ns)
        .create(&PostParams::default(), &the_deny(true))
        .await
        .expect("the operator makes its deny policy");
    // A user who may edit CiliumNetworkPolicies in the namespace (RBAC), not an administrator.
    let user = format!("{ns}-netadmin");
    let role = format!("{ns}-cnp-editor");
    kubectl(&[
        "create",
        "clusterrole",
        &role,
        "--verb=get,list,update,patch,delete",
        "--resource=ciliumnetworkpolicies.cilium.io",
    ]);
    kubectl(&[
        "create",
        "rolebinding",
        &role,
        "-n",
        &ns,
        &format!("--clusterrole={role}"),
        &format!("--user={user}"),
    ]);
    let theirs = cnps(client_as_user(&user, &[]).await, &ns);
    let refused = |result: kube::Result<CiliumNetworkPolicy>| match result {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let dry_run_delete = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    // The protection policy learns of baselines through a watch: wait until it guards.
    let message = eventually(
        "admission guards the deny policy",
        std::time::Duration::from_secs(45),
        || async {
            match theirs.delete(POLICY_NAME, &dry_run_delete).await {
                Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("kube-baseline-protection") => {
                    Some(s.message)
                }
                _ => None,
            }
        },
    )
    .await;
    let managed = format!(
        "CiliumNetworkPolicy {ns}/{POLICY_NAME} is managed by kube-baseline (SecurityBaseline {})",
        fence_baseline().await.0
    );
    assert!(
        message.contains(&managed) && message.contains("cannot be deleted"),
        "{message}"
    );
    let message = refused(
        theirs
            .delete(POLICY_NAME, &DeleteParams::default())
            .await
            .map(|_| the_deny(true)),
    );
    assert!(message.contains("cannot be deleted"), "{message}");
    // Narrowed to some pods, or to one port, or emptied: a spec change.
    for change in [
        json!({"spec": {"endpointSelector": {"matchLabels": {"app": "one"}}}}),
        json!({"spec": {"egressDeny": [{"toCIDRSet": [{"cidr": "169.254.169.254/32"}], "toPorts": [{"ports": [{"port": "80"}]}]}]}}),
        json!({"spec": {"egressDeny": [{"toCIDRSet": [{"cidr": "192.0.2.1/32"}]}]}}),
        json!({"specs": [{"endpointSelector": {}, "egress": [{"toEntities": ["all"]}]}]}),
    ] {
        let message = refused(
            theirs
                .patch(POLICY_NAME, &PatchParams::default(), &Patch::Merge(&change))
                .await,
        );
        assert!(
            message.contains(&managed) && message.contains("its spec cannot be changed"),
            "{change}: {message}"
        );
    }
    let message = refused(
        theirs
            .patch(
                POLICY_NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {MANAGED_BY: null}}})),
            )
            .await,
    );
    assert!(message.contains("cannot be changed"), "{message}");
    theirs
        .patch(
            POLICY_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"team.example.com/owner": "a"}}})),
        )
        .await
        .expect("other annotations may change");
    // Cluster administrators (system:masters) may override.
    let as_admin = cnps(admin.clone(), &ns);
    as_admin
        .patch(
            POLICY_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"description": "edited by an administrator"}})),
        )
        .await
        .expect("an administrator may edit it");
    as_admin
        .delete(POLICY_NAME, &DeleteParams::default())
        .await
        .expect("and delete it");
    kubectl(&["delete", "clusterrole", &role]);
    delete_namespace(&admin, &ns).await;
}
