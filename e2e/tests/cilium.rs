//! The metadata policy on Cilium, end to end: Cilium's own CRDs (v1.20.2, from its Go module)
//! are installed in the local control plane, so the API server validates every
//! CiliumNetworkPolicy the operator writes against Cilium's schema. No Cilium agent runs here:
//! one test makes the evidence of one (a CiliumNode object) appear and go, for engine Auto.

#[path = "../harness/mod.rs"]
mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use harness::scenario::*;
use harness::*;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kube_baseline::api::{Control, Engine, Exemption, MetadataEgress, Mode, ResolvedEngine, SecurityBaselineSpec};
use kube_baseline::core::cilium::CiliumNetworkPolicy;
use serde_json::json;

fn spec_with(label: &str, engine: Engine) -> SecurityBaselineSpec {
    let mut spec = aks_spec(label);
    spec.metadata_egress = Some(MetadataEgress {
        engine,
        blocked_cidrs: vec!["169.254.169.254/32".into(), "168.63.129.16/32".into()],
        ..Default::default()
    });
    spec
}

fn cilium_policies(client: &Client, ns: &str) -> Api<CiliumNetworkPolicy> {
    Api::namespaced(client.clone(), ns)
}

/// The deny policy's spec as the API server stored it.
fn stored_spec(p: &CiliumNetworkPolicy) -> serde_json::Value {
    serde_json::to_value(p.spec.as_ref().expect("a spec")).unwrap()
}

fn the_deny_policy() -> serde_json::Value {
    json!({
        "endpointSelector": {},
        "egressDeny": [{"toCIDRSet": [{"cidr": "168.63.129.16/32"}, {"cidr": "169.254.169.254/32"}]}],
        "enableDefaultDeny": {"egress": false, "ingress": false}
    })
}

async fn wait_cilium_policy(client: &Client, ns: &str, what: &str, check: impl Fn(&CiliumNetworkPolicy) -> bool) {
    let api = cilium_policies(client, ns);
    eventually(what, WAIT, || async {
        api.get_opt(POLICY).await.ok().flatten().filter(&check)
    })
    .await;
}

async fn wait_no_network_policy(s: &Scenario, ns: &str) {
    eventually("no NetworkPolicy", WAIT, || async {
        s.policy(ns).await.is_none().then_some(())
    })
    .await;
}

async fn wait_engine(
    s: &Scenario,
    baseline: &str,
    engine: ResolvedEngine,
) -> kube_baseline::api::SecurityBaselineStatus {
    eventually(&format!("status.engine {engine:?}"), WAIT, || async {
        s.status(baseline)
            .await
            .filter(|st| st.engine.as_ref().is_some_and(|e| e.engine == engine))
    })
    .await
}

#[tokio::test]
async fn on_cilium_a_namespace_gets_the_deny_policy_instead_of_the_network_policy() {
    let mut s = Scenario::new("cilium-deny").await;
    let baseline = s.baseline("aks", spec_with(&s.label, Engine::Cilium)).await;
    let ns = s.namespace("team").await;
    wait_cilium_policy(&s.client, &ns, "the deny policy", |p| {
        stored_spec(p) == the_deny_policy()
    })
    .await;
    let cnp = cilium_policies(&s.client, &ns).get(POLICY).await.unwrap();
    assert_eq!(cnp.labels()["app.kubernetes.io/managed-by"], "kube-baseline");
    assert_eq!(cnp.labels()["kubebaseline.io/baseline"], baseline);
    let owner = &cnp.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("SecurityBaseline", Some(true))
    );
    // Everything else of the baseline is written as on any engine, and no NetworkPolicy.
    assert!(s.binding(&ns, "team-dev").await.is_some());
    stays("no NetworkPolicy on Cilium", Duration::from_secs(2), || async {
        s.policy(&ns).await.is_none()
    })
    .await;
    let status = wait_engine(&s, &baseline, ResolvedEngine::Cilium).await;
    assert!(status.engine.unwrap().reason.contains("metadataEgress.engine"));
    let status = s.wait_condition(&baseline, "Ready", "True").await;
    assert_eq!(status.namespaces.compliant, 1);
    let uncertain = condition(&status, "EngineUncertain").expect("an EngineUncertain condition");
    assert_eq!(uncertain.status, "False");

    // Audit on Cilium: the missing deny policy is drift, and nothing is written.
    let audit = s
        .baseline(
            "audit",
            SecurityBaselineSpec {
                mode: Mode::Audit,
                ..spec_with(&format!("{}-audit", s.label), Engine::Cilium)
            },
        )
        .await;
    let audit_label = format!("{}-audit", s.label);
    let audited = create_namespace(&s.client, "audited", &[(SUITE_LABEL, &audit_label)]).await;
    let status = eventually("Audit reports the missing deny policy", WAIT, || async {
        s.status(&audit).await.filter(|st| {
            st.problems
                .iter()
                .any(|p| p.object == format!("CiliumNetworkPolicy/{POLICY}") && p.reason == "Drift")
        })
    })
    .await;
    assert_eq!(status.namespaces.drifted, 1);
    assert!(
        cilium_policies(&s.client, &audited)
            .get_opt(POLICY)
            .await
            .unwrap()
            .is_none(),
        "an Audit baseline writes nothing"
    );
    delete_namespace(&s.client, &audited).await;
    s.cleanup().await;
}

