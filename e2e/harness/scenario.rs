//! A test's own world: namespaces carrying a label unique to the test, and baselines that
//! select only that label, so parallel tests never see each other's objects.

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use kube_baseline::api::{
    BaselineRoleBinding, MetadataEgress, PodSecurity, PodSecurityLevel, SecurityBaseline, SecurityBaselineSpec,
    SecurityBaselineStatus,
};

use super::*;

pub const SUITE_LABEL: &str = "e2e.kubebaseline.io/scenario";
pub const WAIT: Duration = Duration::from_secs(45);
pub const GROUP_DEV: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
pub const GROUP_READ: &str = "6b1c0f7e-2a3d-4c5e-8f90-123456789abc";
pub const POLICY: &str = "restrict-instance-metadata";

/// The operator every test of this binary shares, running under the ServiceAccount and RBAC
/// that `config/default` installs. Started once, on a thread that lives as long as the test
/// process (the operator is bound to it and dies with it).
pub fn shared_operator() -> std::net::SocketAddr {
    static ADDR: OnceLock<std::net::SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            install();
            let kubeconfig = rt.block_on(operator_kubeconfig("operator-suite.kubeconfig"));
            // The cluster's engine is read every two seconds, so a test that makes Cilium's
            // agents appear (a CiliumNode) sees the switch at once.
            let op = Operator::start("suite", &kubeconfig, &["--cluster-recheck", "2s"]);
            rt.block_on(eventually("operator /readyz", WAIT, || async {
                (op.http_get("/readyz").await?.0 == 200).then_some(())
            }));
            tx.send(op.metrics_addr).unwrap();
            let _operator = op;
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("shared operator started")
    })
}

