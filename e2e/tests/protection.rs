//! Protection, not only repair (issue 7), end to end: a team member holding `edit` through the
//! baseline's own Entra-group RoleBinding cannot undo the baseline, and what they can still do
//! (with admission Off) is reported as a bypass. The operator runs under the installed
//! ServiceAccount (config/default, with the admission policies and the fence).

#[path = "../harness/mod.rs"]
mod harness;

use harness::scenario::*;
use harness::*;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding, RoleRef, Subject};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_baseline::api::{
    AdmissionMode, Control, Exemption, MetadataEgress, PodSecurity, PodSecurityLevel, SecurityBaselineSpec,
};
use kube_baseline::core::objects::ADOPTED_ANNOTATION;
use serde_json::{Value, json};

/// A member of the baseline's `team-dev` group: `edit` in every selected namespace.
const MEMBER: &str = "dev@example.com";

async fn member() -> Client {
    client_as_user(MEMBER, &[GROUP_DEV]).await
}

fn allow_all(ns: &str) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "allow-all-egress", "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
    }))
    .unwrap()
}

fn https_except_imds(ns: &str) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "https-out", "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}],
                "ports": [{"port": 443, "protocol": "TCP"}]
            }]
        }
    }))
    .unwrap()
}

fn refusal(result: kube::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "refused as Forbidden: {s:?}");
            s.message
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Waits until the API server's admission plugin guards `ns` for a new baseline (its parameter
/// cache learns of baselines through a watch): a dry run of an allow-all policy is refused.
async fn wait_guarded(ns: &str) {
    let api: Api<NetworkPolicy> = Api::namespaced(member().await, ns);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(&format!("admission guards {ns}"), WAIT, || async {
        matches!(api.create(&dry_run, &allow_all(ns)).await, Err(kube::Error::Api(s)) if s.code == 403).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_member_cannot_open_imds_but_may_add_a_policy_that_excepts_it() {
    let mut s = Scenario::new("deny-open").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    wait_guarded(&ns).await;

    let api: Api<NetworkPolicy> = Api::namespaced(member().await, &ns);
    let message = refusal(api.create(&PostParams::default(), &allow_all(&ns)).await);
    assert!(message.contains("egress rule 0 has no `to`"), "{message}");
    assert!(
        message.contains("except: [169.254.169.254/32]"),
        "says how to fix it: {message}"
    );
    assert!(message.contains("system:masters"), "says who may override: {message}");

    // A rule whose ipBlock contains IMDS without excepting it is refused too, on any port.
    let mut wide = https_except_imds(&ns);
    wide.spec.as_mut().unwrap().egress.as_mut().unwrap()[0]
        .to
        .as_mut()
        .unwrap()[0]
        .ip_block
        .as_mut()
        .unwrap()
        .except = None;
    let message = refusal(api.create(&PostParams::default(), &wide).await);
    assert!(message.contains("egress rule 0 has an ipBlock"), "{message}");

    api.create(&PostParams::default(), &https_except_imds(&ns))
        .await
        .expect("0.0.0.0/0 except IMDS on 443 is admitted");
    s.wait_status(&baseline, "compliant with the extra policy", |st| {
        st.namespaces.compliant == 1 && st.namespaces.bypassed == 0
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn with_engine_cilium_a_member_may_allow_all_egress_the_deny_still_holds() {
    let mut s = Scenario::new("deny-cilium").await;
    let mut spec = aks_spec(&s.label);
    spec.metadata_egress.as_mut().unwrap().engine = kube_baseline::api::Engine::Cilium;
    let baseline = s.baseline("aks", spec).await;
    let ns = s.namespace("team").await;
    // The baseline's RoleBindings (the member's edit) and its deny policy are there.
    s.wait_condition(&baseline, "Ready", "True").await;
    // Admission guards the namespace (its parameter cache knows the baseline): deleting the
    // managed binding is refused.
    let bindings: Api<RoleBinding> = Api::namespaced(member().await, &ns);
    let dry_run = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(&format!("admission guards {ns}"), WAIT, || async {
        matches!(bindings.delete("team-dev", &dry_run).await, Err(kube::Error::Api(s)) if s.code == 403).then_some(())
    })
    .await;
    // A Cilium deny beats every allow: the team's allow-all is admitted, and no bypass.
    let api: Api<NetworkPolicy> = Api::namespaced(member().await, &ns);
    api.create(&PostParams::default(), &allow_all(&ns))
        .await
        .expect("an allow-all is admitted beside a Cilium deny");
    s.wait_status(&baseline, "compliant with the allow-all", |st| {
        st.namespaces.compliant == 1 && st.namespaces.bypassed == 0
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn warn_admits_with_a_warning_and_the_bypass_is_reported() {
    let mut s = Scenario::new("warn-open").await;
    let spec = SecurityBaselineSpec {
        admission: Some(AdmissionMode::Warn),
        ..aks_spec(&s.label)
    };
    let baseline = s.baseline("aks", spec).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    let manifest = serde_json::to_string(&allow_all(&ns)).unwrap();
    eventually("a dry run is warned about", WAIT, || async {
        let args = ["create", "--dry-run=server", "-f", "-"];
        let (_, _, stderr) = kubectl_as(MEMBER, &[GROUP_DEV], &args, Some(&manifest));
        stderr.contains("Warning").then_some(())
    })
    .await;
    let (ok, _, stderr) = kubectl_as(MEMBER, &[GROUP_DEV], &["create", "-f", "-"], Some(&manifest));
    assert!(ok, "admitted under Warn: {stderr}");
    assert!(
        stderr.contains("Warning") && stderr.contains("egress rule 0 has no `to`"),
        "the member is warned: {stderr}"
    );
    s.wait_status(&baseline, "the namespace is bypassed", |st| st.namespaces.bypassed == 1)
        .await;
    s.cleanup().await;
}

#[tokio::test]
async fn with_admission_off_a_bypass_turns_the_namespace_non_compliant_and_back() {
    let mut s = Scenario::new("off-open").await;
    let spec = SecurityBaselineSpec {
        admission: Some(AdmissionMode::Off),
        ..aks_spec(&s.label)
    };
    let baseline = s.baseline("aks", spec).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    s.wait_condition(&baseline, "Ready", "True").await;

    let api: Api<NetworkPolicy> = Api::namespaced(member().await, &ns);
    api.create(&PostParams::default(), &allow_all(&ns))
        .await
        .expect("admitted with Off");
    let status = s
        .wait_status(&baseline, "Bypassed", |st| {
            st.namespaces.bypassed == 1 && st.namespaces.compliant == 0
        })
        .await;
    let problem = status
        .problems
        .iter()
        .find(|p| p.reason == "Bypassed")
        .expect("a Bypassed problem");
    assert_eq!(
        (problem.namespace.as_str(), problem.object.as_str()),
        (ns.as_str(), "NetworkPolicy/allow-all-egress")
    );
    assert!(
        problem.message.contains("every pod") && problem.message.contains("169.254.169.254/32"),
        "{}",
        problem.message
    );
    let ready = condition(&status, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Bypassed"));
    s.wait_event(&baseline, "Bypassed", "allow-all-egress").await;
    let gauge = format!("kube_baseline_namespaces{{baseline=\"{baseline}\",state=\"bypassed\"}}");
    eventually("bypassed gauge", WAIT, || async {
        (try_metric(s.metrics_addr(), &gauge).await == Some(1.0)).then_some(())
    })
    .await;
    // The operator never edits or deletes a policy it did not make.
    let kept = api.get("allow-all-egress").await.unwrap();
    assert_eq!(
        kept.spec,
        allow_all(&ns).spec.map(|mut sp| {
            sp.egress = Some(vec![Default::default()]);
            sp
        })
    );

    api.delete("allow-all-egress", &DeleteParams::default()).await.unwrap();
    s.wait_status(&baseline, "compliant again", |st| {
        st.namespaces.bypassed == 0 && st.namespaces.compliant == 1
    })
    .await;
    s.cleanup().await;
}

/// A namespace administrator of `ns` (RoleBinding to `admin` made by the test, as the admin).
async fn namespace_admin(s: &Scenario, ns: &str, user: &str) -> Client {
    let rb = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{user}-admin")),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: user.into(),
            namespace: None,
        }]),
    };
    Api::<RoleBinding>::namespaced(s.client.clone(), ns)
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
    client_as_user(user, &[]).await
}

#[tokio::test]
async fn managed_objects_cannot_be_deleted_or_changed_but_may_be_annotated() {
    let mut s = Scenario::new("tamper").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    wait_guarded(&ns).await;

    let policies: Api<NetworkPolicy> = Api::namespaced(member().await, &ns);
    let message = refusal(policies.delete(POLICY, &DeleteParams::default()).await);
    assert!(
        message.contains(&format!("is managed by kube-baseline (SecurityBaseline {baseline})"))
            && message.contains("cannot be deleted"),
        "{message}"
    );
    // Narrowing the policy to some pods leaves the others unprotected: a spec change.
    let open = json!({"spec": {"podSelector": {"matchLabels": {"app": "one"}}}});
    let message = refusal(
        policies
            .patch(POLICY, &PatchParams::default(), &Patch::Merge(&open))
            .await,
    );
    assert!(message.contains("spec cannot be changed"), "{message}");
    let unlabel = json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}});
    refusal(
        policies
            .patch(POLICY, &PatchParams::default(), &Patch::Merge(&unlabel))
            .await,
    );
    let note = json!({"metadata": {"annotations": {"team.example.com/owner": "a"}, "labels": {"team": "a"}}});
    policies
        .patch(POLICY, &PatchParams::default(), &Patch::Merge(&note))
        .await
        .expect("other tools may annotate and label");

    // RoleBindings: `edit` cannot touch them at all (RBAC); a namespace admin can, and is refused.
    let admin = namespace_admin(&s, &ns, "ns-admin@example.com").await;
    let bindings: Api<RoleBinding> = Api::namespaced(admin, &ns);
    refusal(bindings.delete("team-dev", &DeleteParams::default()).await);
    let extra = json!({"subjects": [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": GROUP_DEV},
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "intruder"}
    ]});
    let message = refusal(
        bindings
            .patch("team-dev", &PatchParams::default(), &Patch::Merge(&extra))
            .await,
    );
    assert!(message.contains("subjects and roleRef cannot be changed"), "{message}");
    let rb = s.binding(&ns, "team-dev").await.unwrap();
    assert_eq!(rb.subjects.unwrap().len(), 1);
    s.cleanup().await;
}

#[tokio::test]
async fn pod_security_cannot_be_lowered_but_a_stricter_level_set_by_hand_stays() {
    let mut s = Scenario::new("psa-floor").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    wait_guarded(&ns).await;

    // An identity that may edit namespaces (not system:masters).
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(format!("{ns}-ns-editor")),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["namespaces".into()]),
            verbs: vec!["get".into(), "patch".into(), "update".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    Api::<ClusterRole>::all(s.client.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let user = format!("{ns}-owner");
    kubectl(&[
        "create",
        "clusterrolebinding",
        &format!("{ns}-ns-editor"),
        &format!("--clusterrole={ns}-ns-editor"),
        &format!("--user={user}"),
    ]);
    let namespaces: Api<Namespace> = Api::all(client_as_user(&user, &[]).await);
    let label = |level: &str| json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": level}}});
    let message = refusal(
        namespaces
            .patch(&ns, &PatchParams::default(), &Patch::Merge(&label("privileged")))
            .await,
    );
    assert!(message.contains("may not be lower than baseline"), "{message}");
    let removed = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": null}}});
    refusal(
        namespaces
            .patch(&ns, &PatchParams::default(), &Patch::Merge(&removed))
            .await,
    );

    namespaces
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&label("restricted")))
        .await
        .expect("stricter is allowed");
    stays(
        "restricted set by hand stays",
        std::time::Duration::from_secs(3),
        || async {
            s.namespace_labels(&ns)
                .await
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str)
                == Some("restricted")
        },
    )
    .await;
    s.wait_status(&baseline, "a stricter level is compliant", |st| {
        st.namespaces.compliant == 1
    })
    .await;
    kubectl(&["delete", "clusterrolebinding,clusterrole", &format!("{ns}-ns-editor")]);
    s.cleanup().await;
}

