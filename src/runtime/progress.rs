//! Liveness that means something: `/healthz` fails when a reconcile has been running far longer
//! than any request may take (each has a deadline), i.e. the controller is wedged and only a
//! restart will help. A process that merely waits for work stays healthy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longer than any reconcile can legitimately take: a handful of writes, each with a 30 s
/// deadline, plus the grace for a write that is replaced.
pub const STALL: Duration = Duration::from_secs(180);

#[derive(Debug, Default)]
pub struct Progress {
    in_flight: Mutex<HashMap<String, Instant>>,
}

impl Progress {
    pub fn started(&self, namespace: &str) {
        self.in_flight.lock().unwrap().insert(namespace.into(), Instant::now());
    }

    pub fn finished(&self, namespace: &str) {
        self.in_flight.lock().unwrap().remove(namespace);
    }

    /// Why the controller looks wedged, if it does.
    pub fn stalled(&self, limit: Duration) -> Option<String> {
        let in_flight = self.in_flight.lock().unwrap();
        let (ns, since) = in_flight.iter().min_by_key(|(_, t)| **t)?;
        (since.elapsed() > limit).then(|| format!("reconcile of namespace {ns} running for {:?}", since.elapsed()))
    }
}

/// Marks a reconcile in flight until dropped (also when the reconcile future is cancelled).
pub struct InFlight<'a> {
    progress: &'a Progress,
    namespace: String,
}

impl<'a> InFlight<'a> {
    pub fn new(progress: &'a Progress, namespace: &str) -> Self {
        progress.started(namespace);
        Self {
            progress,
            namespace: namespace.into(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.progress.finished(&self.namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconcile_running_past_the_limit_is_a_stall_until_it_ends() {
        let p = Progress::default();
        assert_eq!(p.stalled(Duration::ZERO), None, "idle is healthy");
        let guard = InFlight::new(&p, "team-a");
        std::thread::sleep(Duration::from_millis(5));
        assert!(p.stalled(Duration::from_millis(1)).unwrap().contains("team-a"));
        assert_eq!(p.stalled(Duration::from_secs(60)), None);
        drop(guard);
        assert_eq!(p.stalled(Duration::ZERO), None);
    }
}
