//! Installing on a cluster (`config/`): kustomize applies, the RBAC is least privilege and
//! sufficient, and the manager's pod passes Pod Security Admission at `restricted`.

#[path = "../harness/mod.rs"]
mod harness;

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
    // Labelled like the operator's own bindings: the fence (config/fence) refuses others.
    let binding = |name: &str, role: &str| RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(&[("app.kubernetes.io/managed-by", "kube-baseline")])),
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
    bindings
        .create(&PostParams::default(), &binding("team-edit", "edit"))
        .await
        .expect("edit is on the allow-list");
    let err = bindings
        .create(&PostParams::default(), &binding("team-root", "cluster-admin"))
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
    let ns = create_namespace(
        &admin,
        "install-psa",
        &[
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ],
    )
    .await;
    // The ServiceAccount admission plugin wants the pod's account to exist.
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("kube-baseline".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
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
