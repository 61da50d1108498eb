//! The fence: when a leader must stop writing. The arithmetic. A standby (kube-lease-manager) takes over once its own wall clock
//! passes `renewTime + leaseDurationSeconds`. Unlike client-go, it starts no timer of its own when
//! it sees a renewal. `renewTime` is the leader's wall clock when it built the renewal, which is
//! before the request was sent, so timing from the send would stop too late. A renewal stamped at
//! instant t holds until t + duration − (how far the standby's wall clock is ahead of the
//! leader's). No arithmetic here can remove that skew: it is an assumption, [`MAX_CLOCK_SKEW`].
//! The leader dates the renewal on its own monotonic clock. An answer that arrives at instant r,
//! with the wall clock at w, dates it r − (w − renewTime), and never later than the read was
//! sent. That age compares two readings of the clock that wrote the stamp, so no other node's
//! clock enters it. Writing stops at that date + duration − [`safety_margin`], on a monotonic
//! timer: a slow, lost or timed-out read cannot move the deadline, nor can a later step of the
//! wall clock. A second reading of the same renewal can only bring it forward.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tracing::{debug, warn};

use super::LeaseSettings;

/// Assumed: the wall clocks of any two replicas' nodes differ by at most this. NTP keeps nodes
/// within milliseconds. A second leaves room for a node that has just booted, resumed from a
/// pause or lost its time source. A standby compares the leader's `renewTime` with its own wall
/// clock, so this allowance cannot be measured away.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(1);

/// The time a fenced leader needs to stop: the fence's task wakes, the process exits, and
/// writes already on the wire land.
const STOP_TIME: Duration = Duration::from_secs(1);

/// The shortest lease. With a shorter one the margin would leave no time between a renewal and
/// the stop it has to prevent.
const MIN_LEASE: Duration = Duration::from_secs(4);

/// How long before a standby could take over the leader stops writing: the clock skew plus the
/// stop time, or a fifth of the lease if that is more. The fifth lets the allowance grow with the
/// time clock rates have to drift apart.
pub fn safety_margin(duration: Duration) -> Duration {
    (MAX_CLOCK_SKEW + STOP_TIME).max(duration / 5)
}

/// When the lease manager renews and the fence reads, for one lease duration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Timing {
    /// In whole seconds, as the Lease stores it, and at least [`MIN_LEASE`].
    pub(super) duration: Duration,
    /// The age at which the lease manager renews (whole seconds, as it counts).
    renew_after: Duration,
    /// The age at which writing must have stopped.
    stop_after: Duration,
}

impl Timing {
    pub(super) fn new(configured: Duration) -> Self {
        let duration = Duration::from_secs(configured.max(MIN_LEASE).as_secs());
        let stop_after = stop_after(duration);
        // Renew halfway to the stop: a renewal then has the other half to be confirmed.
        let renew_after = Duration::from_secs((stop_after.as_secs() / 2).max(1));
        Self {
            duration,
            renew_after,
            stop_after,
        }
    }

    /// The lease manager's grace period: it renews that long before the lease expires.
    pub(super) fn grace_secs(&self) -> u64 {
        (self.duration - self.renew_after).as_secs()
    }

    /// The time from one renewal to the stop that the previous one set. The fence must read the
    /// renewal within this window.
    fn confirm_window(&self) -> Duration {
        self.stop_after - self.renew_after
    }

    /// Each read gets half the window, so a read that hangs still leaves time for another.
    fn read_timeout(&self) -> Duration {
        self.confirm_window() / 2
    }

    fn check_every(&self) -> Duration {
        self.confirm_window() / 4
    }
}

/// The age of a renewal at which a leader with a lease of `duration` must have stopped writing.
fn stop_after(duration: Duration) -> Duration {
    duration.saturating_sub(safety_margin(duration))
}

