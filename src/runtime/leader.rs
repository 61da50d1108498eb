//! Leader election on a `coordination.k8s.io` Lease: only the leader runs the controller (and so
//! writes); a standby takes over when the leader's lease expires.
//!
//! The fence that stops a leader from writing once it cannot be sure of its lease is
//! [`fence`].

mod fence;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::error::{Error, Result};
use fence::Timing;
pub use fence::{MAX_CLOCK_SKEW, fence, safety_margin};

/// Lease settings (all flags of `kube-baseline run`).
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
}

/// A held or wanted lease. Dropping [`Leadership::release`]'s receiver releases the lease.
pub struct Leadership {
    pub is_leader: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
    leases: Api<Lease>,
    settings: LeaseSettings,
}

/// How long a new leader waits before it believes it: two replicas that start together can both
/// be told they lead (the lease manager takes a free lease with a write that does not check the
/// version it read, so the later write wins), and the other's write lands within milliseconds.
const CONFIRM_AFTER: Duration = Duration::from_millis(1000);

impl Leadership {
    /// Starts campaigning; the lease is created when missing.
    pub async fn campaign(client: Client, s: &LeaseSettings) -> Result<Self> {
        let timing = Timing::new(s.duration);
        let manager = LeaseManagerBuilder::new(client.clone(), &s.name)
            .with_namespace(&s.namespace)
            .with_identity(&s.identity)
            .with_create_mode(LeaseCreateMode::AutoCreate)
            .with_duration(timing.duration.as_secs())
            // The fence (below) stops writing when a renewal is `stop_after` old; the renewals
            // come at half that age.
            .with_grace(timing.grace_secs())
            .with_field_manager("kube-baseline-leader")
            .build()
            .await
            .map_err(Error::Lease)?;
        let (is_leader, task) = manager.watch().await;
        Ok(Self {
            is_leader,
            task,
            leases: Api::namespaced(client, &s.namespace),
            settings: s.clone(),
        })
    }

    /// Resolves once this process leads: told so by the lease manager, and still the holder on
    /// the API server a moment later (see [`CONFIRM_AFTER`]). A replica that loses that race
    /// stands by instead of starting to write.
    pub async fn acquired(&mut self) -> Result<()> {
        loop {
            self.is_leader
                .wait_for(|l| *l)
                .await
                .map_err(|_| Error::LeaseManagerStopped)?;
            tokio::time::sleep(CONFIRM_AFTER).await;
            if *self.is_leader.borrow() && self.holds().await {
                info!("became leader");
                return Ok(());
            }
            info!("another replica took the lease as this one did; standing by");
        }
    }

    /// Whether the stored lease names this process as its holder (a failed read: no).
    async fn holds(&self) -> bool {
        let read = tokio::time::timeout(Duration::from_secs(5), self.leases.get_opt(&self.settings.name)).await;
        matches!(read, Ok(Ok(Some(lease)))
            if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.settings.identity.as_str()))
    }

    /// Resolves when leadership is lost after it was held.
    pub async fn lost(mut rx: watch::Receiver<bool>) {
        let _ = rx.wait_for(|l| !*l).await;
    }

    /// Releases the lease so a standby can take over at once.
    pub async fn release(self) {
        drop(self.is_leader);
        match self.task.await {
            Ok(Ok(_)) => info!("lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the lease"),
            Err(e) => tracing::warn!(error = %e, "lease task failed"),
        }
    }
}
