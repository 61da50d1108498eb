//! Nothing lost on release (issue 8): what a baseline adopted is released, not deleted, when it
//! stops applying; `deletionPolicy: Orphan` releases everything on deletion; the release
//! finalizer is there only while something is to be released.

#[path = "../harness/mod.rs"]
mod harness;

use std::time::Duration;

use harness::scenario::*;
use harness::*;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};
use kube_baseline::api::{DeletionPolicy, SecurityBaselineSpec};
use serde_json::json;

const FINALIZER: &str = "kubebaseline.io/release";
const GONE: Duration = Duration::from_secs(90);

/// The guide's hand-made policy (with a valid CIDR), made before any baseline.
fn handmade() -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": POLICY, "annotations": {"owner": "platform-team"}},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]}]}
    }))
    .unwrap()
}

fn released(np: &NetworkPolicy) -> bool {
    !np.labels().contains_key("app.kubernetes.io/managed-by")
        && !np.labels().contains_key("kubebaseline.io/baseline")
        && !np.annotations().contains_key("kubebaseline.io/adopted")
        && !np.owner_references().iter().any(|o| o.kind == "SecurityBaseline")
}

async fn adopt(s: &mut Scenario) -> (String, String) {
    let ns = s.namespace("team").await;
    s.policies(&ns)
        .create(&PostParams::default(), &handmade())
        .await
        .unwrap();
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    let np = eventually("policy adopted", WAIT, || async {
        s.policy(&ns)
            .await
            .filter(|p| p.labels().get("kubebaseline.io/baseline") == Some(&baseline))
    })
    .await;
    assert_eq!(
        np.annotations().get("kubebaseline.io/adopted").map(String::as_str),
        Some("true")
    );
    let b = s.baselines().get(&baseline).await.unwrap();
    assert!(
        b.finalizers().iter().any(|f| f == FINALIZER),
        "adopting needs the release finalizer"
    );
    (baseline, ns)
}

#[tokio::test]
async fn an_adopted_policy_outlives_its_baseline() {
    let mut s = Scenario::new("adopt-release").await;
    let (baseline, ns) = adopt(&mut s).await;
    s.baselines().delete(&baseline, &DeleteParams::default()).await.unwrap();
    eventually("baseline gone", GONE, || async {
        s.baselines().get_opt(&baseline).await.unwrap().is_none().then_some(())
    })
    .await;
    let np = s.policy(&ns).await.expect("the adopted policy is kept");
    assert!(released(&np), "released: {:?}", np.metadata);
    assert_eq!(np.annotations().get("owner").map(String::as_str), Some("platform-team"));
    // Its content is what the baseline made it: IMDS stays blocked.
    let rule = &np.spec.as_ref().unwrap().egress.as_ref().unwrap()[0];
    assert!(
        rule.to
            .iter()
            .flatten()
            .any(|p| p.ip_block.as_ref().is_some_and(|b| b.except.is_some()))
    );
    // What the baseline created itself is deleted as before.
    eventually("created bindings deleted", GONE, || async {
        s.binding(&ns, "team-dev").await.is_none().then_some(())
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn an_adopted_policy_is_released_when_its_namespace_is_no_longer_selected() {
    let mut s = Scenario::new("adopt-unselect").await;
    let (_baseline, ns) = adopt(&mut s).await;
    kubectl(&["label", "namespace", &ns, &format!("{SUITE_LABEL}-")]);
    let np = eventually("released", WAIT, || async { s.policy(&ns).await.filter(released) }).await;
    assert_eq!(np.annotations().get("owner").map(String::as_str), Some("platform-team"));
    s.cleanup().await;
}

#[tokio::test]
async fn orphan_releases_everything_and_the_finalizer_goes_with_the_baseline() {
    let mut s = Scenario::new("orphan").await;
    let ns = s.namespace("team").await;
    let spec = SecurityBaselineSpec {
        deletion_policy: DeletionPolicy::Orphan,
        ..aks_spec(&s.label)
    };
    let baseline = s.baseline("aks", spec).await;
    s.wait_all_objects(&ns).await;
    eventually("finalizer", WAIT, || async {
        let b = s.baselines().get(&baseline).await.ok()?;
        b.finalizers().iter().any(|f| f == FINALIZER).then_some(())
    })
    .await;

    s.baselines().delete(&baseline, &DeleteParams::default()).await.unwrap();
    eventually("baseline gone", GONE, || async {
        s.baselines().get_opt(&baseline).await.unwrap().is_none().then_some(())
    })
    .await;
    // Give the garbage collector time to act if anything still pointed at the baseline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let np = s.policy(&ns).await.expect("policy kept");
    assert!(released(&np), "{:?}", np.metadata);
    for name in ["team-dev", "team-read"] {
        let rb = s.binding(&ns, name).await.expect("binding kept");
        assert!(!rb.labels().contains_key("kubebaseline.io/baseline"), "{name} released");
        assert!(rb.owner_references().is_empty(), "{name} released");
    }
    let labels = s.namespace_labels(&ns).await;
    assert_eq!(
        labels.get("pod-security.kubernetes.io/enforce").map(String::as_str),
        Some("baseline")
    );
    s.cleanup().await;
}

#[tokio::test]
async fn a_baseline_with_nothing_to_release_has_no_finalizer() {
    let mut s = Scenario::new("no-finalizer").await;
    let ns = s.namespace("team").await;
    let baseline = s.baseline("aks", aks_spec(&s.label)).await;
    s.wait_all_objects(&ns).await;
    s.wait_condition(&baseline, "Ready", "True").await;
    let b = s.baselines().get(&baseline).await.unwrap();
    assert!(b.finalizers().is_empty(), "{:?}", b.finalizers());
    s.cleanup().await;
}
