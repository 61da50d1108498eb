//! The operator's behaviours (DESIGN.md D1–D3), end to end: one operator process, running under
//! the ServiceAccount and RBAC of `config/default`, against the real local control plane.

#[path = "../harness/mod.rs"]
mod harness;

use std::time::Duration;

use harness::scenario::*;
use harness::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube_baseline::api::{
    BaselineRoleBinding, Control, Exemption, GroupFormat, IpFamily, MetadataEgress, Mode, SecurityBaselineSpec,
};
use serde_json::json;

/// A change made by someone other than the operator (a person with kubectl).
async fn edit<K>(api: &Api<K>, name: &str, patch: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(patch),
    )
    .await
    .expect("edit");
}

fn subjects(rb: &RoleBinding) -> Vec<(String, String)> {
    rb.subjects
        .iter()
        .flatten()
        .map(|s| (s.kind.clone(), s.name.clone()))
        .collect()
}

fn excepts(np: &NetworkPolicy) -> Vec<(String, Option<Vec<String>>)> {
    let rule = &np.spec.as_ref().unwrap().egress.as_ref().unwrap()[0];
    rule.to
        .iter()
        .flatten()
        .filter_map(|p| p.ip_block.as_ref())
        .map(|b| (b.cidr.clone(), b.except.clone()))
        .collect()
}

#[tokio::test]
async fn new_namespace_gets_all_objects() {
    let mut s = Scenario::new("new-ns").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;

    let np = s.policy(&ns).await.unwrap();
    let spec = np.spec.as_ref().unwrap();
    assert_eq!(spec.policy_types, Some(vec!["Egress".to_string()]));
    // The local control plane is single-stack IPv4: no `::/0` peer, which Azure NPM would
    // refuse with the whole policy.
    assert_eq!(
        excepts(&np),
        vec![("0.0.0.0/0".into(), Some(vec!["169.254.169.254/32".into()]))]
    );
    let to = spec.egress.as_ref().unwrap()[0].to.as_ref().unwrap();
    assert!(
        to.iter()
            .any(|p| p.namespace_selector == Some(LabelSelector::default())),
        "pod-to-pod peer for Cilium"
    );
    assert_eq!(np.labels()["app.kubernetes.io/managed-by"], "kube-baseline");
    assert_eq!(np.labels()["kubebaseline.io/baseline"], baseline);
    let uid = s.baselines().get(&baseline).await.unwrap().uid();
    assert_eq!(np.owner_references()[0].uid, uid.unwrap());

    let rb = s.binding(&ns, "team-dev").await.unwrap();
    assert_eq!(rb.role_ref.name, "edit");
    assert_eq!(subjects(&rb), vec![("Group".to_string(), GROUP_DEV.to_string())]);

    let labels = s.namespace_labels(&ns).await;
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "baseline");
    assert_eq!(labels["pod-security.kubernetes.io/enforce-version"], "latest");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
    assert!(!labels.contains_key("pod-security.kubernetes.io/audit"));

    let status = s
        .wait_status(&baseline, "1 compliant namespace", |st| st.namespaces.compliant == 1)
        .await;
    assert_eq!(status.namespaces.selected, 1);
    assert_eq!(condition(&status, "Ready").unwrap().status, "True");
    s.wait_event(&baseline, "Created", &ns).await;
    s.cleanup().await;
}

