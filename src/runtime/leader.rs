//! Leader election on a `coordination.k8s.io` Lease: only the leader runs the controller (and so
//! writes); a standby takes over when the leader's lease expires.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::error::{Error, Result};

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
}

impl Leadership {
    /// Starts campaigning; the lease is created when missing.
    pub async fn campaign(client: Client, s: &LeaseSettings) -> Result<Self> {
        let secs = s.duration.as_secs().max(2);
        let manager = LeaseManagerBuilder::new(client, &s.name)
            .with_namespace(&s.namespace)
            .with_identity(&s.identity)
            .with_create_mode(LeaseCreateMode::AutoCreate)
            .with_duration(secs)
            // Renew at half the duration: the fence (below) gives up at four fifths.
            .with_grace((secs / 2).max(1))
            .with_field_manager("kube-baseline-leader")
            .build()
            .await
            .map_err(Error::Lease)?;
        let (is_leader, task) = manager.watch().await;
        Ok(Self { is_leader, task })
    }

    /// Resolves once this process leads.
    pub async fn acquired(&mut self) -> Result<()> {
        self.is_leader
            .wait_for(|l| *l)
            .await
            .map_err(|_| Error::LeaseManagerStopped)?;
        info!("became leader");
        Ok(())
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

/// Watches this process's own hold on the lease, on its own clock, independently of the lease
/// manager (which keeps reporting leadership while its renewals fail). Resolves when the lease
/// can no longer be confirmed: another holder, a renewal older than the lease duration minus a
/// margin, or no successful read for that long (a dead or black-holed connection). The caller
/// must then stop writing at once: a standby may take over when the lease expires.
pub async fn fence(client: Client, s: LeaseSettings) -> String {
    let api: kube::Api<Lease> = kube::Api::namespaced(client, &s.namespace);
    // Stop a fifth of the duration before the lease could expire on the API server.
    let budget = s.duration.mul_f64(0.8);
    let period = (s.duration / 5).max(Duration::from_millis(200));
    let mut confirmed = Instant::now();
    loop {
        tokio::time::sleep(period).await;
        match tokio::time::timeout(period, api.get(&s.name)).await {
            Ok(Ok(lease)) => {
                let spec = lease.spec.unwrap_or_default();
                if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
                    return format!("the lease is held by {:?}", spec.holder_identity);
                }
                let renewed = spec.renew_time.map(|t| t.0);
                let age = renewed.map(|t| Timestamp::now().duration_since(t).unsigned_abs());
                match age {
                    Some(age) if age < budget => confirmed = Instant::now() - age,
                    Some(age) => return format!("the lease was last renewed {age:?} ago"),
                    None => return "the lease has no renew time".into(),
                }
            }
            Ok(Err(e)) => warn!(error = %e, "could not read the lease"),
            Err(_) => warn!("reading the lease timed out"),
        }
        if confirmed.elapsed() >= budget {
            return format!("the lease could not be confirmed for {:?}", confirmed.elapsed());
        }
    }
}
