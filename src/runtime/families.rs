//! Keeps the cluster's address families ([`crate::core::families`]) current: read before the
//! controller starts, then every minute. A change re-renders every namespace; the policy is
//! replaced in one apply, so its IPv4 block (and the metadata endpoint's except) never goes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::Client;
use kube::api::{Api, ListParams};
use tracing::{info, warn};

use crate::core::families::ClusterFamilies;
use crate::runtime::context::Context;

const EVERY: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(10);
/// Enough nodes to see every family pods get; the list stays one small page at any size.
const NODES_SAMPLED: u32 = 50;

/// The cluster's families now, or None when neither the Service nor the nodes could be read.
pub async fn read(client: &Client) -> Result<ClusterFamilies, String> {
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

/// The families to start with: what the cluster says, else IPv4 (see
/// [`ClusterFamilies::unknown`]).
pub async fn initial(client: &Client) -> ClusterFamilies {
    match read(client).await {
        Ok(f) => {
            info!(families = ?f.families, source = %f.source, "the cluster's address families");
            f
        }
        Err(why) => {
            warn!(%why, "the cluster's address families are not known; IPv4 assumed");
            ClusterFamilies::unknown(&format!("not known ({why})"))
        }
    }
}

/// Reads the families every minute; on a change, stores them and asks for every namespace to
/// be reconciled again. A failed read keeps what was known.
pub async fn keep_current(
    ctx: Arc<Context>,
    client: Client,
    reconcile_all: futures::channel::mpsc::UnboundedSender<()>,
) {
    loop {
        tokio::time::sleep(EVERY).await;
        let now = match read(&client).await {
            Ok(f) => f,
            Err(why) => {
                warn!(%why, "could not read the cluster's address families; keeping the last known");
                continue;
            }
        };
        let changed = {
            let mut current = ctx.cluster_families.write().unwrap();
            let changed = current.families != now.families;
            *current = now.clone();
            changed
        };
        if changed {
            info!(families = ?now.families, source = %now.source, "the cluster's address families changed");
            ctx.status_changed.notify_one();
            let _ = reconcile_all.unbounded_send(());
        }
    }
}
