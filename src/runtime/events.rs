//! Kubernetes Events, bounded: one Event per baseline and reason when it starts happening, then
//! summaries (a count and a few example objects) at the end of windows that double while it goes
//! on (10 s, 20 s, 40 s … 5 min), and one when it has been quiet for 5 s. Converging 10,000
//! namespaces writes a handful of Events per baseline, O(log time), not 40,000; every repair
//! stays visible in logs, status and metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::warn;

use crate::api::SecurityBaseline;

/// The reporting controller's name in every Event.
const CONTROLLER: &str = "kube-baseline";
/// Events about cluster-scoped baselines live here (where the Recorder puts them too).
const EVENTS_NAMESPACE: &str = "default";

/// The first window of one baseline's reason.
const WINDOW: Duration = Duration::from_secs(10);
/// A reason this long without an occurrence ends its series (summarised at the next tick).
const QUIET: Duration = Duration::from_secs(5);
/// How often windows are looked at: a summary goes out at most `QUIET + TICK` after the last
/// occurrence it counts.
pub const TICK: Duration = Duration::from_secs(5);
/// The longest window: a reason that keeps happening is summarised at least this often.
const MAX_WINDOW: Duration = Duration::from_secs(300);
/// Example objects named in a summary.
const EXAMPLES: usize = 5;

/// Makes Event names unique within this process.
static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Normal,
    Warning,
}

/// What is gathered for one (baseline, type, reason) in its current window.
#[derive(Debug)]
struct Gathered {
    started: Instant,
    last: Instant,
    span: Duration,
    /// Occurrences in this window (after the first Event, which went out at once).
    count: usize,
    examples: Vec<String>,
}

type Key = (String, Kind, String);

/// Gathers Events and decides which to publish. Pure: [`Events`] does the publishing.
#[derive(Default)]
pub struct Aggregator {
    windows: Mutex<BTreeMap<Key, Gathered>>,
}

impl Aggregator {
    /// Records one occurrence at `now`; returns the note to publish now when the reason was
    /// quiet (no window open).
    fn record(&self, key: Key, note: String, now: Instant) -> Option<String> {
        let mut windows = self.windows.lock().unwrap();
        match windows.get_mut(&key) {
            None => {
                windows.insert(
                    key,
                    Gathered {
                        started: now,
                        last: now,
                        span: WINDOW,
                        count: 0,
                        examples: Vec::new(),
                    },
                );
                Some(note)
            }
            Some(w) => {
                w.last = now;
                w.count += 1;
                if w.examples.len() < EXAMPLES {
                    w.examples.push(note);
                }
                None
            }
        }
    }

    /// Closes the windows that have ended by `now` (every window with `all`): the summaries to
    /// publish, by key. A window that ended while its reason still happens is followed by one
    /// twice as long; a reason quiet for [`QUIET`] ends its series, so its next occurrence is
    /// published at once again.
    fn close(&self, now: Instant, all: bool) -> Vec<(Key, String)> {
        let mut windows = self.windows.lock().unwrap();
        let mut out = Vec::new();
        windows.retain(|(baseline, kind, reason), w| {
            let quiet = now >= w.last + QUIET;
            if !all && !quiet && now < w.started + w.span {
                return true;
            }
            if w.count == 0 {
                return !quiet && !all;
            }
            let examples = std::mem::take(&mut w.examples);
            let more = w.count - examples.len();
            let mut note = format!(
                "{} more {reason} in the last {}s: {}",
                w.count,
                now.saturating_duration_since(w.started).as_secs_f64().round(),
                examples.join("; ")
            );
            if more > 0 {
                note.push_str(&format!("; and {more} more"));
            }
            out.push(((baseline.clone(), *kind, reason.clone()), note));
            *w = Gathered {
                started: now,
                last: w.last,
                span: (w.span * 2).min(MAX_WINDOW),
                count: 0,
                examples: Vec::new(),
            };
            !all && !quiet
        });
        out
    }
}