/// Every baseline is a parameter of the protection policy, and one is dropped before the rules
/// unless a rule of its could refuse the request: a stricter baseline that does not select the
/// namespace refuses nothing there, and the baseline that selects it still refuses.
#[tokio::test]
async fn only_the_baseline_that_selects_a_namespace_refuses_writes_there() {
    let mut s = Scenario::new("two-baselines").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let mut stricter = aks_spec(&format!("{}-elsewhere", s.label));
    stricter.metadata_egress = Some(MetadataEgress {
        blocked_cidrs: vec!["169.254.169.254/32".into(), "10.0.0.0/8".into()],
        ..Default::default()
    });
    stricter.pod_security = Some(PodSecurity {
        enforce: Some(PodSecurityLevel::Restricted),
        ..Default::default()
    });
    let elsewhere = s.baseline("stricter", stricter).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    wait_guarded(&ns).await;

    // Open to what only the other baseline blocks: its rules run (the policy is open to its CIDR)
    // and find that it does not select the namespace.
    let api: Api<NetworkPolicy> = Api::namespaced(member().await, &ns);
    api.create(&PostParams::default(), &egress_to(&ns, "to-private", "10.0.0.0/8", &[]))
        .await
        .expect("10.0.0.0/8 is blocked only by a baseline that does not select the namespace");
    let message = refusal(api.create(&PostParams::default(), &allow_all(&ns)).await);
    assert!(message.contains(&format!("SecurityBaseline {baseline} ")), "{message}");
    assert!(!message.contains(&elsewhere), "{message}");

    // Pod Security: the level of the baseline that selects the namespace is enough, though the
    // other baseline enforces restricted; below it is refused.
    let user = format!("{}-labeller", s.label);
    let namespaces: Api<Namespace> = Api::all(namespace_labeller(&s, &user).await);
    let level = |l: &str| json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": l}}});
    for l in ["restricted", "baseline"] {
        namespaces
            .patch(&ns, &PatchParams::default(), &Patch::Merge(&level(l)))
            .await
            .unwrap_or_else(|e| panic!("enforce {l} is admitted: {e}"));
    }
    let message = refused_label_change(&namespaces, &ns, &level("privileged")).await;
    assert!(message.contains("may not be lower than baseline"), "{message}");
    assert!(message.contains(&format!("SecurityBaseline {baseline} ")), "{message}");
    drop_labeller(&s).await;
    s.cleanup().await;
}

