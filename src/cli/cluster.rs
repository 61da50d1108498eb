//! Read-only access to a live cluster for the subcommands: a client from a kubeconfig, one
//! consistent read of what the judgement needs, and errors that say what to do.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams, ObjectMeta, PartialObjectMeta};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};

use crate::api::SecurityBaseline;
use crate::core::cilium::CiliumNetworkPolicy;
use crate::core::cluster::Cluster;

/// Which cluster to read (kubectl's flags and the KUBECONFIG variable).
#[derive(Args, Clone, Debug, Default)]
pub struct ClusterArgs {
    /// Path to a kubeconfig (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// A client for the chosen cluster, with request deadlines (a read-only tool must not hang).
    pub async fn client(&self) -> anyhow::Result<Client> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| anyhow::anyhow!("cannot read the kubeconfig {}: {e}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            None if self.context.is_some() => Config::from_kubeconfig(&options).await.map_err(no_config)?,
            None => Config::infer().await.map_err(no_config)?,
        };
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(30));
        if let Ok(agent) = format!("kube-baseline-cli/{}", env!("CARGO_PKG_VERSION")).parse() {
            config.headers.push((http::header::USER_AGENT, agent));
        }
        Ok(Client::try_from(config)?)
    }
}

fn no_config(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "no Kubernetes configuration found: set KUBECONFIG or pass --kubeconfig FILE (and --context NAME), or run inside a cluster ({e})"
    )
}

/// Turns an API error into what the user must do about it.
pub fn explain(e: kube::Error, verb: &str, resource: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
            "RBAC denied: this identity may not {verb} {resource} in all namespaces ({}). audit and render --diff need get and list on namespaces, networkpolicies.networking.k8s.io, rolebindings.rbac.authorization.k8s.io and securitybaselines.kubebaseline.io (the ClusterRole view does not include securitybaselines: see docs/gitops.md, or config/components/team-visibility)",
            s.message
        ),
        kube::Error::Api(s) if s.code == 401 => anyhow::anyhow!(
            "the API server did not accept the credentials of this kubeconfig ({}): log in again (az aks get-credentials, kubelogin) or pick another --context",
            s.message
        ),
        kube::Error::Api(s) if s.code == 404 && resource.contains("securitybaselines") => anyhow::anyhow!(
            "the SecurityBaseline CRD is not installed in this cluster: install kube-baseline (see docs/install.md) or pass the baselines as files with -f"
        ),
        _ => anyhow::anyhow!("cannot {verb} {resource}: {e}"),
    }
}

/// Everything a judgement reads, listed once per kind (a consistent enough picture for a
/// report; `--wait` reads again).
#[derive(Default)]
pub struct Snapshot {
    /// The address families the cluster uses and its policy engine (IPv4 and NetworkPolicy
    /// assumed when they cannot be read).
    pub cluster: Cluster,
    pub namespaces: Vec<ObjectMeta>,
    pub policies: BTreeMap<String, BTreeMap<String, NetworkPolicy>>,
    pub bindings: BTreeMap<String, BTreeMap<String, RoleBinding>>,
    /// Empty where the API does not serve CiliumNetworkPolicies.
    pub cilium_policies: BTreeMap<String, BTreeMap<String, CiliumNetworkPolicy>>,
}

impl Snapshot {
    pub async fn read(client: &Client) -> anyhow::Result<Self> {
        let lp = ListParams::default();
        let namespaces = Api::<Namespace>::all(client.clone())
            .list_metadata(&lp)
            .await
            .map_err(|e| explain(e, "list", "namespaces"))?
            .items
            .into_iter()
            .map(|n: PartialObjectMeta<Namespace>| n.metadata)
            .collect();
        let mut policies: BTreeMap<String, BTreeMap<String, NetworkPolicy>> = BTreeMap::new();
        for p in Api::<NetworkPolicy>::all(client.clone())
            .list(&lp)
            .await
            .map_err(|e| explain(e, "list", "networkpolicies.networking.k8s.io"))?
        {
            policies
                .entry(p.namespace().unwrap_or_default())
                .or_default()
                .insert(p.name_any(), p);
        }
        let mut bindings: BTreeMap<String, BTreeMap<String, RoleBinding>> = BTreeMap::new();
        for b in Api::<RoleBinding>::all(client.clone())
            .list(&lp)
            .await
            .map_err(|e| explain(e, "list", "rolebindings.rbac.authorization.k8s.io"))?
        {
            bindings
                .entry(b.namespace().unwrap_or_default())
                .or_default()
                .insert(b.name_any(), b);
        }
        let cluster = crate::runtime::cluster::read(client, None).await;
        let mut cilium_policies: BTreeMap<String, BTreeMap<String, CiliumNetworkPolicy>> = BTreeMap::new();
        if cluster.engine.cilium_policies_served {
            for p in Api::<CiliumNetworkPolicy>::all(client.clone())
                .list(&lp)
                .await
                .map_err(|e| explain(e, "list", "ciliumnetworkpolicies.cilium.io"))?
            {
                cilium_policies
                    .entry(p.namespace().unwrap_or_default())
                    .or_default()
                    .insert(p.name_any(), p);
            }
        }
        Ok(Self {
            cluster,
            cilium_policies,
            namespaces,
            policies,
            bindings,
        })
    }
}

/// The baselines stored in the cluster.
pub async fn baselines(client: &Client) -> anyhow::Result<Vec<SecurityBaseline>> {
    Ok(Api::<SecurityBaseline>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| explain(e, "list", "securitybaselines.kubebaseline.io"))?
        .items)
}
