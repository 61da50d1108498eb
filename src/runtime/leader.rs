//! Leader election on a `coordination.k8s.io` Lease: only the leader runs the controller (and so
//! writes); a standby takes over when the leader's lease expires.
//!
//! The fence's arithmetic. A standby (kube-lease-manager) takes over once its own wall clock
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
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};

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

/// Lease settings (all flags of `kube-baseline run`).
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
}

/// When the lease manager renews and the fence reads, for one lease duration.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Timing {
    /// In whole seconds, as the Lease stores it, and at least [`MIN_LEASE`].
    duration: Duration,
    /// The age at which the lease manager renews (whole seconds, as it counts).
    renew_after: Duration,
    /// The age at which writing must have stopped.
    stop_after: Duration,
}

impl Timing {
    fn new(configured: Duration) -> Self {
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
    fn grace_secs(&self) -> u64 {
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

/// A held or wanted lease. Dropping [`Leadership::release`]'s receiver releases the lease.
pub struct Leadership {
    pub is_leader: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

impl Leadership {
    /// Starts campaigning; the lease is created when missing.
    pub async fn campaign(client: Client, s: &LeaseSettings) -> Result<Self> {
        let timing = Timing::new(s.duration);
        let manager = LeaseManagerBuilder::new(client, &s.name)
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
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::SignedDuration;
    use proptest::prelude::*;

    const ME: &str = "me";

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    fn lease(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }
    }

    /// A read sent at `sent` and answered `took` later, with the wall clock at `wall` then.
    fn read(sent: Instant, took: Duration, wall: Timestamp) -> ReadTimes {
        ReadTimes {
            sent,
            received: sent + took,
            received_wall: wall,
        }
    }

    /// Fifteen seconds, the default: the margin is 3 s, so writing stops at 12 s.
    fn default_timing() -> Timing {
        Timing::new(secs(15))
    }

    /// A hold with a deadline far away, from a renewal other than the ones the tests read.
    fn open_hold(now: Instant) -> Hold {
        Hold {
            renewed: None,
            until: now + secs(60),
        }
    }

    fn until(v: Verdict) -> Instant {
        match v {
            Verdict::Holds(h) => h.until,
            other => panic!("expected a deadline, got {other:?}"),
        }
    }

    #[test]
    fn the_margin_is_two_seconds_or_a_fifth_of_the_lease() {
        assert_eq!(safety_margin(secs(4)), secs(2));
        assert_eq!(safety_margin(secs(10)), secs(2));
        assert_eq!(safety_margin(secs(15)), secs(3));
        assert_eq!(safety_margin(secs(60)), secs(12));
    }

    #[test]
    fn renewals_come_halfway_to_the_stop_so_each_has_time_to_be_confirmed() {
        for (lease, renew, stop) in [(4, 1, 2), (15, 6, 12), (60, 24, 48)] {
            let t = Timing::new(secs(lease));
            assert_eq!((t.renew_after, t.stop_after), (secs(renew), secs(stop)), "{lease}s");
            assert_eq!(t.grace_secs(), lease - renew, "{lease}s");
            assert!(t.read_timeout() + t.check_every() < t.confirm_window(), "{lease}s");
        }
        assert_eq!(Timing::new(secs(4)).check_every(), ms(250));
    }

    #[test]
    fn leases_shorter_than_four_seconds_or_fractional_are_whole_seconds_from_four_up() {
        assert_eq!(Timing::new(secs(2)), Timing::new(secs(4)));
        assert_eq!(Timing::new(ms(15_900)), Timing::new(secs(15)));
        // The lease manager refuses a grace period that is not shorter than the lease.
        let t = Timing::new(secs(4));
        assert!(t.grace_secs() >= 1 && t.grace_secs() < t.duration.as_secs());
    }

    #[test]
    fn a_fresh_renewal_allows_writing_until_the_duration_less_the_margin() {
        let now = Instant::now();
        let wall = Timestamp::now();
        let v = write_deadline(
            open_hold(now),
            Ok(lease(ME, wall - secs(1))),
            read(now, ms(10), wall),
            ME,
            &default_timing(),
        );
        // Renewed 1 s before the answer: 12 s after the renewal, 11 s after the answer.
        assert_eq!(until(v), now + ms(10) + secs(11));
    }

    #[test]
    fn a_slow_answer_dates_the_renewal_by_its_stamp_not_by_its_arrival() {
        let now = Instant::now();
        let renewed = Timestamp::now();
        // Renewed 1 s before the read was sent; the answer took 5 s.
        let slow = read(now, secs(5), renewed + secs(6));
        let v = write_deadline(open_hold(now), Ok(lease(ME, renewed)), slow, ME, &default_timing());
        assert_eq!(until(v), now - secs(1) + secs(12));
    }

    #[test]
    fn a_renewal_made_while_the_read_was_in_flight_counts_from_the_send() {
        let now = Instant::now();
        let renewed = Timestamp::now();
        // The read took 3 s; the renewal it shows is 1 s old, so it was made during the read.
        let v = write_deadline(
            open_hold(now),
            Ok(lease(ME, renewed)),
            read(now, secs(3), renewed + secs(1)),
            ME,
            &default_timing(),
        );
        assert_eq!(until(v), now + secs(12));
    }

    #[test]
    fn an_answer_that_arrives_after_the_deadline_cannot_extend_it() {
        let now = Instant::now();
        let wall = Timestamp::now();
        let hold = Hold {
            renewed: Some(wall - secs(10)),
            until: now + secs(2),
        };
        // Sent before the deadline, answered after it, showing a fresh renewal.
        let late = read(now + secs(1), secs(2), wall + secs(3));
        let v = write_deadline(hold, Ok(lease(ME, wall + secs(2))), late, ME, &default_timing());
        assert!(matches!(v, Verdict::Stop(_)), "{v:?}");
    }

    #[test]
    fn a_timed_out_read_leaves_the_deadline_where_it_was() {
        let now = Instant::now();
        let hold = Hold {
            renewed: Some(Timestamp::now()),
            until: now + secs(5),
        };
        let timed_out = read(now, secs(2), Timestamp::now() + secs(2));
        let v = write_deadline(hold, Err("timed out".into()), timed_out, ME, &default_timing());
        assert_eq!(v, Verdict::Unchanged("timed out".into()));
    }

    #[test]
    fn a_renewal_by_another_holder_stops_writing_at_once() {
        let now = Instant::now();
        let wall = Timestamp::now();
        let v = write_deadline(
            open_hold(now),
            Ok(lease("other", wall)),
            read(now, ms(10), wall),
            ME,
            &default_timing(),
        );
        assert_eq!(v, Verdict::Stop("the lease is held by Some(\"other\")".into()));
    }

    #[test]
    fn a_released_lease_stops_writing_at_once() {
        let now = Instant::now();
        let released = LeaseSpec::default();
        let v = write_deadline(
            open_hold(now),
            Ok(released),
            read(now, ms(10), Timestamp::now()),
            ME,
            &default_timing(),
        );
        assert!(matches!(v, Verdict::Stop(_)), "{v:?}");
    }

    #[test]
    fn a_renew_time_slightly_in_the_future_counts_as_made_when_the_read_was_sent() {
        let now = Instant::now();
        let wall = Timestamp::now();
        let ahead = lease(ME, wall + ms(800));
        let v = write_deadline(
            open_hold(now),
            Ok(ahead),
            read(now, ms(10), wall),
            ME,
            &default_timing(),
        );
        assert_eq!(until(v), now + secs(12));
    }

    #[test]
    fn a_renew_time_further_in_the_future_than_the_skew_allowance_extends_nothing() {
        let now = Instant::now();
        let wall = Timestamp::now();
        let ahead = lease(ME, wall + secs(30));
        let v = write_deadline(
            open_hold(now),
            Ok(ahead),
            read(now, ms(10), wall),
            ME,
            &default_timing(),
        );
        assert!(
            matches!(v, Verdict::Unchanged(ref why) if why.contains("future")),
            "{v:?}"
        );
    }

    #[test]
    fn a_renew_time_older_than_the_stop_age_stops_writing_at_once() {
        let now = Instant::now();
        let wall = Timestamp::now();
        for renewed in [wall - secs(12), wall - secs(3600), Timestamp::UNIX_EPOCH] {
            let v = write_deadline(
                open_hold(now),
                Ok(lease(ME, renewed)),
                read(now, ms(10), wall),
                ME,
                &default_timing(),
            );
            assert!(matches!(v, Verdict::Stop(_)), "{renewed}: {v:?}");
        }
    }

    #[test]
    fn rereading_the_same_renewal_never_moves_the_deadline_later() {
        let now = Instant::now();
        let wall = Timestamp::now();
        let renewal = lease(ME, wall - secs(4));
        let first = write_deadline(
            open_hold(now),
            Ok(renewal.clone()),
            read(now, ms(10), wall),
            ME,
            &default_timing(),
        );
        let Verdict::Holds(hold) = first else {
            panic!("{first:?}")
        };
        // One second later the wall clock has stepped back 3 s: the renewal looks younger.
        let again = read(now + secs(1), ms(10), wall - secs(2));
        let second = write_deadline(hold, Ok(renewal.clone()), again, ME, &default_timing());
        assert_eq!(second, Verdict::Holds(hold));
    }

    #[test]
    fn a_new_renewal_moves_the_deadline() {
        let now = Instant::now();
        let wall = Timestamp::now();
        let hold = Hold {
            renewed: Some(wall - secs(6)),
            until: now + secs(6),
        };
        let v = write_deadline(
            hold,
            Ok(lease(ME, wall)),
            read(now, ms(10), wall),
            ME,
            &default_timing(),
        );
        assert_eq!(until(v), now + secs(12));
    }

    #[test]
    fn a_shorter_duration_stated_in_the_lease_is_the_one_that_counts() {
        let now = Instant::now();
        let wall = Timestamp::now();
        let short = LeaseSpec {
            lease_duration_seconds: Some(5),
            ..lease(ME, wall)
        };
        let v = write_deadline(
            open_hold(now),
            Ok(short),
            read(now, ms(10), wall),
            ME,
            &default_timing(),
        );
        assert_eq!(until(v), now + secs(3));
    }

    #[test]
    fn a_lease_without_renew_time_extends_nothing() {
        let now = Instant::now();
        let spec = LeaseSpec {
            renew_time: None,
            ..lease(ME, Timestamp::now())
        };
        let v = write_deadline(
            open_hold(now),
            Ok(spec),
            read(now, ms(10), Timestamp::now()),
            ME,
            &default_timing(),
        );
        assert!(matches!(v, Verdict::Unchanged(_)), "{v:?}");
    }

    proptest! {
        /// Whatever the latencies and whatever the clocks' errors within the assumed skew, the
        /// leader's deadline plus the time to stop comes before the earliest instant a standby
        /// can take over.
        #[test]
        fn the_leader_stops_before_any_standby_can_take_over(
            lease_secs in 4u64..120,
            // How long the read took (ms), and how old the renewal was when the answer arrived,
            // in thousandths of the lease (younger than the read: built while it was in flight).
            took in 0u64..20_000,
            age_per_mille in 0u64..1_000,
            // Each clock's error (ms): ours when stamping and when reading (a step in between),
            // and the standby's offset from ours as we read, at the limits of the skew allowed
            // and in between.
            stamping_error in -5_000i64..5_000,
            reading_error in -5_000i64..5_000,
            standby_offset in prop_oneof![Just(-1_000i64), Just(1_000i64), -1_000i64..=1_000],
        ) {
            let timing = Timing::new(secs(lease_secs));
            let duration = timing.duration;
            // True time is the monotonic clock; a wall clock is true time plus its error.
            let base = Instant::now();
            let base_wall = Timestamp::now();
            let wall_at = |t: Instant, error_ms: i64| {
                base_wall + SignedDuration::try_from(t - base).unwrap() + SignedDuration::from_millis(error_ms)
            };
            let received = base + secs(200);
            let sent = received - ms(took);
            let built = received - duration * age_per_mille as u32 / 1_000;
            let spec = LeaseSpec {
                lease_duration_seconds: Some(duration.as_secs() as i32),
                ..lease(ME, wall_at(built, stamping_error))
            };
            let reading = ReadTimes { sent, received, received_wall: wall_at(received, reading_error) };
            let hold = Hold { renewed: None, until: received + secs(1) };
            if let Verdict::Holds(h) = write_deadline(hold, Ok(spec), reading, ME, &timing) {
                // The standby takes over once its wall clock passes renewTime + duration.
                let standby_error = reading_error + standby_offset;
                let lead = SignedDuration::from_millis(stamping_error - standby_error);
                let takeover = built + duration;
                let takeover = if lead.is_negative() {
                    takeover - lead.unsigned_abs()
                } else {
                    takeover + lead.unsigned_abs()
                };
                prop_assert!(
                    h.until + STOP_TIME <= takeover,
                    "stop at {:?}, takeover at {:?}", h.until - base, takeover - base
                );
            }
        }
    }
}