#[tokio::test]
async fn deleting_the_namespace_and_the_baseline_still_completes() {
    let mut s = Scenario::new("guarded-delete").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    let other = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    s.wait_all_objects(&other).await;
    wait_guarded(&ns).await;

    delete_namespace(&s.client, &ns).await;
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    eventually("namespace deleted", std::time::Duration::from_secs(90), || async {
        namespaces.get_opt(&ns).await.unwrap().is_none().then_some(())
    })
    .await;

    s.baselines().delete(&baseline, &DeleteParams::default()).await.unwrap();
    eventually("objects collected", std::time::Duration::from_secs(90), || async {
        (s.policy(&other).await.is_none() && s.binding(&other, "team-dev").await.is_none()).then_some(())
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn an_exempted_namespace_is_not_guarded_for_the_exempted_control() {
    let mut s = Scenario::new("exempt-guard").await;
    let label = s.label.clone();
    let exempt = s.namespace("legacy").await;
    let guarded = s.namespace("team").await;
    let spec = SecurityBaselineSpec {
        exemptions: vec![Exemption {
            namespace: exempt.clone(),
            controls: vec![Control::MetadataEgress],
            reason: "vendor agent needs IMDS, SEC-1234".into(),
            expires: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::now().checked_add(SignedDuration::from_hours(1)).unwrap(),
            ),
        }],
        ..aks_spec(&label)
    };
    let baseline = s.baseline("aks", spec).await;
    s.wait_all_objects(&guarded).await;
    wait_guarded(&guarded).await;
    // The exemption reaches the admission policy through status.activeExemptions.
    s.wait_status(&baseline, "the exemption in status", |st| {
        st.active_exemptions.iter().any(|e| e.namespace == exempt)
    })
    .await;

    let member = member().await;
    Api::<NetworkPolicy>::namespaced(member.clone(), &exempt)
        .create(&PostParams::default(), &allow_all(&exempt))
        .await
        .expect("the exempted namespace is not guarded for metadataEgress");
    refusal(
        Api::<NetworkPolicy>::namespaced(member, &guarded)
            .create(&PostParams::default(), &allow_all(&guarded))
            .await,
    );
    let status = s
        .wait_status(&baseline, "exempted, not bypassed", |st| {
            st.namespaces.exempted == 1 && st.namespaces.compliant == 1
        })
        .await;
    assert_eq!(status.namespaces.bypassed, 0);
    s.cleanup().await;
}

#[tokio::test]
async fn the_adopted_mark_cannot_be_added_to_or_removed_from_managed_objects() {
    let mut s = Scenario::new("adopted-mark").await;
    s.baseline("aks", aks_spec(&s.label)).await;
    let made = s.namespace("team").await;
    // A hand-made policy of the baseline's name, in a namespace selected afterwards: adopted.
    let taken = s.unselected_namespace("taken").await;
    let handmade: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": POLICY},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]}]}
    }))
    .unwrap();
    s.policies(&taken)
        .create(&PostParams::default(), &handmade)
        .await
        .unwrap();
    kubectl(&["label", "namespace", &taken, &format!("{SUITE_LABEL}={}", s.label)]);
    s.wait_all_objects(&made).await;
    s.wait_all_objects(&taken).await;
    eventually("the hand-made policy adopted", WAIT, || async {
        s.policy(&taken)
            .await
            .filter(|np| np.annotations().contains_key(ADOPTED_ANNOTATION))
    })
    .await;
    wait_guarded(&made).await;
    wait_guarded(&taken).await;
    let mark = |value: Option<&str>| Patch::Merge(json!({"metadata": {"annotations": {ADOPTED_ANNOTATION: value}}}));

    // On a policy the baseline made, the mark would turn a later delete into a release.
    let message = refusal(
        Api::<NetworkPolicy>::namespaced(member().await, &made)
            .patch(POLICY, &PatchParams::default(), &mark(Some("true")))
            .await,
    );
    assert!(
        message.contains("annotation kubebaseline.io/adopted") && message.contains("cannot be changed"),
        "{message}"
    );
    // On a binding, the group would keep its access once the baseline is gone.
    let admin = namespace_admin(&s, &made, "ns-admin@example.com").await;
    refusal(
        Api::<RoleBinding>::namespaced(admin, &made)
            .patch("team-dev", &PatchParams::default(), &mark(Some("true")))
            .await,
    );
    // Without it, an adopted policy would be deleted instead of given back.
    refusal(
        Api::<NetworkPolicy>::namespaced(member().await, &taken)
            .patch(POLICY, &PatchParams::default(), &mark(None))
            .await,
    );

    assert!(
        !s.policy(&made)
            .await
            .unwrap()
            .annotations()
            .contains_key(ADOPTED_ANNOTATION)
    );
    let rb = s.binding(&made, "team-dev").await.unwrap();
    assert!(!rb.annotations().contains_key(ADOPTED_ANNOTATION));
    assert!(
        s.policy(&taken)
            .await
            .unwrap()
            .annotations()
            .contains_key(ADOPTED_ANNOTATION)
    );
    s.cleanup().await;
}