/// Watches this process's own hold on the lease, independently of the lease manager (which keeps
/// reporting leadership while its renewals fail). Resolves, saying why, when writing must stop:
/// another holder, or no renewal confirmed in time (see the module's arithmetic). The caller must
/// then stop writing at once.
pub async fn fence(client: Client, s: LeaseSettings) -> String {
    let api: kube::Api<Lease> = kube::Api::namespaced(client, &s.namespace);
    let timing = Timing::new(s.duration);
    // Until a read dates a renewal, only the lease manager's word stands behind the writes. The
    // first read goes out at once and must be answered within its timeout.
    let mut hold = Hold {
        renewed: None,
        until: Instant::now() + timing.read_timeout(),
    };
    loop {
        let sent = Instant::now();
        let answer = tokio::select! {
            answer = tokio::time::timeout(timing.read_timeout(), api.get(&s.name)) => answer,
            _ = tokio::time::sleep_until(hold.until.into()) => return hold.expired(),
        };
        let read = ReadTimes {
            sent,
            received: Instant::now(),
            received_wall: Timestamp::now(),
        };
        let spec = match answer {
            Ok(Ok(lease)) => Ok(lease.spec.unwrap_or_default()),
            Ok(Err(e)) => Err(format!("could not read the lease: {e}")),
            Err(_) => Err("reading the lease timed out".to_string()),
        };
        match write_deadline(hold, spec, read, &s.identity, &timing) {
            Verdict::Holds(next) => {
                if next.renewed != hold.renewed {
                    let left = next.until.saturating_duration_since(read.received);
                    debug!(renewed = ?next.renewed, ?left, "lease renewal confirmed");
                }
                hold = next;
            }
            Verdict::Unchanged(why) => {
                warn!(%why, left = ?hold.until.saturating_duration_since(read.received), "the lease is not confirmed")
            }
            Verdict::Stop(why) => return why,
        }
        tokio::select! {
            _ = tokio::time::sleep(timing.check_every()) => {}
            _ = tokio::time::sleep_until(hold.until.into()) => return hold.expired(),
        }
    }
}

/// What the fence knows: the newest renewal of ours that a read showed, and when writing must
/// stop.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Hold {
    /// None until a read has dated a renewal.
    renewed: Option<Timestamp>,
    until: Instant,
}

impl Hold {
    fn expired(&self) -> String {
        match self.renewed {
            Some(r) => format!("no renewal of the lease was confirmed in time (the last one read was stamped {r})"),
            None => "the lease could not be read in time after taking the lead".into(),
        }
    }
}

/// When a read of the Lease was sent and answered, on this process's clocks.
#[derive(Clone, Copy, Debug)]
struct ReadTimes {
    sent: Instant,
    received: Instant,
    /// The wall clock, read together with `received`.
    received_wall: Timestamp,
}

/// What one read of the Lease means for writing.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Writing may go on until the hold's deadline.
    Holds(Hold),
    /// The read proves nothing new, so the previous deadline stands. The string says why.
    Unchanged(String),
    /// Stop writing now.
    Stop(String),
}

/// The fence's arithmetic (see the module docs): what the answer `spec` to a read means for a
/// hold. An `Err` answer is a failed or timed-out read.
fn write_deadline(
    hold: Hold,
    spec: Result<LeaseSpec, String>,
    read: ReadTimes,
    identity: &str,
    timing: &Timing,
) -> Verdict {
    // The timer may have lost the race with the answer: the deadline has passed all the same.
    if read.received >= hold.until {
        return Verdict::Stop(hold.expired());
    }
    let spec = match spec {
        Ok(spec) => spec,
        Err(why) => return Verdict::Unchanged(why),
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return Verdict::Stop(format!("the lease is held by {:?}", spec.holder_identity));
    }
    let Some(renewed) = spec.renew_time.map(|t| t.0) else {
        return Verdict::Unchanged("the lease has no renew time".into());
    };
    let age = read.received_wall.duration_since(renewed);
    if age.is_negative() && age.unsigned_abs() > MAX_CLOCK_SKEW {
        // We stamped it: this clock has gone back since, by an amount nobody knows.
        return Verdict::Unchanged(format!(
            "the lease was renewed {:?} in this clock's future",
            age.unsigned_abs()
        ));
    }
    let age = if age.is_negative() {
        Duration::ZERO
    } else {
        age.unsigned_abs()
    };
    // A standby adds the duration the Lease states; a shorter one than ours counts.
    let duration = match spec.lease_duration_seconds {
        Some(secs) => timing
            .duration
            .min(Duration::from_secs(u64::try_from(secs).unwrap_or(0))),
        None => timing.duration,
    };
    let stop_after = stop_after(duration);
    // Dated by its stamp, and never later than the read was sent. A renewal older than this
    // clock can count has expired long ago: stop at the answer.
    let by_stamp = (read.received + stop_after).checked_sub(age).unwrap_or(read.received);
    let mut until = by_stamp.min(read.sent + stop_after);
    if hold.renewed == Some(renewed) {
        until = until.min(hold.until);
    }
    if until <= read.received {
        return Verdict::Stop(format!("the lease was last renewed {age:?} ago"));
    }
    Verdict::Holds(Hold {
        renewed: Some(renewed),
        until,
    })
}

#[cfg(test)]
#[path = "fence_tests.rs"]
mod tests;