/// The publishing half: shared by every reconcile.
pub struct Events {
    aggregator: Aggregator,
    client: kube::Client,
    instance: String,
    baselines: Store<SecurityBaseline>,
}

impl Events {
    pub fn new(client: kube::Client, instance: String, baselines: Store<SecurityBaseline>) -> Arc<Self> {
        Arc::new(Self {
            aggregator: Aggregator::default(),
            client,
            instance,
            baselines,
        })
    }

    /// Publishes now when this opens the baseline's window for `reason`, else gathers it.
    pub async fn publish(&self, baseline: &str, type_: EventType, reason: &str, note: String) {
        let kind = if type_ == EventType::Warning {
            Kind::Warning
        } else {
            Kind::Normal
        };
        let key = (baseline.into(), kind, reason.into());
        if let Some(note) = self.aggregator.record(key, note, Instant::now()) {
            self.send(baseline, kind, reason, note).await;
        }
    }

    /// A Warning Event in namespace `ns`, about `object` there (`Kind/name` as problems name
    /// objects; the namespace itself for anything else), for its team to see (`kubectl events
    /// -n NS`). Not aggregated: these come once per change (a new problem, a departure).
    pub async fn publish_in_namespace(&self, ns: &str, object: &str, reason: &str, note: String) {
        let (kind, name) = object.split_once('/').unwrap_or(("Namespace", ns));
        let (api_version, kind, name) = match kind {
            "NetworkPolicy" => ("networking.k8s.io/v1", kind, name),
            "RoleBinding" => ("rbac.authorization.k8s.io/v1", kind, name),
            "CiliumNetworkPolicy" => ("cilium.io/v2", kind, name),
            "Pod" => ("v1", kind, name),
            _ => ("v1", "Namespace", ns),
        };
        let regarding = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
            name: Some(name.into()),
            // The Events API wants the regarding object's namespace to be the Event's.
            namespace: Some(ns.into()),
            ..Default::default()
        };
        let event = self.event(ns, Kind::Warning, reason, note, regarding, name);
        let api: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(self.client.clone(), ns);
        if let Err(e) = api.create(&Default::default(), &event).await {
            warn!(namespace = ns, error = %e, "could not publish event");
        }
    }

    /// An Event in `namespace` about `regarding`, named after `name_prefix` like the Recorder
    /// names its Events: the object, then a unique suffix (the time, and a counter for two
    /// Events in the same nanosecond).
    fn event(
        &self,
        namespace: &str,
        kind: Kind,
        reason: &str,
        note: String,
        regarding: k8s_openapi::api::core::v1::ObjectReference,
        name_prefix: &str,
    ) -> k8s_openapi::api::events::v1::Event {
        k8s_openapi::api::events::v1::Event {
            metadata: kube::api::ObjectMeta {
                name: Some(format!(
                    "{}.{:x}{:x}",
                    name_prefix.chars().take(220).collect::<String>(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos(),
                    SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 0x1000
                )),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            type_: Some(if kind == Kind::Warning { "Warning" } else { "Normal" }.into()),
            reason: Some(reason.into()),
            action: Some("Reconcile".into()),
            // The Events API caps a note at 1 KiB.
            note: Some(note.chars().take(1000).collect()),
            regarding: Some(regarding),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        }
    }

    async fn send(&self, baseline: &str, kind: Kind, reason: &str, note: String) {
        if let Err(e) = self.create(baseline, kind, reason, note).await {
            warn!(error = %e, "could not publish event");
        }
    }

    /// Publishes the summaries of the windows that ended, every [`TICK`], until the process
    /// stops.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(TICK).await;
            self.publish_closed(false).await;
        }
    }

    /// Publishes everything gathered so far (at shutdown).
    pub async fn flush(&self) {
        self.publish_closed(true).await;
    }

    async fn publish_closed(&self, all: bool) {
        for ((baseline, kind, reason), note) in self.aggregator.close(Instant::now(), all) {
            if let Err(e) = self.create(&baseline, kind, reason.as_str(), note).await {
                warn!(error = %e, "could not publish event summary");
            }
        }
    }

    /// Every Event is one of its own, with its own note. kube's Recorder would fold an Event
    /// into an earlier one of the same reason and object as a series, keeping that one's note:
    /// `kubectl events` then named the first object repaired, not the one just repaired, and a
    /// summary's counts and examples were lost. The aggregation above already bounds how many
    /// there are.
    async fn create(&self, baseline: &str, kind: Kind, reason: &str, note: String) -> kube::Result<()> {
        let Some(b) = self.baselines.get(&ObjectRef::new(baseline)) else {
            return Ok(());
        };
        let event = self.event(EVENTS_NAMESPACE, kind, reason, note, b.object_ref(&()), baseline);
        let api: kube::Api<k8s_openapi::api::events::v1::Event> =
            kube::Api::namespaced(self.client.clone(), EVENTS_NAMESPACE);
        api.create(&Default::default(), &event).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> Key {
        ("aks".into(), Kind::Normal, reason.into())
    }

    #[test]
    fn the_first_goes_out_at_once_and_the_rest_as_summaries_of_doubling_windows() {
        let a = Aggregator::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(a.record(key("Created"), "ns-0".into(), at(0)), Some("ns-0".into()));
        for i in 1..1000 {
            assert_eq!(a.record(key("Created"), format!("ns-{i}"), at(8)), None);
        }
        assert_eq!(a.record(key("Pruned"), "p".into(), at(1)), Some("p".into()));
        assert!(a.close(at(5), false).is_empty(), "no window has ended");
        let closed = a.close(at(10), false);
        assert_eq!(closed.len(), 1, "Pruned had no repeats: {closed:?}");
        let (k, note) = &closed[0];
        assert_eq!(k, &key("Created"));
        assert!(
            note.starts_with("999 more Created in the last 10s: ns-1; ns-2"),
            "{note}"
        );
        assert!(note.ends_with("and 994 more"), "{note}");
        // Still going on: gathered, not published, and the next window is twice as long.
        assert_eq!(a.record(key("Created"), "ns-1000".into(), at(12)), None);
        assert_eq!(a.record(key("Created"), "ns-1001".into(), at(18)), None);
        assert!(a.close(at(20), false).is_empty());
        assert_eq!(a.record(key("Created"), "ns-1002".into(), at(27)), None);
        let closed = a.close(at(30), false);
        assert!(
            closed[0].1.starts_with("3 more Created in the last 20s: ns-1000"),
            "{closed:?}"
        );
        // Quiet for 5 s: the series ends with a summary; the next occurrence goes out at once.
        assert_eq!(a.record(key("Created"), "ns-1003".into(), at(31)), None);
        let closed = a.close(at(40), false);
        assert!(
            closed[0].1.starts_with("1 more Created in the last 10s: ns-1003"),
            "{closed:?}"
        );
        assert_eq!(a.record(key("Created"), "again".into(), at(41)), Some("again".into()));
        assert_eq!(a.record(key("Pruned"), "q".into(), at(41)), Some("q".into()));
    }

    #[test]
    fn a_reason_that_never_stops_is_summarised_o_log_t_times() {
        let a = Aggregator::default();
        let t0 = Instant::now();
        let mut events = 0;
        // Every second for an hour, windows closed every tick as `run` does.
        for s in 0..3600u64 {
            let now = t0 + Duration::from_secs(s);
            events += usize::from(a.record(key("Created"), format!("ns-{s}"), now).is_some());
            if s % TICK.as_secs() == 0 {
                events += a.close(now, false).len();
            }
        }
        // 1 at once, then windows of 10, 20, 40, 80, 160 s, then one every 300 s.
        assert!(events <= 1 + 5 + 12, "{events} Events");
        assert!(!a.close(t0, true).is_empty(), "shutdown publishes what is gathered");
    }
}