const IMDS_MAPPED: &str = "::ffff:169.254.169.254/128";

/// Policy `name` in `ns` whose one egress rule goes to `cidr` except `except`, on every port.
fn egress_to(ns: &str, name: &str, cidr: &str, except: &[&str]) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"ipBlock": {"cidr": cidr, "except": except}}]}]}
    }))
    .unwrap()
}

/// The merge patch that makes a policy's only egress rule go to `cidr` except `except`.
fn egress_patch(cidr: &str, except: &[&str]) -> Patch<Value> {
    Patch::Merge(json!({"spec": {"egress": [{"to": [{"ipBlock": {"cidr": cidr, "except": except}}]}]}}))
}

/// Kubernetes 1.36 refuses a new ipBlock CIDR with leading zeros, bits past the prefix length or
/// an IPv4-mapped IPv6 address (StrictIPCIDRValidation) before admission runs.
fn assert_invalid(result: kube::Result<NetworkPolicy>, why: &str) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains(why) => {}
        other => panic!("expected the API server to refuse it ({why}), got {other:?}"),
    }
}

/// Writes a NetworkPolicy in `ns` straight into etcd, as an API server before 1.36 (or with
/// StrictIPCIDRValidation off) stored it: its ingress peers hold `cidrs`, its egress goes to
/// 10.0.0.0/8. An update may reuse any CIDR the object already holds, so through it such values
/// reach admission on 1.36 as well. Returns its name once the API server serves it.
async fn stored_before_1_36(s: &Scenario, ns: &str, cidrs: &[&str]) -> String {
    let name = "legacy";
    let peers: Vec<Value> = cidrs.iter().map(|c| json!({"ipBlock": {"cidr": c}})).collect();
    let object = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "uid": unique("uid"), "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                 "ingress": [{"from": peers}],
                 "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}
    });
    let ports = std::fs::read_to_string(cluster_dir().join("ports")).expect("the control plane's ports");
    let port = ports
        .lines()
        .find_map(|l| l.strip_prefix("etcd_port="))
        .expect("etcd_port");
    let put = json!({
        "key": base64(format!("/registry/networkpolicies/{ns}/{name}").as_bytes()),
        "value": base64(object.to_string().as_bytes()),
    });
    let url = format!("http://127.0.0.1:{port}/v3/kv/put");
    let out = output_with_stdin(
        std::process::Command::new("curl").args(["-fsS", "--data-binary", "@-", &url]),
        Some(&put.to_string()),
    );
    assert!(
        out.status.success(),
        "etcd put: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the stored policy is served", WAIT, || async {
        s.policies(ns).get_opt(name).await.unwrap().map(|_| ())
    })
    .await;
    name.into()
}

