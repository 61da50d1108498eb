//! Retry timing for watches. kube-runtime's default (0.8 s doubling to 30 s, reset only after two
//! quiet minutes) let the errors of a short API server outage, plus the "resource version too
//! old" answers of a freshly restarted API server, push every watch to tens of seconds between
//! attempts: the operator was deaf for about two minutes after a 6 s restart. Here a watch
//! retries after 200 ms, doubling to at most 2 s, and forgets earlier failures after 10 s without
//! one, so it is back within seconds of the API answering again.

use std::time::{Duration, Instant};

use kube::runtime::utils::Backoff;

#[derive(Clone, Debug)]
pub struct WatchBackoff {
    first: Duration,
    cap: Duration,
    quiet: Duration,
    next: Duration,
    last: Option<Instant>,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self::new(
            Duration::from_millis(200),
            Duration::from_secs(2),
            Duration::from_secs(10),
        )
    }
}

impl WatchBackoff {
    pub fn new(first: Duration, cap: Duration, quiet: Duration) -> Self {
        Self {
            first,
            cap,
            quiet,
            next: first,
            last: None,
        }
    }

    /// Up to ±25 % around `d`, so many watches failing together do not retry in lockstep. The
    /// wall clock's nanoseconds are random enough for that.
    fn jitter(d: Duration) -> Duration {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let nanos = u64::from(clock.subsec_nanos()) ^ u64::from(std::process::id());
        let spread = (nanos % 501) as f64 / 1000.0 - 0.25;
        d.mul_f64(1.0 + spread)
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) >= self.quiet) {
            self.next = self.first;
        }
        self.last = Some(now);
        let delay = self.next;
        self.next = (self.next * 2).min(self.cap);
        Some(Self::jitter(delay))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_sub_second_doubles_to_a_cap_and_resets() {
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| b.next().unwrap()).collect();
        assert!(delays[0] >= Duration::from_millis(150) && delays[0] <= Duration::from_millis(250));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(2500)), "{delays:?}");
        assert!(delays[7] >= Duration::from_millis(1500), "{delays:?}");
        b.reset();
        assert!(b.next().unwrap() <= Duration::from_millis(250));
    }

    #[test]
    fn a_quiet_period_forgets_earlier_failures() {
        let mut b = WatchBackoff::new(
            Duration::from_millis(10),
            Duration::from_secs(1),
            Duration::from_millis(20),
        );
        for _ in 0..6 {
            b.next();
        }
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.next().unwrap() <= Duration::from_millis(13));
    }
}
