//! Installing on a cluster (`config/`): kustomize applies, the RBAC is least privilege and
//! sufficient, and the manager's pod passes Pod Security Admission at `restricted`. The operator
//! converges a namespace under the ServiceAccount, RBAC and fence of `config/default`, and under
//! those the Helm chart renders (`charts/kube-baseline`).

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/tools.rs"]
mod tools;

use harness::scenario::*;
use harness::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};

const OPERATOR_NS: &str = "kube-baseline-system";

fn manager_deployment() -> Deployment {
    let yaml = std::fs::read_to_string(repo_root().join("config/manager/deployment.yaml")).unwrap();
    serde_saphyr::from_str(&yaml).expect("deployment.yaml parses")
}

#[tokio::test]
async fn kustomize_install_creates_every_object() {
    install();
    let client = client().await;
    Api::<ServiceAccount>::namespaced(client.clone(), OPERATOR_NS)
        .get("kube-baseline")
        .await
        .unwrap();
    let deployment = Api::<Deployment>::namespaced(client.clone(), OPERATOR_NS)
        .get("kube-baseline")
        .await
        .unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));
    for role in ["kube-baseline-manager", "kube-baseline-bind-allowlist"] {
        Api::<ClusterRole>::all(client.clone()).get(role).await.unwrap();
    }
}

#[tokio::test]
async fn roles_have_no_wildcards_no_secrets_and_bind_only_the_allow_list() {
    install();
    let client = client().await;
    let mut rules = Vec::new();
    for name in ["kube-baseline-manager", "kube-baseline-bind-allowlist"] {
        let role = Api::<ClusterRole>::all(client.clone()).get(name).await.unwrap();
        rules.extend(
            role.rules
                .unwrap_or_default()
                .into_iter()
                .map(|r| (name.to_string(), r)),
        );
    }
    for (ns, name) in [
        (OPERATOR_NS, "kube-baseline-leader-election"),
        ("default", "kube-baseline-events"),
    ] {
        let role = Api::<Role>::namespaced(client.clone(), ns).get(name).await.unwrap();
        rules.extend(
            role.rules
                .unwrap_or_default()
                .into_iter()
                .map(|r| (name.to_string(), r)),
        );
    }
    assert!(
        rules.len() >= 7,
        "every rule of config/rbac is checked: {}",
        rules.len()
    );
    for (name, rule) in rules {
        let all: Vec<&String> = rule
            .verbs
            .iter()
            .chain(rule.resources.iter().flatten())
            .chain(rule.api_groups.iter().flatten())
            .collect();
        assert!(!all.iter().any(|s| s.contains('*')), "{name} has a wildcard: {rule:?}");
        assert!(
            !rule.resources.iter().flatten().any(|r| r == "secrets"),
            "{name} grants secrets"
        );
        if rule.verbs.iter().any(|v| v == "bind" || v == "escalate") {
            assert_eq!(
                rule.resource_names,
                Some(vec!["view".into(), "edit".into()]),
                "{name}: {rule:?}"
            );
        }
    }
}

#[tokio::test]
async fn operator_identity_may_grant_allowed_roles_but_not_cluster_admin() {
    install();
    let admin = client().await;
    let ns = create_namespace(&admin, "install-bind", &[]).await;
    let as_operator = client_as_service_account(OPERATOR_NS, "kube-baseline").await;
    let bindings: Api<RoleBinding> = Api::namespaced(as_operator, &ns);
    // Labelled and owned like the operator's own bindings: the fence (config/fence) refuses
    // others. The baseline named does not exist, so the fence's per-baseline rules stay out of
    // this test of RBAC; the requests are dry runs (RBAC's escalation check runs all the same).
    let binding = |name: &str, role: &str| RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(&[
                ("app.kubernetes.io/managed-by", "kube-baseline"),
                ("kubebaseline.io/baseline", "install-test"),
            ])),
            owner_references: Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "kubebaseline.io/v1alpha1".into(),
                kind: "SecurityBaseline".into(),
                name: "install-test".into(),
                uid: "00000000-0000-0000-0000-000000000000".into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: "3f2504e0-4f89-11d3-9a0c-0305e82c3301".into(),
            namespace: None,
        }]),
    };
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    bindings
        .create(&dry_run, &binding("team-edit", "edit"))
        .await
        .expect("edit is on the allow-list");
    let err = bindings
        .create(&dry_run, &binding("team-root", "cluster-admin"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "cluster-admin must be refused: {err:?}"
    );
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn manager_pod_template_is_admitted_at_pod_security_restricted() {
    let admin = client().await;
    let ns = restricted_namespace_with_account(&admin, "install-psa", "kube-baseline").await;
    let template = manager_deployment().spec.unwrap().template;
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("manager".into()),
            labels: template.metadata.and_then(|m| m.labels),
            ..Default::default()
        },
        spec: template.spec.clone(),
        ..Default::default()
    };
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    pods.create(&dry_run, &pod)
        .await
        .expect("the manager pod passes restricted");

    // The same pod without its hardening is refused: the check is real.
    let mut weak = pod.clone();
    weak.spec.as_mut().unwrap().containers[0].security_context = None;
    weak.spec.as_mut().unwrap().security_context = None;
    let err = pods.create(&dry_run, &weak).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403 && s.message.contains("restricted")),
        "{err:?}"
    );
    delete_namespace(&admin, &ns).await;
}