/// The full AKS baseline for namespaces labelled `SUITE_LABEL=<label>`.
pub fn aks_spec(label: &str) -> SecurityBaselineSpec {
    SecurityBaselineSpec {
        namespace_selector: Some(LabelSelector {
            match_labels: Some([(SUITE_LABEL.to_string(), label.to_string())].into()),
            ..Default::default()
        }),
        metadata_egress: Some(MetadataEgress::default()),
        role_bindings: vec![
            BaselineRoleBinding {
                name: "team-dev".into(),
                cluster_role: "edit".into(),
                groups: vec![GROUP_DEV.into()],
            },
            BaselineRoleBinding {
                name: "team-read".into(),
                cluster_role: "view".into(),
                groups: vec![GROUP_READ.into()],
            },
        ],
        pod_security: Some(PodSecurity {
            enforce: Some(PodSecurityLevel::Baseline),
            warn: Some(PodSecurityLevel::Restricted),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub struct Scenario {
    pub client: Client,
    pub label: String,
    baselines: Vec<String>,
    namespaces: Vec<String>,
}

impl Scenario {
    /// A new scenario; the shared operator is running when this returns.
    pub async fn new(prefix: &str) -> Self {
        shared_operator();
        Self {
            client: client().await,
            label: unique(prefix),
            baselines: vec![],
            namespaces: vec![],
        }
    }

    /// A scenario for a test that runs its own operator processes.
    pub async fn without_shared_operator(prefix: &str) -> Self {
        Self {
            client: client().await,
            label: unique(prefix),
            baselines: vec![],
            namespaces: vec![],
        }
    }

    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        shared_operator()
    }

    /// A namespace this scenario's baselines select.
    pub async fn namespace(&mut self, prefix: &str) -> String {
        self.namespace_with(prefix, &[]).await
    }

    pub async fn namespace_with(&mut self, prefix: &str, extra: &[(&str, &str)]) -> String {
        let mut labels = vec![(SUITE_LABEL, self.label.as_str())];
        labels.extend_from_slice(extra);
        let name = create_namespace(&self.client, prefix, &labels).await;
        self.namespaces.push(name.clone());
        name
    }

    /// A namespace the baselines do not select.
    pub async fn unselected_namespace(&mut self, prefix: &str) -> String {
        let name = create_namespace(&self.client, prefix, &[]).await;
        self.namespaces.push(name.clone());
        name
    }

    pub fn baselines(&self) -> Api<SecurityBaseline> {
        Api::all(self.client.clone())
    }

    /// Creates (or updates) a baseline named `<prefix>-<label>`; returns its name.
    pub async fn baseline(&mut self, prefix: &str, spec: SecurityBaselineSpec) -> String {
        let name = format!("{prefix}-{}", self.label);
        self.apply_baseline(&name, spec).await;
        if !self.baselines.contains(&name) {
            self.baselines.push(name.clone());
        }
        name
    }

    pub async fn apply_baseline(&self, name: &str, spec: SecurityBaselineSpec) -> SecurityBaseline {
        apply(&self.baselines(), name, &SecurityBaseline::new(name, spec)).await
    }

    pub async fn create_baseline(
        &self,
        name: &str,
        spec: SecurityBaselineSpec,
    ) -> Result<SecurityBaseline, kube::Error> {
        self.baselines()
            .create(&PostParams::default(), &SecurityBaseline::new(name, spec))
            .await
    }

    pub fn policies(&self, ns: &str) -> Api<NetworkPolicy> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub fn bindings(&self, ns: &str) -> Api<RoleBinding> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub async fn policy(&self, ns: &str) -> Option<NetworkPolicy> {
        self.policies(ns).get_opt(POLICY).await.unwrap()
    }

    pub async fn binding(&self, ns: &str, name: &str) -> Option<RoleBinding> {
        self.bindings(ns).get_opt(name).await.unwrap()
    }

    pub async fn namespace_labels(&self, ns: &str) -> std::collections::BTreeMap<String, String> {
        Api::<Namespace>::all(self.client.clone())
            .get(ns)
            .await
            .unwrap()
            .labels()
            .clone()
    }

    pub async fn wait_policy(&self, ns: &str) -> NetworkPolicy {
        eventually(&format!("policy in {ns}"), WAIT, || self.policy(ns)).await
    }

    pub async fn wait_all_objects(&self, ns: &str) {
        self.wait_policy(ns).await;
        for rb in ["team-dev", "team-read"] {
            eventually(&format!("{rb} in {ns}"), WAIT, || self.binding(ns, rb)).await;
        }
        eventually(&format!("Pod Security labels on {ns}"), WAIT, || async {
            self.namespace_labels(ns)
                .await
                .contains_key("pod-security.kubernetes.io/enforce")
                .then_some(())
        })
        .await;
    }

    pub async fn status(&self, baseline: &str) -> Option<SecurityBaselineStatus> {
        self.baselines().get(baseline).await.ok()?.status
    }

    /// Waits until `check` holds for the baseline's status and returns that status.
    pub async fn wait_status(
        &self,
        baseline: &str,
        what: &str,
        check: impl Fn(&SecurityBaselineStatus) -> bool,
    ) -> SecurityBaselineStatus {
        eventually(&format!("{baseline}: {what}"), WAIT, || async {
            self.status(baseline).await.filter(|s| check(s))
        })
        .await
    }

    pub async fn wait_condition(&self, baseline: &str, type_: &str, status: &str) -> SecurityBaselineStatus {
        self.wait_status(baseline, &format!("{type_}={status}"), |s| {
            condition(s, type_).is_some_and(|c| c.status == status)
        })
        .await
    }

    /// Events the operator published about a baseline.
    pub async fn events(&self, baseline: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(baseline))
            .collect()
    }

    pub async fn wait_event(&self, baseline: &str, reason: &str, note_contains: &str) -> Event {
        eventually(&format!("{reason} event for {baseline}"), WAIT, || async {
            self.events(baseline).await.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason) && e.note.as_deref().is_some_and(|n| n.contains(note_contains))
            })
        })
        .await
    }

    /// Deletes what the scenario created (baselines first, so their objects are collected).
    pub async fn cleanup(self) {
        for b in &self.baselines {
            let _ = self.baselines().delete(b, &DeleteParams::default()).await;
        }
        for ns in &self.namespaces {
            delete_namespace(&self.client, ns).await;
        }
    }
}

pub fn condition<'a>(status: &'a SecurityBaselineStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}