/// Standard base64, which etcd's JSON gateway wants for keys and values.
fn base64(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    bytes
        .chunks(3)
        .flat_map(|chunk| {
            let n = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
            (0..4).map(move |i| {
                if i <= chunk.len() {
                    char::from(DIGITS[(n >> (18 - 6 * i) & 63) as usize])
                } else {
                    '='
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn an_ipv4_mapped_block_is_refused_as_reaching_the_ipv4_address() {
    let mut s = Scenario::new("mapped").await;
    s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    wait_guarded(&ns).await;
    let api: Api<NetworkPolicy> = Api::namespaced(member().await, &ns);

    let new = egress_to(&ns, "mapped", IMDS_MAPPED, &[]);
    assert_invalid(
        api.create(&PostParams::default(), &new).await,
        "must not have an IPv4-mapped IPv6 address",
    );
    let legacy = stored_before_1_36(&s, &ns, &[IMDS_MAPPED, "::ffff:0:0/96"]).await;
    // As the block, or as the except that was to close 0.0.0.0/0: CEL cannot compare them with
    // IPv4, and a dual-stack socket reaches 169.254.169.254 through them.
    refused_then_canonical_passes(
        &api,
        &legacy,
        &[
            (IMDS_MAPPED, &[][..], IMDS_MAPPED),
            ("::ffff:0:0/96", &[], "::ffff:0:0/96"),
            ("0.0.0.0/0", &[IMDS_MAPPED], IMDS_MAPPED),
        ],
        &["may let pods reach 169.254.169.254/32", "IPv4-mapped"],
    )
    .await;
    s.cleanup().await;
}

/// Each `(cidr, except, unparsable)` written into the stored policy `legacy` is refused, naming
/// the entry that cannot be parsed and saying `also`; then the canonical
/// `0.0.0.0/0 except 169.254.169.254/32` passes.
async fn refused_then_canonical_passes(
    api: &Api<NetworkPolicy>,
    legacy: &str,
    cases: &[(&str, &[&str], &str)],
    also: &[&str],
) {
    for (cidr, except, unparsable) in cases {
        let message = refusal(
            api.patch(legacy, &PatchParams::default(), &egress_patch(cidr, except))
                .await,
        );
        assert!(
            message.contains(&format!(
                "egress rule 0 has an ipBlock CIDR that cannot be parsed ({unparsable})"
            )) && also.iter().all(|a| message.contains(a)),
            "{message}"
        );
    }
    api.patch(
        legacy,
        &PatchParams::default(),
        &egress_patch("0.0.0.0/0", &["169.254.169.254/32"]),
    )
    .await
    .expect("0.0.0.0/0 except 169.254.169.254/32 passes");
}

#[tokio::test]
async fn a_cidr_admission_cannot_parse_is_refused_not_admitted() {
    let mut s = Scenario::new("odd-cidr").await;
    s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    wait_guarded(&ns).await;
    let api: Api<NetworkPolicy> = Api::namespaced(member().await, &ns);

    let leading_zero = "0169.254.169.254/32";
    let new = egress_to(&ns, "odd", leading_zero, &[]);
    assert_invalid(
        api.create(&PostParams::default(), &new).await,
        "must not have leading 0s",
    );
    let odd = [leading_zero, "169.254.169.254/032", "169.254.0.1/16"];
    let legacy = stored_before_1_36(&s, &ns, &odd).await;
    // cidr() errors on the first two (failurePolicy Ignore would admit them); the third is
    // ambiguous (169.254.0.0/16 or 169.254.0.1/32?) and does not close IMDS under the second reading.
    refused_then_canonical_passes(
        &api,
        &legacy,
        &[
            (leading_zero, &[][..], leading_zero),
            ("0.0.0.0/0", &["169.254.169.254/032"], "169.254.169.254/032"),
            ("0.0.0.0/0", &["169.254.0.1/16"], "169.254.0.1/16"),
        ],
        &["canonical form"],
    )
    .await;
    s.cleanup().await;
}

/// A user allowed to label namespaces (a common delegated right), through a ClusterRole of its
/// own for this test.
async fn namespace_labeller(s: &Scenario, user: &str) -> Client {
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": format!("e2e-labeller-{}", s.label)},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "patch", "update"]}]
    }))
    .unwrap();
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("e2e-labeller-{}", s.label)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("e2e-labeller-{}", s.label)},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]
    }))
    .unwrap();
    let _ = Api::<ClusterRole>::all(s.client.clone())
        .create(&PostParams::default(), &role)
        .await;
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(s.client.clone())
        .create(&PostParams::default(), &binding)
        .await;
    client_as_user(user, &[]).await
}