/// Every operator reconciles the whole cluster: one at a time, so the one under test is the one
/// that did the work.
static ONE_OPERATOR_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the operator with `kubeconfig`, electing itself leader on a Lease in `lease_namespace`
/// (the Role for it is part of the RBAC under test), and checks that it converges a new
/// namespace, repairs a deleted policy and reports the baseline Ready.
async fn operator_converges_a_namespace(kubeconfig: &std::path::Path, name: &str, lease_namespace: &str) {
    let lease = unique("lease");
    let flags = [
        "--leader-elect",
        "--lease-namespace",
        lease_namespace,
        "--lease-name",
        &lease,
    ];
    let operator = Operator::start(name, kubeconfig, &flags);
    eventually("operator leads", WAIT, || async {
        (operator.try_metric("kube_baseline_leader").await? == 1.0).then_some(())
    })
    .await;
    eventually("operator /readyz", WAIT, || async {
        (operator.http_get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let mut s = Scenario::without_shared_operator(name).await;
    let ns = s.namespace("team").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    s.wait_all_objects(&ns).await;
    s.wait_condition(&baseline, "Ready", "True").await;
    s.policies(&ns).delete(POLICY, &Default::default()).await.unwrap();
    eventually("the deleted policy is recreated", WAIT, || async {
        s.policy(&ns).await.filter(|p| p.metadata.deletion_timestamp.is_none())
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn operator_converges_a_namespace_under_config_default() {
    let _turn = ONE_OPERATOR_AT_A_TIME.lock().await;
    install();
    let kubeconfig = operator_kubeconfig("operator-install-kustomize.kubeconfig").await;
    operator_converges_a_namespace(&kubeconfig, "install-kustomize", OPERATOR_NS).await;
}

#[tokio::test]
async fn operator_converges_a_namespace_under_the_helm_charts_rbac_and_fence() {
    let _turn = ONE_OPERATOR_AT_A_TIME.lock().await;
    install(); // the CRD and the shared installation every other test expects
    // A second, independent copy of the chart: its own namespace, ServiceAccount, ClusterRoles
    // and fence, all named after the release. Its protection policy stays off: a second copy
    // would exempt only this copy's ServiceAccount and refuse the shared installation's.
    let release = unique("e2e-helm");
    let yaml = tools::helm_template_yaml(
        &release,
        &[
            "--set",
            &format!("fullnameOverride={release},namespace.create=true,admission.enabled=false"),
        ],
    );
    // Without the CRD: deleting this copy afterwards must not delete every baseline.
    let docs: Vec<serde_json::Value> = tools::documents(&yaml)
        .into_iter()
        .filter(|d| d["kind"] != "CustomResourceDefinition")
        .collect();
    assert!(tools::find(&docs, "ValidatingAdmissionPolicy", &format!("{release}-fence")).is_some());
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string();
    let admin_kubeconfig = kubeconfig_path();
    let kubectl_args = |verb: &[&str]| {
        let mut args = vec!["--kubeconfig", admin_kubeconfig.to_str().unwrap()];
        args.extend_from_slice(verb);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let apply = kubectl_args(&["apply", "--server-side", "--field-manager", FIELD_MANAGER, "-f", "-"]);
    let apply: Vec<&str> = apply.iter().map(String::as_str).collect();
    tools::run_ok(&kubectl_path(), &apply, Some(&list));

    let admin = client().await;
    let token = eventually("the chart's ServiceAccount", WAIT, || async {
        Api::<ServiceAccount>::namespaced(admin.clone(), &release)
            .get_opt(&release)
            .await
            .ok()
            .flatten()
    })
    .await;
    let token = service_account_token(&admin, &release, &token.metadata.name.unwrap()).await;
    let kubeconfig = token_kubeconfig(&token, &format!("{release}.kubeconfig"));
    operator_converges_a_namespace(&kubeconfig, &release, &release).await;

    let delete = kubectl_args(&["delete", "--ignore-not-found", "--wait=false", "-f", "-"]);
    let delete: Vec<&str> = delete.iter().map(String::as_str).collect();
    tools::run_ok(&kubectl_path(), &delete, Some(&list));
}
