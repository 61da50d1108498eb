//! Self-tests of the local control plane: it behaves like a real cluster where the operator's
//! behaviour depends on it (namespace deletion, garbage collection, RBAC, aggregated roles,
//! ServiceAccounts).

#[path = "../harness/mod.rs"]
mod harness;

use std::time::Duration;

use harness::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn server_reports_the_pinned_kubernetes_version() {
    let versions = std::fs::read_to_string(repo_root().join("e2e/controlplane/versions.env")).unwrap();
    let pinned = versions
        .lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .unwrap();
    let info = client().await.apiserver_version().await.unwrap();
    assert_eq!(info.git_version, pinned);
}

#[tokio::test]
async fn deleted_namespace_actually_disappears() {
    let client = client().await;
    let name = create_namespace(&client, "cp-delete", &[]).await;
    let api = Api::<Namespace>::all(client.clone());
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    eventually("namespace to be gone", WAIT, || async {
        api.get_opt(&name).await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn object_whose_owner_is_deleted_is_garbage_collected() {
    let client = client().await;
    let ns = create_namespace(&client, "cp-gc", &[]).await;
    let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let owner = api
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dependent = ConfigMap {
        metadata: ObjectMeta {
            name: Some("dependent".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.uid().unwrap(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &dependent).await.unwrap();
    api.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually("dependent to be garbage-collected", WAIT, || async {
        api.get_opt("dependent").await.unwrap().is_none().then_some(())
    })
    .await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn rbac_denies_an_unprivileged_identity() {
    let admin = client().await;
    let ns = create_namespace(&admin, "cp-rbac", &[]).await;
    let sa = Api::<ServiceAccount>::namespaced(admin.clone(), &ns);
    eventually("default ServiceAccount", WAIT, || async {
        sa.get_opt("default").await.unwrap()
    })
    .await;
    let nobody = client_as_service_account(&ns, "default").await;
    let err = Api::<ConfigMap>::namespaced(nobody, &ns)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "expected Forbidden, got {err:?}"
    );
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn edit_cluster_role_carries_its_aggregated_rules() {
    let roles = Api::<ClusterRole>::all(client().await);
    let edit = eventually("edit to be aggregated", WAIT, || async {
        roles
            .get("edit")
            .await
            .ok()
            .filter(|r| r.rules.as_ref().is_some_and(|rules| !rules.is_empty()))
    })
    .await;
    let grants_deployments = edit
        .rules
        .unwrap()
        .iter()
        .any(|r| r.resources.iter().flatten().any(|x| x == "deployments") && r.verbs.iter().any(|v| v == "create"));
    assert!(
        grants_deployments,
        "edit must grant create on deployments through aggregation"
    );
}

#[tokio::test]
async fn new_namespace_gets_its_default_service_account() {
    let client = client().await;
    let ns = create_namespace(&client, "cp-sa", &[]).await;
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    eventually("default ServiceAccount", WAIT, || async {
        sa.get_opt("default").await.unwrap()
    })
    .await;
    delete_namespace(&client, &ns).await;
}