#[tokio::test]
async fn on_cilium_a_deleted_or_narrowed_deny_policy_is_repaired() {
    let mut s = Scenario::new("cilium-repair").await;
    let baseline = s.baseline("aks", spec_with(&s.label, Engine::Cilium)).await;
    let ns = s.namespace("team").await;
    let api = cilium_policies(&s.client, &ns);
    wait_cilium_policy(&s.client, &ns, "the deny policy", |p| {
        stored_spec(p) == the_deny_policy()
    })
    .await;

    let first = api.get(POLICY).await.unwrap().uid().unwrap();
    api.delete(POLICY, &DeleteParams::default()).await.unwrap();
    wait_cilium_policy(&s.client, &ns, "the deny policy, recreated", |p| {
        p.uid().as_deref() != Some(first.as_str()) && stored_spec(p) == the_deny_policy()
    })
    .await;

    // An admin narrows the deny to one port (the rest of the blocked addresses would open),
    // and another turns default-deny on (every other egress of every pod would close).
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    let narrowed = json!({"spec": {"egressDeny": [{"toCIDRSet": [{"cidr": "169.254.169.254/32"}],
                                                 "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}});
    api.patch(POLICY, &edit, &Patch::Merge(narrowed)).await.unwrap();
    wait_cilium_policy(&s.client, &ns, "the narrowed deny repaired", |p| {
        stored_spec(p) == the_deny_policy()
    })
    .await;
    let default_deny = json!({"spec": {"enableDefaultDeny": {"egress": true}}});
    api.patch(POLICY, &edit, &Patch::Merge(default_deny)).await.unwrap();
    wait_cilium_policy(&s.client, &ns, "default-deny turned off again", |p| {
        stored_spec(p) == the_deny_policy()
    })
    .await;
    s.wait_event(
        &baseline,
        "Updated",
        &format!("CiliumNetworkPolicy/{POLICY} in namespace {ns}"),
    )
    .await;

    // An exemption of the control prunes it; when the exemption goes, it comes back.
    let mut spec = spec_with(&s.label, Engine::Cilium);
    spec.exemptions = vec![Exemption {
        namespace: ns.clone(),
        controls: vec![Control::MetadataEgress],
        reason: "e2e: an exemption on Cilium".into(),
        expires: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(1),
        ),
    }];
    s.apply_baseline(&baseline, spec).await;
    eventually("the deny policy pruned while exempted", WAIT, || async {
        api.get_opt(POLICY).await.unwrap().is_none().then_some(())
    })
    .await;
    s.apply_baseline(&baseline, spec_with(&s.label, Engine::Cilium)).await;
    wait_cilium_policy(&s.client, &ns, "the deny policy back after the exemption", |p| {
        stored_spec(p) == the_deny_policy()
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn on_cilium_a_team_allow_all_policy_is_not_a_bypass() {
    let mut s = Scenario::new("cilium-allow").await;
    let cilium = s.baseline("cilium", spec_with(&s.label, Engine::Cilium)).await;
    let ns = s.namespace("team").await;
    wait_cilium_policy(&s.client, &ns, "the deny policy", |p| {
        stored_spec(p) == the_deny_policy()
    })
    .await;
    s.wait_status(&cilium, "compliant", |st| st.namespaces.compliant == 1)
        .await;
    // A team's allow-all egress policy, made by an admin.
    let open: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "allow-all-egress"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
    }))
    .unwrap();
    s.policies(&ns).create(&PostParams::default(), &open).await.unwrap();
    // A Cilium deny beats every allow: the namespace stays compliant.
    stays("compliant with a team allow-all", Duration::from_secs(3), || async {
        let st = s.status(&cilium).await;
        let ok = st
            .as_ref()
            .is_some_and(|st| st.namespaces.compliant == 1 && st.namespaces.bypassed == 0);
        if !ok {
            eprintln!("status with a team allow-all: {st:?}");
        }
        ok
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn on_cilium_a_same_named_policy_is_adopted_then_released_with_its_content() {
    let mut s = Scenario::new("cilium-adopt").await;
    let ns = s.namespace("team").await;
    // A team's own policy under the baseline's name, there before the baseline.
    let theirs: CiliumNetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": POLICY, "labels": {"team": "payments"}},
        "spec": {"endpointSelector": {}, "egressDeny": [{"toCIDRSet": [{"cidr": "169.254.169.254/32"}]}]}
    }))
    .unwrap();
    let api = cilium_policies(&s.client, &ns);
    api.create(&PostParams::default(), &theirs).await.unwrap();
    let mut spec = spec_with(&s.label, Engine::Cilium);
    spec.deletion_policy = Default::default();
    let baseline = s.baseline("aks", spec).await;
    wait_cilium_policy(&s.client, &ns, "adopted and made the deny policy", |p| {
        stored_spec(p) == the_deny_policy()
            && p.annotations().get("kubebaseline.io/adopted").map(String::as_str) == Some("true")
    })
    .await;
    s.wait_event(
        &baseline,
        "Adopted",
        &format!("CiliumNetworkPolicy/{POLICY} in namespace {ns}"),
    )
    .await;
    // Deleting the baseline releases what it adopted: the policy stays, without our marks.
    s.baselines().delete(&baseline, &DeleteParams::default()).await.unwrap();
    wait_cilium_policy(&s.client, &ns, "released", |p| {
        !p.labels().contains_key("kubebaseline.io/baseline")
            && !p.annotations().contains_key("kubebaseline.io/adopted")
            && p.owner_references().is_empty()
    })
    .await;
    let kept = api.get(POLICY).await.unwrap();
    assert_eq!(kept.labels().get("team").map(String::as_str), Some("payments"));
    assert_eq!(stored_spec(&kept), the_deny_policy(), "the content stays");
    s.cleanup().await;
}

/// When the policies of namespace `ns` were created and deleted, as resourceVersions: every
/// kind's come from one etcd revision sequence, so they order writes across kinds.
#[derive(Default, Debug)]
struct Timeline {
    created: BTreeMap<&'static str, u64>,
    deleted: BTreeMap<&'static str, u64>,
}

/// Watches both kinds in `ns` until `new` has been created and `old` deleted (or 40 s).
async fn timeline(
    client: Client,
    ns: String,
    new: &'static str,
    old: &'static str,
) -> tokio::task::JoinHandle<Timeline> {
    fn rv(m: &kube::api::ObjectMeta) -> u64 {
        m.resource_version.as_deref().unwrap().parse().unwrap()
    }
    fn metadata<K: kube::Resource>(
        kind: &'static str,
        e: watcher::Event<K>,
    ) -> (&'static str, watcher::Event<kube::api::ObjectMeta>) {
        use watcher::Event::*;
        let e = match e {
            Apply(o) => Apply(o.meta().clone()),
            InitApply(o) => InitApply(o.meta().clone()),
            Delete(o) => Delete(o.meta().clone()),
            Init => Init,
            InitDone => InitDone,
        };
        (kind, e)
    }
    let np = watcher(
        Api::<NetworkPolicy>::namespaced(client.clone(), &ns),
        watcher::Config::default(),
    )
    .map(|e| e.map(|e| metadata("NetworkPolicy", e)));
    let cnp = watcher(
        Api::<CiliumNetworkPolicy>::namespaced(client, &ns),
        watcher::Config::default(),
    )
    .map(|e| e.map(|e| metadata("CiliumNetworkPolicy", e)));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut t = Timeline::default();
        let mut events = futures::stream::select(np, cnp).boxed();
        let (mut listed, mut ready) = (0, Some(ready_tx));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        while !(t.created.contains_key(new) && t.deleted.contains_key(old)) {
            let Ok(Some(Ok((kind, event)))) = tokio::time::timeout_at(deadline, events.next()).await else {
                break;
            };
            match event {
                watcher::Event::InitDone => {
                    listed += 1;
                    if listed == 2 {
                        let _ = ready.take().map(|r| r.send(()));
                    }
                }
                // Only objects made after the lists count as created.
                watcher::Event::Apply(m) if listed == 2 => {
                    t.created.entry(kind).or_insert(rv(&m));
                }
                watcher::Event::Delete(m) => {
                    t.deleted.insert(kind, rv(&m));
                }
                _ => {}
            }
        }
        t
    });
    ready_rx.await.expect("both watches listed");
    task
}

#[tokio::test]
async fn switching_engines_writes_the_new_policy_before_the_old_one_goes() {
    let mut s = Scenario::new("cilium-switch").await;
    let baseline = s.baseline("aks", spec_with(&s.label, Engine::NetworkPolicy)).await;
    let ns = s.namespace("team").await;
    s.wait_policy(&ns).await;
    wait_engine(&s, &baseline, ResolvedEngine::NetworkPolicy).await;

    // NetworkPolicy -> Cilium: the deny policy exists before the NetworkPolicy is deleted.
    let watch = timeline(s.client.clone(), ns.clone(), "CiliumNetworkPolicy", "NetworkPolicy").await;
    s.apply_baseline(&baseline, spec_with(&s.label, Engine::Cilium)).await;
    let t = watch.await.unwrap();
    let (made, gone) = (t.created.get("CiliumNetworkPolicy"), t.deleted.get("NetworkPolicy"));
    assert!(
        matches!((made, gone), (Some(made), Some(gone)) if made < gone),
        "the deny policy must be written before the NetworkPolicy is deleted: {t:?}"
    );
    wait_no_network_policy(&s, &ns).await;
    wait_engine(&s, &baseline, ResolvedEngine::Cilium).await;

    // And back.
    let watch = timeline(s.client.clone(), ns.clone(), "NetworkPolicy", "CiliumNetworkPolicy").await;
    s.apply_baseline(&baseline, spec_with(&s.label, Engine::NetworkPolicy))
        .await;
    let t = watch.await.unwrap();
    let (made, gone) = (t.created.get("NetworkPolicy"), t.deleted.get("CiliumNetworkPolicy"));
    assert!(
        matches!((made, gone), (Some(made), Some(gone)) if made < gone),
        "the NetworkPolicy must be written before the deny policy is deleted: {t:?}"
    );
    eventually("no deny policy", WAIT, || async {
        cilium_policies(&s.client, &ns)
            .get_opt(POLICY)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    s.cleanup().await;
}

fn cilium_nodes(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "cilium.io".into(),
        version: "v2".into(),
        api_version: "cilium.io/v2".into(),
        kind: "CiliumNode".into(),
        plural: "ciliumnodes".into(),
    };
    Api::all_with(client.clone(), &ar)
}

/// A CiliumNode, as a running agent keeps one for its node; deleted when dropped.
struct Agent {
    api: Api<DynamicObject>,
    name: String,
}

impl Agent {
    async fn start(client: &Client) -> Self {
        let api = cilium_nodes(client);
        let name = unique("e2e-node");
        let node: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNode",
            "metadata": {"name": name},
            "spec": {}
        }))
        .unwrap();
        api.create(&PostParams::default(), &node).await.expect("a CiliumNode");
        Self { api, name }
    }

    async fn stop(self) {
        let _ = self.api.delete(&self.name, &DeleteParams::default()).await;
    }
}

