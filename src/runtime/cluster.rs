//! Keeps what the core knows about the cluster ([`crate::core::cluster`]) current: its address
//! families and its policy engine, read before the controller starts, then every minute (the
//! `--cluster-recheck` flag). A change re-renders every namespace. A family change replaces the
//! policy in one apply, so its IPv4 block (and the metadata endpoint's except) never goes; an
//! engine change writes the new object before the old one is deleted.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use tracing::{info, warn};

use crate::core::cilium;
use crate::core::cluster::Cluster;
use crate::core::engine::ClusterEngine;
use crate::core::families::ClusterFamilies;
use crate::runtime::context::Context;

const DEADLINE: Duration = Duration::from_secs(10);
/// Enough nodes to see every family pods get; the list stays one small page at any size.
const NODES_SAMPLED: u32 = 50;

/// The cluster's families now, or None when neither the Service nor the nodes could be read.
pub async fn read_families(client: &Client) -> Result<ClusterFamilies, String> {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service = match tokio::time::timeout(DEADLINE, services.get_opt("kubernetes")).await {
        Ok(Ok(s)) => s.and_then(|s| s.spec).and_then(|s| s.ip_families),
        Ok(Err(e)) => return Err(format!("reading the default/kubernetes Service failed: {e}")),
        Err(_) => return Err("reading the default/kubernetes Service timed out".into()),
    };
    let nodes: Api<Node> = Api::all(client.clone());
    // The nodes only cross-check the Service: without them (no node has podCIDRs, or an older
    // installation's RBAC cannot list them) the Service decides.
    let pod_cidrs: Vec<String> =
        match tokio::time::timeout(DEADLINE, nodes.list(&ListParams::default().limit(NODES_SAMPLED))).await {
            Ok(Ok(list)) => list
                .items
                .into_iter()
                .filter_map(|n| n.spec)
                .flat_map(|s| s.pod_cidrs.unwrap_or_default().into_iter().chain(s.pod_cidr))
                .collect(),
            Ok(Err(e)) => {
                warn!(error = %e, "could not list nodes for their podCIDRs; the Service alone decides");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
    ClusterFamilies::from_api(service.as_deref(), &pod_cidrs)
        .ok_or_else(|| "neither the default/kubernetes Service nor the nodes name an address family".into())
}

/// What the cluster says about Cilium: whether the API serves its policies (discovery), and how
/// many CiliumNode objects show running agents. Err when discovery itself failed.
pub async fn read_engine(client: &Client) -> Result<ClusterEngine, String> {
    let version = format!("{}/{}", cilium::GROUP, cilium::VERSION);
    let served = match tokio::time::timeout(DEADLINE, client.list_api_group_resources(&version)).await {
        Ok(Ok(list)) => list.resources.iter().any(|r| r.name == cilium::PLURAL),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => false,
        Ok(Err(e)) => return Err(format!("discovery of {version} failed: {e}")),
        Err(_) => return Err(format!("discovery of {version} timed out")),
    };
    let nodes = ApiResource {
        group: cilium::GROUP.into(),
        version: cilium::VERSION.into(),
        api_version: version.clone(),
        kind: "CiliumNode".into(),
        plural: cilium::NODE_PLURAL.into(),
    };
    let nodes: Api<DynamicObject> = Api::all_with(client.clone(), &nodes);
    let cilium_nodes = match tokio::time::timeout(DEADLINE, nodes.list_metadata(&ListParams::default().limit(1))).await
    {
        Ok(Ok(list)) => {
            let more = list.metadata.remaining_item_count.unwrap_or(0).max(0) as usize;
            Some(list.items.len() + more)
        }
        // Not served at all: no agent.
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Some(0),
        Ok(Err(e)) => {
            warn!(error = %e, "could not list CiliumNode objects");
            None
        }
        Err(_) => None,
    };
    Ok(ClusterEngine {
        cilium_policies_served: served,
        cilium_nodes,
        unknown: None,
    })
}

/// Everything the core needs to know about the cluster, each part falling back on its own.
pub async fn read(client: &Client, last: Option<&Cluster>) -> Cluster {
    let families = match read_families(client).await {
        Ok(f) => f,
        Err(why) => match last {
            Some(last) => {
                warn!(%why, "could not read the cluster's address families; keeping the last known");
                last.families.clone()
            }
            None => {
                warn!(%why, "the cluster's address families are not known; IPv4 assumed");
                ClusterFamilies::unknown(&format!("not known ({why})"))
            }
        },
    };
    let engine = match read_engine(client).await {
        // A CiliumNode list that failed or timed out (a busy API server) is not news: the last
        // count stands, or every namespace would be reconciled again for nothing.
        Ok(mut e) => {
            if e.cilium_nodes.is_none()
                && let Some(last) = last
            {
                e.cilium_nodes = last.engine.cilium_nodes;
            }
            e
        }
        Err(why) => match last {
            Some(last) => {
                warn!(%why, "could not read the cluster's policy engine; keeping the last known");
                last.engine.clone()
            }
            None => {
                warn!(%why, "the cluster's policy engine is not known; NetworkPolicy assumed for Auto");
                ClusterEngine::unknown(&why)
            }
        },
    };
    Cluster { families, engine }
}

/// What to start with: what the cluster says, else IPv4 (see [`ClusterFamilies::unknown`]) and
/// NetworkPolicy.
pub async fn initial(client: &Client) -> Cluster {
    let cluster = read(client, None).await;
    let engine = cluster.engine.detected();
    info!(families = ?cluster.families.families, source = %cluster.families.source, "the cluster's address families");
    info!(engine = engine.engine.as_str(), reason = %engine.reason, "the cluster's policy engine (for engine: Auto)");
    if let Some(why) = &engine.disagreement {
        warn!(%why, "the cluster's policy engine is uncertain");
    }
    cluster
}

/// Reads the cluster again every `every`; on a change, stores it, and when what the objects are
/// made of changed (the address families, the engine Auto resolves to), asks for every
/// namespace to be reconciled again. A failed read keeps what was known.
pub async fn keep_current(
    ctx: Arc<Context>,
    client: Client,
    every: Duration,
    reconcile_all: futures::channel::mpsc::UnboundedSender<()>,
) {
    loop {
        tokio::time::sleep(every).await;
        let last = ctx.cluster.read().unwrap().clone();
        let now = read(&client, Some(&last)).await;
        if now == last {
            continue;
        }
        let (was, is) = (last.engine.detected(), now.engine.detected());
        *ctx.cluster.write().unwrap() = now.clone();
        ctx.cilium_served.send_replace(now.engine.cilium_policies_served);
        if now.families.families != last.families.families {
            info!(families = ?now.families.families, source = %now.families.source, "the cluster's address families changed");
        }
        if was != is {
            info!(engine = is.engine.as_str(), reason = %is.reason, "the cluster's policy engine (for engine: Auto) changed");
            if let Some(why) = &is.disagreement {
                warn!(%why, "the cluster's policy engine is uncertain");
            }
        }
        ctx.status_changed.notify_one();
        // (A reason's wording, such as a count of CiliumNode objects, is the status's alone.)
        if now.families.families != last.families.families || was.engine != is.engine {
            let _ = reconcile_all.unbounded_send(());
        }
    }
}