async fn drop_labeller(s: &Scenario) {
    let name = format!("e2e-labeller-{}", s.label);
    let _ = Api::<ClusterRole>::all(s.client.clone())
        .delete(&name, &DeleteParams::default())
        .await;
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(s.client.clone())
        .delete(&name, &DeleteParams::default())
        .await;
}

/// The refusal of a merge patch of namespace `ns` (asked again until the protection policy,
/// which learns of baselines through a watch, refuses it).
async fn refused_label_change(namespaces: &Api<Namespace>, ns: &str, patch: &Value) -> String {
    eventually(&format!("a label change of {ns} refused"), WAIT, || async {
        match namespaces
            .patch(ns, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 403 => Some(e.message),
            _ => None,
        }
    })
    .await
}

/// The Warning Events in namespace `ns` with `reason`.
async fn namespace_events(s: &Scenario, ns: &str, reason: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test]
async fn leaving_a_baseline_is_a_warning_in_the_namespace_and_on_the_baseline_and_in_status() {
    let mut s = Scenario::new("leave").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    s.wait_status(&baseline, "selected", |st| st.namespaces.selected == 1)
        .await;
    // A delegated user removes the selecting label: allowed under the default (Dynamic).
    let user = namespace_labeller(&s, "labeller@example.com").await;
    let patch = json!({"metadata": {"labels": {SUITE_LABEL: null}}});
    Api::<Namespace>::all(user)
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("a Dynamic baseline lets a namespace leave");
    let why = "its labels changed and no longer match the baseline's namespaceSelector";
    s.wait_event(
        &baseline,
        "NamespaceLeft",
        &format!("namespace {ns} left the baseline: {why}"),
    )
    .await;
    let events = eventually("a NamespaceLeft Event in the namespace", WAIT, || async {
        let found = namespace_events(&s, &ns, "NamespaceLeft").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    assert!(events[0].note.as_deref().unwrap().contains(&baseline), "{events:?}");
    let status = s
        .wait_status(&baseline, "the departure in status", |st| !st.departures.is_empty())
        .await;
    assert_eq!(status.departures[0].namespace, ns);
    assert!(status.departures[0].reason.starts_with(why), "{:?}", status.departures);
    assert_eq!(status.namespaces.selected, 0);
    drop_labeller(&s).await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_sticky_baseline_keeps_its_namespaces_but_an_admin_may_move_one() {
    let mut s = Scenario::new("sticky").await;
    let mut spec = aks_spec(&s.label);
    spec.selection = kube_baseline::api::Selection::Sticky;
    let baseline = s.baseline("aks", spec).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    let user = namespace_labeller(&s, "sticky-labeller@example.com").await;
    let namespaces: Api<Namespace> = Api::all(user);
    let leave = json!({"metadata": {"labels": {SUITE_LABEL: "elsewhere"}}});
    let message = refused_label_change(&namespaces, &ns, &leave).await;
    assert!(message.contains("selection: Sticky"), "{message}");
    assert!(message.contains(&baseline), "{message}");
    // Other labels still change freely.
    namespaces
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"cost-center": "42"}}})),
        )
        .await
        .expect("a label that keeps the namespace selected");
    // Break-glass can move it, and the departure is reported.
    Api::<Namespace>::all(s.client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&leave))
        .await
        .expect("an admin may");
    s.wait_event(&baseline, "NamespaceLeft", &ns).await;
    drop_labeller(&s).await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_team_sees_its_problems_in_its_namespace_and_with_team_visibility_its_baseline() {
    let mut s = Scenario::new("team-sees").await;
    let spec = SecurityBaselineSpec {
        admission: Some(AdmissionMode::Off),
        ..aks_spec(&s.label)
    };
    let baseline = s.baseline("aks", spec).await;
    let ns = s.namespace("team").await;
    s.wait_all_objects(&ns).await;
    s.wait_condition(&baseline, "Ready", "True").await;
    let member = member().await;
    Api::<NetworkPolicy>::namespaced(member.clone(), &ns)
        .create(&PostParams::default(), &allow_all(&ns))
        .await
        .expect("admitted with Off");
    // The Bypassed problem is an Event in the team's namespace, about its policy, readable by
    // the team (edit through the baseline's own binding).
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(member.clone(), &ns);
    let event = eventually("a Bypassed Event the member reads in its namespace", WAIT, || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("Bypassed")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("allow-all-egress")
            })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.note.as_deref().unwrap().contains(&baseline), "{event:?}");

    // Baselines are cluster-scoped: the member reads them only with team-visibility's viewer
    // role bound to its group.
    let baselines: Api<kube_baseline::api::SecurityBaseline> = Api::all(member.clone());
    assert!(matches!(baselines.get(&baseline).await, Err(kube::Error::Api(e)) if e.code == 403));
    kubectl(&[
        "apply",
        "--server-side",
        "-f",
        repo_root()
            .join("config/components/team-visibility/roles.yaml")
            .to_str()
            .unwrap(),
    ]);
    let binding_name = format!("e2e-viewers-{}", s.label);
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": binding_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kube-baseline-viewer"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": GROUP_DEV}]
    }))
    .unwrap();
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(s.client.clone());
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    // The status counts the bypass once the status writer's next pass has run, which can come
    // after the Event above.
    eventually(
        "the member reads its baseline's status, the bypass counted",
        WAIT,
        || async {
            baselines
                .get(&baseline)
                .await
                .ok()?
                .status
                .filter(|st| st.namespaces.bypassed == 1)
        },
    )
    .await;
    bindings.delete(&binding_name, &DeleteParams::default()).await.unwrap();
    s.cleanup().await;
}