#[tokio::test]
async fn kubectl_get_shows_mode_counts_and_readiness() {
    let mut s = Scenario::new("columns").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    for _ in 0..2 {
        let ns = s.namespace("team").await;
        s.wait_all_objects(&ns).await;
    }
    s.wait_status(&baseline, "2 compliant", |st| st.namespaces.compliant == 2)
        .await;
    let table = kubectl(&["get", "sbl", &baseline]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "MODE",
            "SELECTED",
            "COMPLIANT",
            "EXEMPTED",
            "BYPASSED",
            "READY",
            "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..7], [baseline.as_str(), "Enforce", "2", "2", "0", "0", "True"]);
    // -o wide adds the engine the metadata policy is written for and the other states.
    let wide = kubectl(&["get", "sbl", &baseline, "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&header[8..], ["ENGINE", "DRIFTED", "FAILED", "CONFLICTED"]);
    let row: Vec<&str> = wide.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[8..], ["NetworkPolicy", "0", "0", "0"]);
    s.cleanup().await;
}

#[tokio::test]
async fn namespace_created_before_the_baseline_gets_them_too() {
    let mut s = Scenario::new("pre-ns").await;
    let ns = s.namespace("early").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.baseline("aks", aks_spec(&s.label)).await;
    s.wait_all_objects(&ns).await;
    s.cleanup().await;
}

#[tokio::test]
async fn deleted_policy_is_recreated() {
    let mut s = Scenario::new("del-np").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    let before = s.wait_policy(&ns).await;
    let status = s
        .wait_status(&baseline, "compliant", |st| st.namespaces.compliant == 1)
        .await;
    s.policies(&ns).delete(POLICY, &DeleteParams::default()).await.unwrap();
    let after = eventually("recreated policy", WAIT, || async {
        s.policy(&ns).await.filter(|p| p.uid() != before.uid())
    })
    .await;
    assert_eq!(after.spec, before.spec);
    s.wait_status(&baseline, "repair counted", |st| st.repairs > status.repairs)
        .await;
    s.cleanup().await;
}

#[tokio::test]
async fn edited_except_list_is_reverted() {
    let mut s = Scenario::new("edit-np").await;
    s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    let original = s.wait_policy(&ns).await;
    let mut spec = original.spec.clone().unwrap();
    spec.egress.as_mut().unwrap()[0].to.as_mut().unwrap()[0]
        .ip_block
        .as_mut()
        .unwrap()
        .except = Some(vec![]);
    edit(&s.policies(&ns), POLICY, json!({"spec": spec})).await;
    eventually("except list restored", WAIT, || async {
        s.policy(&ns)
            .await
            .filter(|p| excepts(p)[0].1 == Some(vec!["169.254.169.254/32".to_string()]))
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn extra_subject_added_by_hand_is_removed() {
    let mut s = Scenario::new("extra-sub").await;
    s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    let intruder = json!({"subjects": [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": GROUP_DEV},
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory@example.com"}
    ]});
    edit(&s.bindings(&ns), "team-dev", intruder).await;
    eventually("only the declared group", WAIT, || async {
        s.binding(&ns, "team-dev")
            .await
            .filter(|rb| subjects(rb) == vec![("Group".to_string(), GROUP_DEV.to_string())])
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn removed_labels_are_restored() {
    let mut s = Scenario::new("labels").await;
    s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    edit(
        &s.policies(&ns),
        POLICY,
        json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}}),
    )
    .await;
    edit(
        &s.bindings(&ns),
        "team-read",
        json!({"metadata": {"labels": {"kubebaseline.io/baseline": null}}}),
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    edit(
        &namespaces,
        &ns,
        json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": null}}}),
    )
    .await;
    eventually("all labels back", WAIT, || async {
        let np = s.policy(&ns).await?;
        let rb = s.binding(&ns, "team-read").await?;
        let ns_labels = s.namespace_labels(&ns).await;
        (np.labels().get("app.kubernetes.io/managed-by").is_some()
            && rb.labels().get("kubebaseline.io/baseline").is_some()
            && ns_labels.get("pod-security.kubernetes.io/enforce").map(String::as_str) == Some("baseline"))
        .then_some(())
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn annotations_and_labels_added_by_others_are_kept() {
    let mut s = Scenario::new("annot").await;
    s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace_with("team", &[("team", "payments")]).await;
    s.wait_all_objects(&ns).await;
    edit(
        &s.policies(&ns),
        POLICY,
        json!({"metadata": {"annotations": {"argocd.argoproj.io/tracking-id": "x"}}}),
    )
    .await;
    // Force a repair of the same object so the operator writes it while the annotation is there.
    edit(
        &s.policies(&ns),
        POLICY,
        json!({"spec": {"policyTypes": ["Egress", "Ingress"]}}),
    )
    .await;
    let np = eventually("policyTypes repaired", WAIT, || async {
        s.policy(&ns)
            .await
            .filter(|p| p.spec.as_ref().unwrap().policy_types == Some(vec!["Egress".to_string()]))
    })
    .await;
    assert_eq!(
        np.annotations()
            .get("argocd.argoproj.io/tracking-id")
            .map(String::as_str),
        Some("x")
    );
    assert_eq!(
        s.namespace_labels(&ns).await.get("team").map(String::as_str),
        Some("payments")
    );
    s.cleanup().await;
}

#[tokio::test]
async fn namespace_that_stops_matching_is_cleaned_up() {
    let mut s = Scenario::new("unmatch").await;
    s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace_with("team", &[("team", "payments")]).await;
    s.wait_all_objects(&ns).await;
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    edit(&namespaces, &ns, json!({"metadata": {"labels": {SUITE_LABEL: null}}})).await;
    eventually("objects and labels pruned", WAIT, || async {
        let labels = s.namespace_labels(&ns).await;
        (s.policy(&ns).await.is_none()
            && s.binding(&ns, "team-dev").await.is_none()
            && s.binding(&ns, "team-read").await.is_none()
            && !labels.keys().any(|k| k.starts_with("pod-security.kubernetes.io/")))
        .then_some(labels)
    })
    .await;
    assert_eq!(
        s.namespace_labels(&ns).await.get("team").map(String::as_str),
        Some("payments")
    );
    s.cleanup().await;
}

#[tokio::test]
async fn object_removed_from_the_spec_is_pruned() {
    let mut s = Scenario::new("prune").await;
    let spec = aks_spec(&s.label);
    let baseline = s.baseline("aks", spec.clone()).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    let mut smaller = spec;
    smaller.role_bindings.retain(|rb| rb.name == "team-dev");
    smaller.metadata_egress = None;
    s.apply_baseline(&baseline, smaller).await;
    eventually("team-read and the policy pruned", WAIT, || async {
        (s.binding(&ns, "team-read").await.is_none() && s.policy(&ns).await.is_none()).then_some(())
    })
    .await;
    assert!(s.binding(&ns, "team-dev").await.is_some());
    s.cleanup().await;
}

#[tokio::test]
async fn deleting_the_baseline_garbage_collects_its_objects() {
    let mut s = Scenario::new("gc").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    s.baselines().delete(&baseline, &DeleteParams::default()).await.unwrap();
    eventually("objects collected and labels released", WAIT, || async {
        let labels = s.namespace_labels(&ns).await;
        (s.policy(&ns).await.is_none()
            && s.binding(&ns, "team-dev").await.is_none()
            && s.binding(&ns, "team-read").await.is_none()
            && !labels.contains_key("pod-security.kubernetes.io/enforce"))
        .then_some(())
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn unmanaged_same_named_policy_is_adopted() {
    let mut s = Scenario::new("adopt").await;
    let ns = s.namespace("team").await;
    // The hand-made policy from the guide (with a valid CIDR), made before any baseline.
    let handmade: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": POLICY, "annotations": {"owner": "platform-team"}},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]}]}
    }))
    .unwrap();
    s.policies(&ns).create(&PostParams::default(), &handmade).await.unwrap();
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let np = eventually("policy adopted", WAIT, || async {
        s.policy(&ns)
            .await
            .filter(|p| p.labels().get("kubebaseline.io/baseline") == Some(&baseline))
    })
    .await;
    let peers = np.spec.as_ref().unwrap().egress.as_ref().unwrap()[0]
        .to
        .as_ref()
        .unwrap()
        .len();
    assert_eq!(peers, 2, "made to match: the pod-to-pod peer is added");
    assert_eq!(np.annotations().get("owner").map(String::as_str), Some("platform-team"));
    assert!(np.owner_references().iter().any(|o| o.kind == "SecurityBaseline"));
    s.wait_event(&baseline, "Adopted", &ns).await;
    s.cleanup().await;
}

#[tokio::test]
async fn conflicting_baselines_report_conflict_and_do_not_fight() {
    let mut s = Scenario::new("conflict").await;
    let ns = s.namespace("team").await;
    let older = s.baseline("older", aks_spec(&s.label)).await;
    s.wait_all_objects(&ns).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creation timestamps have 1 s resolution
    let mut other = aks_spec(&s.label);
    other.role_bindings[0].groups = vec!["0f0e0d0c-0b0a-0908-0706-050403020100".into()];
    let younger = s.baseline("younger", other).await;

    let status = s.wait_condition(&younger, "Conflict", "True").await;
    s.wait_event(&younger, "Conflict", &ns).await;
    assert!(
        status
            .problems
            .iter()
            .any(|p| p.namespace == ns && p.object == "RoleBinding/team-dev" && p.reason == "Conflict"),
        "problems: {:?}",
        status.problems
    );
    stays(
        "the older baseline reports no conflict",
        Duration::from_secs(3),
        || async {
            s.status(&older).await.is_some_and(|st| {
                st.namespaces.conflicted == 0 && condition(&st, "Conflict").is_some_and(|c| c.status == "False")
            })
        },
    )
    .await;
    let rb = s.binding(&ns, "team-dev").await.unwrap();
    assert_eq!(
        subjects(&rb),
        vec![("Group".to_string(), GROUP_DEV.to_string())],
        "the older baseline wins"
    );
    let version = rb.resource_version();
    stays(
        "no write war on the contested RoleBinding",
        Duration::from_secs(5),
        || async { s.binding(&ns, "team-dev").await.unwrap().resource_version() == version },
    )
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn audit_mode_writes_nothing_and_reports_drift() {
    let mut s = Scenario::new("audit").await;
    let ns = s.namespace("team").await;
    let baseline = s
        .baseline(
            "audit",
            SecurityBaselineSpec {
                mode: Mode::Audit,
                ..aks_spec(&s.label)
            },
        )
        .await;
    let status = s
        .wait_status(&baseline, "1 drifted namespace", |st| st.namespaces.drifted == 1)
        .await;
    s.wait_event(&baseline, "Drift", &ns).await;
    assert_eq!(condition(&status, "Ready").unwrap().reason, "DriftDetected");
    let drifted: Vec<&str> = status
        .problems
        .iter()
        .filter(|p| p.reason == "Drift")
        .map(|p| p.object.as_str())
        .collect();
    assert_eq!(drifted.len(), 4, "policy, two bindings and labels: {drifted:?}");
    stays("nothing written in Audit mode", Duration::from_secs(3), || async {
        s.policy(&ns).await.is_none()
            && s.binding(&ns, "team-dev").await.is_none()
            && !s
                .namespace_labels(&ns)
                .await
                .contains_key("pod-security.kubernetes.io/enforce")
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn an_older_audit_baseline_does_not_keep_an_enforcing_one_from_writing() {
    let mut s = Scenario::new("audit-enforce").await;
    let ns = s.namespace("team").await;
    let preview = s
        .baseline(
            "preview",
            SecurityBaselineSpec {
                mode: Mode::Audit,
                ..aks_spec(&s.label)
            },
        )
        .await;
    s.wait_status(&preview, "drift reported", |st| st.namespaces.drifted == 1)
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let enforce = s.baseline("aks", aks_spec(&s.label)).await;
    s.wait_all_objects(&ns).await;
    assert_eq!(
        s.policy(&ns).await.unwrap().labels()["kubebaseline.io/baseline"],
        enforce
    );
    s.wait_status(&enforce, "compliant", |st| st.namespaces.compliant == 1)
        .await;
    s.wait_status(&preview, "the audit baseline sees no drift any more", |st| {
        st.namespaces.compliant == 1
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn changing_a_binding_to_a_role_the_operator_may_not_grant_keeps_the_old_binding() {
    let mut s = Scenario::new("roleref").await;
    let ns = s.namespace("team").await;
    let spec = aks_spec(&s.label);
    let baseline = s.baseline("aks", spec.clone()).await;
    s.wait_all_objects(&ns).await;
    let mut escalated = spec.clone();
    escalated.role_bindings[0].cluster_role = "cluster-admin".into();
    s.apply_baseline(&baseline, escalated).await;
    let status = s.wait_condition(&baseline, "Degraded", "True").await;
    assert!(
        status
            .problems
            .iter()
            .any(|p| p.object == "RoleBinding/team-dev" && p.reason == "Forbidden"),
        "{:?}",
        status.problems
    );
    let kept = s
        .binding(&ns, "team-dev")
        .await
        .expect("the old binding is kept, not deleted");
    assert_eq!(kept.role_ref.name, "edit");
    // An allowed role change replaces the binding (roleRef is immutable).
    let mut viewer = spec;
    viewer.role_bindings[0].cluster_role = "view".into();
    s.apply_baseline(&baseline, viewer).await;
    eventually("team-dev now grants view", WAIT, || async {
        s.binding(&ns, "team-dev").await.filter(|rb| rb.role_ref.name == "view")
    })
    .await;
    s.wait_condition(&baseline, "Degraded", "False").await;
    s.cleanup().await;
}

#[tokio::test]
async fn exemption_stops_applying_after_it_expires() {
    let mut s = Scenario::new("exempt").await;
    let ns = s.namespace("legacy").await;
    // metav1.Time has second precision: the stored expiry is the whole second.
    let expires = Timestamp::from_second(Timestamp::now().as_second() + 10).unwrap();
    let spec = SecurityBaselineSpec {
        exemptions: vec![Exemption {
            namespace: ns.clone(),
            controls: vec![Control::MetadataEgress],
            reason: "vendor agent needs IMDS (SEC-1234)".into(),
            expires: Time(expires),
        }],
        ..aks_spec(&s.label)
    };
    let baseline = s.baseline("aks", spec).await;
    let status = s
        .wait_status(&baseline, "namespace exempted", |st| st.namespaces.exempted == 1)
        .await;
    assert_eq!(status.active_exemptions[0].namespace, ns);
    assert!(s.binding(&ns, "team-dev").await.is_some(), "other controls still apply");
    assert!(
        s.policy(&ns).await.is_none(),
        "exempted control not applied before expiry"
    );
    // Nothing from outside happens at expiry: the operator's own timer enforces it.
    s.wait_policy(&ns).await;
    assert!(Timestamp::now() >= expires);
    s.wait_status(&baseline, "exemption gone", |st| {
        st.active_exemptions.is_empty() && st.namespaces.compliant == 1
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn excluded_and_system_namespaces_are_never_touched() {
    let mut s = Scenario::new("excluded").await;
    let included = s.namespace("team").await;
    let excluded = s.namespace("ingress").await;
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    // The operator runs with --system-namespace e2e-platform-system.
    for system in ["kube-public", "e2e-platform-system"] {
        if namespaces.get_opt(system).await.unwrap().is_none() {
            let _ = namespaces
                .create(
                    &PostParams::default(),
                    &Namespace {
                        metadata: ObjectMeta {
                            name: Some(system.into()),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                )
                .await;
        }
    }
    let spec = SecurityBaselineSpec {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: SUITE_LABEL.into(),
                operator: "In".into(),
                values: Some(vec![s.label.clone()]),
            }]),
            ..Default::default()
        }),
        excluded_namespaces: vec![excluded.clone()],
        ..aks_spec(&s.label)
    };
    // kube-public and the flag's namespace are labelled like the others, yet must stay untouched.
    for system in ["kube-public", "e2e-platform-system"] {
        edit(
            &namespaces,
            system,
            json!({"metadata": {"labels": {SUITE_LABEL: s.label}}}),
        )
        .await;
    }
    let baseline = s.baseline("aks", spec).await;
    s.wait_all_objects(&included).await;
    s.wait_status(&baseline, "exactly one namespace selected", |st| {
        st.namespaces.selected == 1 && st.namespaces.compliant == 1
    })
    .await;
    let untouched = |name: String| {
        let s = &s;
        async move {
            s.policy(&name).await.is_none()
                && s.binding(&name, "team-dev").await.is_none()
                && !s
                    .namespace_labels(&name)
                    .await
                    .contains_key("pod-security.kubernetes.io/enforce")
        }
    };
    for name in [excluded.clone(), "kube-public".into(), "e2e-platform-system".into()] {
        stays(&format!("{name} untouched"), Duration::from_secs(2), || {
            untouched(name.clone())
        })
        .await;
    }
    // A namespace that becomes excluded is cleaned up.
    let mut spec = s.baselines().get(&baseline).await.unwrap().spec;
    spec.excluded_namespaces.push(included.clone());
    s.apply_baseline(&baseline, spec).await;
    eventually("newly excluded namespace cleaned up", WAIT, || async {
        untouched(included.clone()).await.then_some(())
    })
    .await;
    for system in ["kube-public", "e2e-platform-system"] {
        edit(
            &namespaces,
            system,
            json!({"metadata": {"labels": {SUITE_LABEL: null}}}),
        )
        .await;
    }
    s.cleanup().await;
}

#[tokio::test]
async fn terminating_namespace_causes_no_error_loop() {
    let mut s = Scenario::new("terminating").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("doomed").await;
    s.wait_all_objects(&ns).await;
    // A finalizer keeps the namespace Terminating while we watch the operator.
    let held = ConfigMap {
        metadata: ObjectMeta {
            name: Some("held".into()),
            finalizers: Some(vec!["e2e.kubebaseline.io/hold".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), &ns);
    cms.create(&PostParams::default(), &held).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
    eventually("policy deleted by the namespace controller", WAIT, || async {
        s.policy(&ns).await.is_none().then_some(())
    })
    .await;

    let addr = s.metrics_addr();
    let errors_before = metric(addr, "kube_baseline_errors_total").await;
    let reconciles_before = metric(addr, "kube_baseline_reconciles_total").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        s.policy(&ns).await.is_none(),
        "nothing is recreated in a terminating namespace"
    );
    assert!(namespaces.get(&ns).await.unwrap().metadata.deletion_timestamp.is_some());
    let status = s.status(&baseline).await.unwrap();
    assert_eq!(
        status.namespaces.failed, 0,
        "a terminating namespace is not a failure: {:?}",
        status.problems
    );
    // Other tests run in parallel, so allow their work; a hot loop would be thousands.
    let reconciles = metric(addr, "kube_baseline_reconciles_total").await - reconciles_before;
    assert!(reconciles < 500.0, "{reconciles} reconciles in 5 s looks like a loop");
    let errors = metric(addr, "kube_baseline_errors_total").await - errors_before;
    assert!(errors < 5.0, "{errors} errors while a namespace terminates");
    let warnings: Vec<String> = s
        .events(&baseline)
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.note.as_deref().is_some_and(|n| n.contains(&ns)))
        .filter_map(|e| e.note)
        .collect();
    assert!(
        warnings.is_empty(),
        "warnings about the terminating namespace: {warnings:?}"
    );

    edit(&cms, "held", json!({"metadata": {"finalizers": null}})).await;
    eventually("namespace gone", WAIT, || async {
        namespaces.get_opt(&ns).await.unwrap().is_none().then_some(())
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn role_binding_the_operator_may_not_grant_is_reported_while_the_rest_applies() {
    let mut s = Scenario::new("escalate").await;
    let ns = s.namespace("team").await;
    let mut spec = aks_spec(&s.label);
    spec.role_bindings.push(BaselineRoleBinding {
        name: "team-root".into(),
        cluster_role: "cluster-admin".into(),
        groups: vec![GROUP_DEV.into()],
    });
    let baseline = s.baseline("aks", spec).await;
    s.wait_all_objects(&ns).await;
    let status = s.wait_condition(&baseline, "Degraded", "True").await;
    let problem = status
        .problems
        .iter()
        .find(|p| p.object == "RoleBinding/team-root")
        .expect("problem for team-root");
    assert_eq!(problem.reason, "Forbidden");
    assert_eq!(problem.namespace, ns);
    assert!(s.binding(&ns, "team-root").await.is_none(), "never escalated");
    s.wait_event(&baseline, "Forbidden", "team-root").await;
    s.cleanup().await;
}

#[tokio::test]
async fn invalid_baselines_are_rejected_at_admission() {
    let s = Scenario::new("invalid").await;
    let base = aks_spec(&s.label);
    let cases: Vec<(&str, SecurityBaselineSpec, &str)> = vec![
        (
            "not-a-cidr",
            SecurityBaselineSpec {
                metadata_egress: Some(MetadataEgress {
                    blocked_cidrs: vec!["169.254.169.254".into()],
                    ..Default::default()
                }),
                ..base.clone()
            },
            "blockedCIDRs must be canonical",
        ),
        (
            "host-bits",
            SecurityBaselineSpec {
                metadata_egress: Some(MetadataEgress {
                    blocked_cidrs: vec!["169.254.169.254/16".into()],
                    ..Default::default()
                }),
                ..base.clone()
            },
            "blockedCIDRs must be canonical",
        ),
        (
            "zero-prefix",
            SecurityBaselineSpec {
                metadata_egress: Some(MetadataEgress {
                    blocked_cidrs: vec!["0.0.0.0/0".into()],
                    ..Default::default()
                }),
                ..base.clone()
            },
            "non-zero prefix",
        ),
        (
            "user-not-group",
            SecurityBaselineSpec {
                role_bindings: vec![BaselineRoleBinding {
                    name: "a".into(),
                    cluster_role: "edit".into(),
                    groups: vec!["alice@contoso.com".into()],
                }],
                ..base.clone()
            },
            "Entra ID group object IDs",
        ),
        (
            "duplicate-binding",
            SecurityBaselineSpec {
                role_bindings: vec![base.role_bindings[0].clone(), base.role_bindings[0].clone()],
                ..base.clone()
            },
            "Duplicate value",
        ),
        (
            "bad-binding-name",
            SecurityBaselineSpec {
                role_bindings: vec![BaselineRoleBinding {
                    name: "Team_Dev".into(),
                    cluster_role: "edit".into(),
                    groups: vec![GROUP_DEV.into()],
                }],
                ..base.clone()
            },
            "roleBindings[0].name",
        ),
        (
            "bad-excluded",
            SecurityBaselineSpec {
                excluded_namespaces: vec!["Not A Name".into()],
                ..base.clone()
            },
            "excludedNamespaces[0]",
        ),
    ];
    for (case, spec, message) in cases {
        let name = format!("{case}-{}", s.label);
        let err = s.create_baseline(&name, spec).await.expect_err(case);
        let kube::Error::Api(status) = &err else {
            panic!("{case}: {err:?}")
        };
        assert_eq!(status.code, 422, "{case}: {status:?}");
        assert!(
            status.message.contains(message),
            "{case}: {:?} lacks {message:?}",
            status.message
        );
    }
    // Raw YAML-level mistakes the Rust types cannot express.
    let raw = json!({"apiVersion": "kubebaseline.io/v1alpha1", "kind": "SecurityBaseline", "metadata": {"name": format!("raw-{}", s.label)},
                     "spec": {"mode": "Sometimes", "podSecurity": {"enforce": "strict"}, "exemptions": [{"namespace": "x", "controls": ["metadataEgress"], "expires": "2030-01-01T00:00:00Z"}]}});
    let api: Api<kube::api::DynamicObject> = Api::all_with(
        s.client.clone(),
        &kube::api::ApiResource::erase::<kube_baseline::api::SecurityBaseline>(&()),
    );
    let err = api
        .create(&PostParams::default(), &serde_json::from_value(raw).unwrap())
        .await
        .unwrap_err();
    let kube::Error::Api(status) = &err else {
        panic!("{err:?}")
    };
    for part in ["spec.mode", "spec.podSecurity.enforce", "reason"] {
        assert!(status.message.contains(part), "{:?} lacks {part}", status.message);
    }
    // The opt-out accepts non-GUID groups.
    let any = SecurityBaselineSpec {
        group_format: GroupFormat::Any,
        role_bindings: vec![BaselineRoleBinding {
            name: "a".into(),
            cluster_role: "edit".into(),
            groups: vec!["oidc:platform".into()],
        }],
        ..base
    };
    let name = format!("any-{}", s.label);
    s.create_baseline(&name, any)
        .await
        .expect("groupFormat Any accepts other group names");
    s.baselines().delete(&name, &DeleteParams::default()).await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn baseline_invalid_beyond_admission_is_reported_and_nothing_is_applied_or_pruned() {
    let mut s = Scenario::new("invalid-sel").await;
    let ns = s.namespace("team").await;
    let spec = aks_spec(&s.label);
    let baseline = s.baseline("aks", spec.clone()).await;
    s.wait_all_objects(&ns).await;
    // An operator the schema accepts but no selector knows: only the operator can tell.
    let mut broken = spec;
    broken.namespace_selector = Some(LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: SUITE_LABEL.into(),
            operator: "Sometimes".into(),
            values: None,
        }]),
        ..Default::default()
    });
    broken.role_bindings.pop();
    s.apply_baseline(&baseline, broken).await;
    let status = s.wait_condition(&baseline, "Invalid", "True").await;
    assert!(
        condition(&status, "Invalid")
            .unwrap()
            .message
            .contains("namespaceSelector")
    );
    assert_eq!(condition(&status, "Ready").unwrap().status, "False");
    // Nothing half-applied: what exists stays, what the broken spec dropped is not pruned.
    stays(
        "objects kept while the spec is invalid",
        Duration::from_secs(3),
        || async {
            s.policy(&ns).await.is_some()
                && s.binding(&ns, "team-read").await.is_some()
                && s.namespace_labels(&ns)
                    .await
                    .contains_key("pod-security.kubernetes.io/enforce")
        },
    )
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn objects_the_operator_never_made_are_never_pruned() {
    let mut s = Scenario::new("foreign").await;
    let spec = aks_spec(&s.label);
    let baseline = s.baseline("aks", spec.clone()).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    // A team's own policy, and a copy of ours (same labels, no ownerReference) made by someone else.
    let own: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "team-default-deny"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
    }))
    .unwrap();
    let copy: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "copied-metadata-policy",
                     "labels": {"app.kubernetes.io/managed-by": "kube-baseline", "kubebaseline.io/baseline": baseline}},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
    }))
    .unwrap();
    for p in [&own, &copy] {
        s.policies(&ns).create(&PostParams::default(), p).await.unwrap();
    }
    // Removing the policy from the spec prunes the operator's own, and only it.
    s.apply_baseline(
        &baseline,
        SecurityBaselineSpec {
            metadata_egress: None,
            ..spec
        },
    )
    .await;
    eventually("the operator's policy pruned", WAIT, || async {
        s.policy(&ns).await.is_none().then_some(())
    })
    .await;
    stays("foreign policies kept", Duration::from_secs(2), || async {
        s.policies(&ns).get_opt("team-default-deny").await.unwrap().is_some()
            && s.policies(&ns)
                .get_opt("copied-metadata-policy")
                .await
                .unwrap()
                .is_some()
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_refused_role_change_still_applies_the_new_subjects_under_the_old_role() {
    let mut s = Scenario::new("roleref-subjects").await;
    let ns = s.namespace("team").await;
    let spec = aks_spec(&s.label);
    let baseline = s.baseline("aks", spec.clone()).await;
    s.wait_all_objects(&ns).await;
    // One change: a role the operator may not grant, and the group replaced by another.
    let mut changed = spec;
    changed.role_bindings[0].cluster_role = "cluster-admin".into();
    changed.role_bindings[0].groups = vec![GROUP_READ.into()];
    s.apply_baseline(&baseline, changed).await;
    s.wait_condition(&baseline, "Degraded", "True").await;
    let rb = eventually("subjects follow the baseline", WAIT, || async {
        s.binding(&ns, "team-dev")
            .await
            .filter(|rb| subjects(rb) == vec![("Group".to_string(), GROUP_READ.to_string())])
    })
    .await;
    assert_eq!(rb.role_ref.name, "edit", "the refused role is not granted");
    s.cleanup().await;
}

#[tokio::test]
async fn upper_case_group_ids_are_bound_lower_case_and_order_makes_no_conflict() {
    let mut s = Scenario::new("group-case").await;
    let ns = s.namespace("team").await;
    let mut first = aks_spec(&s.label);
    first.role_bindings[0].groups = vec![GROUP_DEV.to_uppercase(), GROUP_READ.into()];
    let older = s.baseline("older", first.clone()).await;
    s.wait_all_objects(&ns).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creation timestamps have 1 s resolution
    let mut second = first;
    second.role_bindings[0].groups = vec![GROUP_READ.into(), GROUP_DEV.into()];
    let younger = s.baseline("younger", second).await;
    let status = s
        .wait_status(&younger, "compliant, no conflict", |st| st.namespaces.compliant == 1)
        .await;
    assert_eq!(status.namespaces.conflicted, 0);
    let rb = s.binding(&ns, "team-dev").await.unwrap();
    let mut names: Vec<String> = subjects(&rb).into_iter().map(|(_, n)| n).collect();
    names.sort();
    let mut want = vec![GROUP_DEV.to_string(), GROUP_READ.to_string()];
    want.sort();
    assert_eq!(names, want, "GUIDs bound in lower case");
    let _ = older;
    s.cleanup().await;
}

#[tokio::test]
async fn converging_many_namespaces_writes_a_bounded_number_of_events() {
    let mut s = Scenario::new("few-events").await;
    let mut namespaces = Vec::new();
    for _ in 0..40 {
        namespaces.push(s.namespace("team").await);
    }
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    s.wait_status(&baseline, "all compliant", |st| st.namespaces.compliant == 40)
        .await;
    // Past the aggregation window, so the summaries are out too.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let events = s.events(&baseline).await;
    // 160 objects written: per reason (Created, Updated) one Event at once, then a summary when
    // a window closes or the reason goes quiet; converging may straddle one window boundary.
    assert!(
        events.len() <= 8,
        "{} events: {:?}",
        events.len(),
        events.iter().map(|e| &e.note).collect::<Vec<_>>()
    );
    let created = events.iter().filter(|e| e.reason.as_deref() == Some("Created")).count();
    assert!(created >= 1, "repairs stay visible");
    assert!(
        events
            .iter()
            .any(|e| e.note.as_deref().is_some_and(|n| n.contains("more Created"))),
        "a summary counts the rest: {:?}",
        events
            .iter()
            .map(|e| (&e.reason, &e.note, &e.series))
            .collect::<Vec<_>>()
    );
    s.cleanup().await;
}

/// `obj`'s JSON with a controller ownerReference to the ConfigMap `owner` made in `ns` first.
async fn owned_by_a_config_map(s: &Scenario, ns: &str, obj: serde_json::Value) -> serde_json::Value {
    let owner = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(s.client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let mut obj = obj;
    obj["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner.metadata.uid.unwrap(), "controller": true,
    }]);
    obj
}

#[tokio::test]
async fn a_same_named_object_another_controller_owns_is_reported_bypassed_and_never_taken_over() {
    // The review's squatter: an open policy by the baseline's name, controlled by a ConfigMap,
    // made before the namespace is selected; and a binding by a baseline binding's name.
    let mut s = Scenario::new("squat").await;
    let ns = s.namespace("team").await;
    let squatter = owned_by_a_config_map(
        &s,
        &ns,
        json!({"metadata": {"name": POLICY},
               "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}),
    )
    .await;
    let squatter: NetworkPolicy = serde_json::from_value(squatter).unwrap();
    s.policies(&ns).create(&PostParams::default(), &squatter).await.unwrap();
    let mut binding: serde_json::Value = json!({
        "metadata": {"name": "team-dev", "ownerReferences": squatter.metadata.owner_references},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "attacker-group"}],
    });
    binding["metadata"]["ownerReferences"][0]["controller"] = json!(true);
    let binding: RoleBinding = serde_json::from_value(binding).unwrap();
    s.bindings(&ns).create(&PostParams::default(), &binding).await.unwrap();

    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let status = s
        .wait_status(&baseline, "both squatters reported", |st| {
            ["NetworkPolicy", "RoleBinding"].iter().all(|kind| {
                st.problems.iter().any(|p| {
                    p.namespace == ns
                        && p.reason == "Bypassed"
                        && p.message.contains(&format!("{kind} "))
                        && p.message.contains("controlled by ConfigMap/owner")
                })
            })
        })
        .await;
    assert_eq!(status.namespaces.bypassed, 1, "{:?}", status.namespaces);
    s.wait_event(&baseline, "Bypassed", "controlled by ConfigMap/owner")
        .await;
    // Nothing of them was taken over, and the binding's group kept nothing it did not have.
    let np = s.policy(&ns).await.unwrap();
    assert!(
        !np.labels().contains_key("app.kubernetes.io/managed-by"),
        "{:?}",
        np.metadata
    );
    let rb = s.binding(&ns, "team-dev").await.unwrap();
    assert!(
        !rb.labels().contains_key("app.kubernetes.io/managed-by"),
        "{:?}",
        rb.metadata
    );
    // Once the squatter is gone, the baseline's own policy is made.
    s.policies(&ns).delete(POLICY, &Default::default()).await.unwrap();
    eventually("the baseline's policy", WAIT, || async {
        s.policy(&ns)
            .await
            .filter(|p| p.labels().get("kubebaseline.io/baseline") == Some(&baseline))
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_binding_handed_to_another_baseline_keeps_no_trace_of_the_first() {
    let mut s = Scenario::new("handover").await;
    let ns = s.namespace("team").await;
    let older = s.baseline("older", aks_spec(&s.label)).await;
    s.wait_all_objects(&ns).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creation timestamps have 1 s resolution
    let other_group = "0f0e0d0c-0b0a-0908-0706-050403020100";
    let mut spec = aks_spec(&s.label);
    spec.role_bindings[0].groups = vec![other_group.into()];
    let younger = s.baseline("younger", spec).await;
    s.wait_condition(&younger, "Conflict", "True").await;

    // The older baseline stops asking for team-dev: the younger one takes it over.
    s.baselines()
        .patch(
            &older,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"roleBindings": [
                {"name": "team-read", "clusterRole": "view", "groups": [GROUP_READ]}]}})),
        )
        .await
        .unwrap();
    let older_uid = s.baselines().get(&older).await.unwrap().metadata.uid.unwrap();
    let rb = eventually("team-dev handed over, old reference gone", WAIT, || async {
        s.binding(&ns, "team-dev").await.filter(|rb| {
            rb.labels().get("kubebaseline.io/baseline") == Some(&younger)
                && !rb.owner_references().iter().any(|o| o.uid == older_uid)
        })
    })
    .await;
    let subjects: Vec<&str> = rb.subjects.iter().flatten().map(|s| s.name.as_str()).collect();
    assert_eq!(subjects, [other_group], "the older baseline's group keeps nothing");
    assert_eq!(
        rb.owner_references()
            .iter()
            .filter(|o| o.controller == Some(true))
            .count(),
        1
    );
    s.wait_condition(&younger, "Conflict", "False").await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_forged_exemption_in_status_is_written_over() {
    // status.activeExemptions switches admission off in a namespace; one the spec does not
    // declare, written by anyone who may write the status, does not stay.
    let mut s = Scenario::new("forged-status").await;
    let ns = s.namespace("team").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    s.wait_condition(&baseline, "Ready", "True").await;
    s.baselines()
        .patch_status(
            &baseline,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"activeExemptions": [
                {"namespace": ns, "controls": ["metadataEgress"], "expires": "2099-01-01T00:00:00Z"}]}})),
        )
        .await
        .expect("the admin may write the status");
    s.wait_status(&baseline, "the forged exemption gone", |st| {
        st.active_exemptions.is_empty()
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_running_host_network_pod_is_reported_until_it_goes() {
    // The Pod Security floor stops new hostNetwork pods, not one already running: no
    // NetworkPolicy applies to it, so the namespace is not protected while it runs.
    let mut s = Scenario::new("hostnet").await;
    let ns = s.namespace("team").await;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(s.client.clone(), &ns);
    let _ = accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await; // made by the service-account controller where one runs
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(s.client.clone(), &ns);
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "node-agent"},
        "spec": {"hostNetwork": true, "automountServiceAccountToken": false,
                 "containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let status = s
        .wait_status(&baseline, "the hostNetwork pod reported", |st| {
            st.problems
                .iter()
                .any(|p| p.namespace == ns && p.reason == "HostNetworkPod" && p.object == "Pod/node-agent")
        })
        .await;
    assert_eq!(status.namespaces.bypassed, 1, "{:?}", status.namespaces);
    assert_eq!(status.namespaces.compliant, 0);
    s.wait_event(&baseline, "HostNetworkPod", "node-agent").await;

    // No kubelet here: the pod goes at once when deleted without a grace period.
    pods.delete("node-agent", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    s.wait_status(&baseline, "compliant once it is gone", |st| {
        st.namespaces.compliant == 1
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_baselines_object_in_a_namespace_it_does_not_select_is_pruned() {
    // What the fence's per-baseline check refuses, and what gets through while that check
    // cannot run (after an API server restart): the operator removes it as soon as it sees it.
    let mut s = Scenario::new("stray").await;
    let ns = s.namespace("team").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    s.wait_all_objects(&ns).await;
    let uid = s.baselines().get(&baseline).await.unwrap().metadata.uid.unwrap();
    let elsewhere = create_namespace(&s.client, "stray-flux-system", &[]).await;
    let stray: RoleBinding = serde_json::from_value(json!({
        "metadata": {
            "name": "team-dev",
            "labels": {"app.kubernetes.io/managed-by": "kube-baseline", "kubebaseline.io/baseline": baseline},
            "ownerReferences": [{"apiVersion": "kubebaseline.io/v1alpha1", "kind": "SecurityBaseline",
                                 "name": baseline, "uid": uid, "controller": true}],
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "attacker-group"}],
    }))
    .unwrap();
    s.bindings(&elsewhere)
        .create(&PostParams::default(), &stray)
        .await
        .unwrap();
    eventually("the stray binding pruned", WAIT, || async {
        s.binding(&elsewhere, "team-dev").await.is_none().then_some(())
    })
    .await;
    delete_namespace(&s.client, &elsewhere).await;
    s.cleanup().await;
}

#[tokio::test]
async fn the_policy_keeps_egress_for_the_families_the_cluster_uses_unless_the_baseline_says() {
    let mut s = Scenario::new("families").await;
    let ns = s.namespace("team").await;
    let mut spec = aks_spec(&s.label);
    spec.metadata_egress.as_mut().unwrap().ip_families = Some(vec![IpFamily::IPv4, IpFamily::IPv6]);
    let baseline = s.baseline("aks", spec).await;
    let np = eventually("the IPv6 peer the baseline asks for", WAIT, || async {
        s.policy(&ns).await.filter(|p| excepts(p).len() == 2)
    })
    .await;
    assert_eq!(excepts(&np)[1], ("::/0".to_string(), None));
    let status = s
        .wait_status(&baseline, "families reported", |st| st.ip_families.is_some())
        .await;
    let families = status.ip_families.unwrap();
    assert_eq!(families.families, vec![IpFamily::IPv4, IpFamily::IPv6]);
    assert_eq!(families.reason, "spec.metadataEgress.ipFamilies");

    // Left to the cluster (single-stack here): the policy is rewritten in place, IPv4 block and
    // its except untouched, and status says where the families came from.
    s.baselines()
        .patch(
            &baseline,
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "remove", "path": "/spec/metadataEgress/ipFamilies"}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    let after = eventually("the IPv6 peer gone", WAIT, || async {
        s.policy(&ns).await.filter(|p| excepts(p).len() == 1)
    })
    .await;
    assert_eq!(after.metadata.uid, np.metadata.uid, "rewritten in place");
    assert_eq!(
        excepts(&after),
        vec![("0.0.0.0/0".into(), Some(vec!["169.254.169.254/32".into()]))]
    );
    let status = s
        .wait_status(&baseline, "the cluster's families reported", |st| {
            st.ip_families
                .as_ref()
                .is_some_and(|f| f.reason.starts_with("the cluster's"))
        })
        .await;
    let families = status.ip_families.unwrap();
    assert_eq!(families.families, vec![IpFamily::IPv4]);
    assert!(
        families.reason.contains("default/kubernetes Service (IPv4)"),
        "{}",
        families.reason
    );
    s.cleanup().await;
}

#[tokio::test]
async fn an_object_naming_a_baseline_that_does_not_exist_is_removed() {
    // What the fence cannot refuse (it cannot tell that a baseline exists): a labelled binding
    // of edit to an attacker's group, owned by a SecurityBaseline that is not there. The
    // garbage collector would delete it, after minutes when its retries have backed off; the
    // operator does at once.
    let s = Scenario::new("ghost").await;
    let elsewhere = create_namespace(&s.client, "ghost-argocd", &[]).await;
    let ghost: RoleBinding = serde_json::from_value(json!({
        "metadata": {
            "name": "argocd-edit",
            "labels": {"app.kubernetes.io/managed-by": "kube-baseline", "kubebaseline.io/baseline": "no-such-baseline"},
            "ownerReferences": [{"apiVersion": "kubebaseline.io/v1alpha1", "kind": "SecurityBaseline",
                                 "name": "no-such-baseline", "uid": "00000000-0000-0000-0000-000000000000",
                                 "controller": true}],
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "attacker-group"}],
    }))
    .unwrap();
    s.bindings(&elsewhere)
        .create(&PostParams::default(), &ghost)
        .await
        .unwrap();
    eventually("the binding removed", Duration::from_secs(10), || async {
        s.binding(&elsewhere, "argocd-edit").await.is_none().then_some(())
    })
    .await;
    delete_namespace(&s.client, &elsewhere).await;
}

#[tokio::test]
async fn an_event_after_a_repair_names_the_object_repaired() {
    // kube's Recorder folded a new Event into the first of the same reason, keeping its note:
    // after the README's own demo (delete the policy) the Event named a binding elsewhere.
    let mut s = Scenario::new("event-note").await;
    let first = s.namespace("first").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    s.wait_all_objects(&first).await;
    // Past the quiet time and the next tick: the Created series has ended.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let second = s.namespace("second").await;
    s.wait_all_objects(&second).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    s.policies(&second)
        .delete(POLICY, &DeleteParams::default())
        .await
        .unwrap();
    s.wait_event(
        &baseline,
        "Created",
        &format!("Created NetworkPolicy/{POLICY} in namespace {second}"),
    )
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn two_baselines_compose_their_cidrs_and_pod_security_strictest_wins() {
    let mut s = Scenario::new("compose").await;
    let org = s.baseline("org", aks_spec(&s.label)).await;
    let mut spec = aks_spec(&s.label);
    spec.metadata_egress = Some(MetadataEgress {
        blocked_cidrs: vec!["168.63.129.16/32".into(), "169.254.169.254/32".into()],
        ..Default::default()
    });
    spec.role_bindings.clear();
    spec.pod_security = Some(kube_baseline::api::PodSecurity {
        enforce: Some(kube_baseline::api::PodSecurityLevel::Restricted),
        ..Default::default()
    });
    let regulated = s.baseline("regulated", spec).await;
    let ns = s.namespace("payments").await;
    let np = eventually("the composed policy", WAIT, || async {
        s.policy(&ns).await.filter(|np| {
            excepts(np)
                == vec![(
                    "0.0.0.0/0".into(),
                    Some(vec!["168.63.129.16/32".into(), "169.254.169.254/32".into()]),
                )]
        })
    })
    .await;
    // Written for the older baseline, which owns it.
    assert_eq!(np.labels()["kubebaseline.io/baseline"], org);
    eventually("the stricter Pod Security level", WAIT, || async {
        let labels = s.namespace_labels(&ns).await;
        (labels.get("pod-security.kubernetes.io/enforce").map(String::as_str) == Some("restricted")).then_some(())
    })
    .await;
    // Both are compliant: no conflict.
    for b in [&org, &regulated] {
        s.wait_status(b, "compliant, no conflict", |st| {
            st.namespaces.compliant == 1 && st.namespaces.conflicted == 0
        })
        .await;
    }
    s.wait_event(&org, "Created", &format!("(for baselines {org}, {regulated})"))
        .await;
    s.cleanup().await;
}
