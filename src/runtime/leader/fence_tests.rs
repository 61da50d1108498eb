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

/// What a quick read (10 ms) at `now`, answered with the wall clock at `wall`, makes of `spec`
/// for a fence with nothing confirmed yet.
fn first_read(now: Instant, wall: Timestamp, spec: Result<LeaseSpec, String>) -> Verdict {
    write_deadline(open_hold(now), spec, read(now, ms(10), wall), ME, &default_timing())
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
    let v = first_read(now, wall, Ok(lease("other", wall)));
    assert_eq!(v, Verdict::Stop("the lease is held by Some(\"other\")".into()));
}

#[test]
fn a_released_lease_stops_writing_at_once() {
    let now = Instant::now();
    let released = LeaseSpec::default();
    let v = first_read(now, Timestamp::now(), Ok(released));
    assert!(matches!(v, Verdict::Stop(_)), "{v:?}");
}

#[test]
fn a_renew_time_slightly_in_the_future_counts_as_made_when_the_read_was_sent() {
    let now = Instant::now();
    let wall = Timestamp::now();
    let ahead = lease(ME, wall + ms(800));
    let v = first_read(now, wall, Ok(ahead));
    assert_eq!(until(v), now + secs(12));
}

#[test]
fn a_renew_time_further_in_the_future_than_the_skew_allowance_extends_nothing() {
    let now = Instant::now();
    let wall = Timestamp::now();
    let ahead = lease(ME, wall + secs(30));
    let v = first_read(now, wall, Ok(ahead));
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
        let v = first_read(now, wall, Ok(lease(ME, renewed)));
        assert!(matches!(v, Verdict::Stop(_)), "{renewed}: {v:?}");
    }
}

#[test]
fn rereading_the_same_renewal_never_moves_the_deadline_later() {
    let now = Instant::now();
    let wall = Timestamp::now();
    let renewal = lease(ME, wall - secs(4));
    let first = first_read(now, wall, Ok(renewal.clone()));
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
    let v = first_read(now, wall, Ok(short));
    assert_eq!(until(v), now + secs(3));
}

#[test]
fn a_lease_without_renew_time_extends_nothing() {
    let now = Instant::now();
    let spec = LeaseSpec {
        renew_time: None,
        ..lease(ME, Timestamp::now())
    };
    let v = first_read(now, Timestamp::now(), Ok(spec));
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