/// The Deny copy of the protection policy is bound only where `kubebaseline.io/guarded=true`: the
/// operator keeps that label on exactly the namespaces an enforcing baseline selects, restores it
/// when an administrator removes it, takes it away when the namespace leaves, and no one else may
/// change it while the namespace is enforced.
#[tokio::test]
async fn the_guard_label_marks_exactly_the_enforced_namespaces_and_cannot_be_taken_away() {
    use kube_baseline::core::objects::GUARD_LABEL;
    let mut s = Scenario::new("guard").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let ns = s.namespace("team").await;
    let outside = s.unselected_namespace("outside").await;
    s.wait_all_objects(&ns).await;
    let guarded = |labels: &std::collections::BTreeMap<String, String>| {
        labels.get(GUARD_LABEL).map(String::as_str) == Some("true")
    };
    assert!(
        guarded(&s.namespace_labels(&ns).await),
        "written with the Pod Security labels"
    );

    // A user who may label namespaces cannot take it away, nor change it, while it is enforced.
    let user = namespace_labeller(&s, "guard-labeller@example.com").await;
    let namespaces: Api<Namespace> = Api::all(user);
    for value in [Value::Null, json!("false")] {
        let patch = json!({"metadata": {"labels": {GUARD_LABEL: value}}});
        let message = refused_label_change(&namespaces, &ns, &patch).await;
        assert!(
            message.contains(GUARD_LABEL) && message.contains(&baseline),
            "{message}"
        );
        assert!(message.contains("system:masters"), "says who may override: {message}");
    }

    // Break-glass may; the operator puts it back.
    let admin: Api<Namespace> = Api::all(s.client.clone());
    let unguard = json!({"metadata": {"labels": {GUARD_LABEL: null}}});
    admin
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&unguard))
        .await
        .expect("an administrator may remove it");
    eventually("the guard label restored", WAIT, || async {
        guarded(&s.namespace_labels(&ns).await).then_some(())
    })
    .await;
    assert!(
        !s.namespace_labels(&outside).await.contains_key(GUARD_LABEL),
        "a namespace no baseline selects is not guarded"
    );
    // Setting it is never refused (it only adds checks), and it is not the operator's to remove.
    let guard = json!({"metadata": {"labels": {GUARD_LABEL: "true"}}});
    namespaces
        .patch(&outside, &PatchParams::default(), &Patch::Merge(&guard))
        .await
        .expect("anyone who may label a namespace may guard it");

    // Leaving (a delegated user may, under Dynamic selection) takes it away, and the user may
    // remove it with the same write.
    let leave = json!({"metadata": {"labels": {SUITE_LABEL: null}}});
    namespaces
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&leave))
        .await
        .expect("a Dynamic baseline lets a namespace leave");
    eventually("the guard label removed once the namespace left", WAIT, || async {
        (!s.namespace_labels(&ns).await.contains_key(GUARD_LABEL)).then_some(())
    })
    .await;
    // An Audit baseline writes nothing, not even the guard label.
    let audit_label = unique("guard-audit");
    let mut audit = aks_spec(&audit_label);
    audit.mode = kube_baseline::api::Mode::Audit;
    let audit_baseline = s.baseline("audit", audit).await;
    let audited = create_namespace(&s.client, "audited", &[(SUITE_LABEL, audit_label.as_str())]).await;
    s.wait_status(&audit_baseline, "the namespace selected", |st| {
        st.namespaces.selected >= 1
    })
    .await;
    stays(
        "no guard label under an Audit baseline",
        std::time::Duration::from_secs(2),
        || async { !s.namespace_labels(&audited).await.contains_key(GUARD_LABEL) },
    )
    .await;
    delete_namespace(&s.client, &audited).await;
    drop_labeller(&s).await;
    s.cleanup().await;
}