#[tokio::test]
async fn auto_writes_for_cilium_only_while_an_agent_runs_and_warns_when_only_its_crds_are_left() {
    let mut s = Scenario::new("cilium-auto").await;
    let baseline = s.baseline("aks", spec_with(&s.label, Engine::Auto)).await;
    let ns = s.namespace("team").await;

    // Cilium's CRDs are served, and no agent runs: a NetworkPolicy, loudly.
    s.wait_policy(&ns).await;
    let status = wait_engine(&s, &baseline, ResolvedEngine::NetworkPolicy).await;
    let uncertain = s.wait_condition(&baseline, "EngineUncertain", "True").await;
    let message = &condition(&uncertain, "EngineUncertain").unwrap().message;
    assert!(message.contains("no CiliumNode object exists"), "{message}");
    assert!(status.engine.unwrap().reason.starts_with("Auto:"));
    s.wait_event(&baseline, "EngineUncertain", "Cilium's policy CRD is served")
        .await;

    // An agent appears: the deny policy, then no NetworkPolicy.
    let agent = Agent::start(&s.client).await;
    wait_cilium_policy(&s.client, &ns, "the deny policy once an agent runs", |p| {
        stored_spec(p) == the_deny_policy()
    })
    .await;
    wait_no_network_policy(&s, &ns).await;
    let status = s.wait_condition(&baseline, "EngineUncertain", "False").await;
    assert_eq!(status.engine.unwrap().engine, ResolvedEngine::Cilium);

    // It goes (Cilium uninstalled, its CRDs left): back to a NetworkPolicy.
    agent.stop().await;
    s.wait_policy(&ns).await;
    eventually("no deny policy", WAIT, || async {
        cilium_policies(&s.client, &ns)
            .get_opt(POLICY)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    wait_engine(&s, &baseline, ResolvedEngine::NetworkPolicy).await;
    s.cleanup().await;
}

#[tokio::test]
async fn the_api_server_refuses_what_cilium_s_schema_refuses() {
    // The CRDs installed are Cilium's own: a policy with a malformed CIDR is refused there, so
    // what the operator writes passing means Cilium's schema accepts it.
    let client = client().await;
    cilium::install_cilium_crds();
    let ns = create_namespace(&client, "cilium-schema", &[]).await;
    let bad: CiliumNetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"endpointSelector": {}, "egressDeny": [{"toCIDRSet": [{"cidr": "169.254.169.254/33"}]}]}
    }))
    .unwrap();
    let refused = cilium_policies(&client, &ns).create(&PostParams::default(), &bad).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422),
        "{refused:?}"
    );
    delete_namespace(&client, &ns).await;
}
