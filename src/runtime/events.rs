//! Kubernetes Events, bounded: one Event per baseline and reason at the start of a window, and
//! one summary at its end for everything that happened since (a count and a few example
//! objects). Converging 10,000 namespaces writes a handful of Events per baseline, not 40,000;
//! every repair stays visible in logs, status and metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::warn;

use crate::api::SecurityBaseline;

/// The reporting controller's name in every Event.
const CONTROLLER: &str = "kube-baseline";
/// Events about cluster-scoped baselines live here (where the Recorder puts them too).
const EVENTS_NAMESPACE: &str = "default";

/// How long repeats of one baseline's reason are gathered into one summary Event.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Example objects named in a summary.
const EXAMPLES: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Normal,
    Warning,
}

/// What is gathered for one (baseline, type, reason) in the current window.
#[derive(Debug, Default)]
struct Gathered {
    /// Whether the window's first Event went out already.
    opened: bool,
    /// Occurrences after the first one.
    count: usize,
    examples: Vec<String>,
}

type Key = (String, Kind, String);

/// Gathers Events and decides which to publish. Pure: [`run`] does the publishing.
#[derive(Default)]
pub struct Aggregator {
    windows: Mutex<BTreeMap<Key, Gathered>>,
}

impl Aggregator {
    /// Records one occurrence; returns the note to publish now when it opens a window.
    fn record(&self, key: Key, note: String) -> Option<String> {
        let mut windows = self.windows.lock().unwrap();
        let w = windows.entry(key).or_default();
        if !w.opened {
            w.opened = true;
            return Some(note);
        }
        w.count += 1;
        if w.examples.len() < EXAMPLES {
            w.examples.push(note);
        }
        None
    }

    /// Closes every window: the summaries to publish, by key. Keys with no repeats are dropped.
    fn close(&self) -> Vec<(Key, String)> {
        let windows = std::mem::take(&mut *self.windows.lock().unwrap());
        windows
            .into_iter()
            .filter(|(_, w)| w.count > 0)
            .map(|((baseline, kind, reason), w)| {
                let more = w.count - w.examples.len();
                let mut note = format!(
                    "{} more {reason} in the last {}s: {}",
                    w.count,
                    WINDOW.as_secs(),
                    w.examples.join("; ")
                );
                if more > 0 {
                    note.push_str(&format!("; and {more} more"));
                }
                ((baseline, kind, reason), note)
            })
            .collect()
    }
}

/// The publishing half: shared by every reconcile.
pub struct Events {
    aggregator: Aggregator,
    recorder: Recorder,
    client: kube::Client,
    instance: String,
    baselines: Store<SecurityBaseline>,
}

impl Events {
    pub fn new(client: kube::Client, instance: String, baselines: Store<SecurityBaseline>) -> Arc<Self> {
        let reporter = Reporter {
            controller: CONTROLLER.into(),
            instance: Some(instance.clone()),
        };
        Arc::new(Self {
            aggregator: Aggregator::default(),
            recorder: Recorder::new(client.clone(), reporter),
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
        if let Some(note) = self.aggregator.record((baseline.into(), kind, reason.into()), note) {
            self.send(baseline, kind, reason, note).await;
        }
    }

    async fn send(&self, baseline: &str, kind: Kind, reason: &str, note: String) {
        let Some(b) = self.baselines.get(&ObjectRef::new(baseline)) else {
            return;
        };
        let event = Event {
            type_: if kind == Kind::Warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            // The Events API caps a note at 1 KiB.
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &b.object_ref(&())).await {
            warn!(error = %e, "could not publish event");
        }
    }

    /// Publishes the summaries at the end of every window, until the process stops.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(WINDOW).await;
            self.flush().await;
        }
    }

    /// Publishes what is gathered now (every window, and at shutdown). Each summary is an Event
    /// of its own: the Recorder would fold it into the window's first Event as a series (same
    /// reason and object), keeping that one's note and losing the counts and examples.
    pub async fn flush(&self) {
        for ((baseline, kind, reason), note) in self.aggregator.close() {
            let Some(b) = self.baselines.get(&ObjectRef::new(&baseline)) else {
                continue;
            };
            let event = k8s_openapi::api::events::v1::Event {
                metadata: kube::api::ObjectMeta {
                    // Named like the Recorder names its Events: the object, then a unique suffix.
                    name: Some(format!(
                        "{}.{:x}",
                        baseline.chars().take(230).collect::<String>(),
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_nanos()
                    )),
                    namespace: Some(EVENTS_NAMESPACE.into()),
                    ..Default::default()
                },
                event_time: Some(MicroTime(Timestamp::now())),
                type_: Some(if kind == Kind::Warning { "Warning" } else { "Normal" }.into()),
                reason: Some(reason),
                action: Some("Reconcile".into()),
                note: Some(note.chars().take(1000).collect()),
                regarding: Some(b.object_ref(&())),
                reporting_controller: Some(CONTROLLER.into()),
                reporting_instance: Some(self.instance.clone()),
                ..Default::default()
            };
            let api: kube::Api<k8s_openapi::api::events::v1::Event> =
                kube::Api::namespaced(self.client.clone(), EVENTS_NAMESPACE);
            if let Err(e) = api.create(&Default::default(), &event).await {
                warn!(error = %e, "could not publish event summary");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> Key {
        ("aks".into(), Kind::Normal, reason.into())
    }

    #[test]
    fn the_first_of_a_window_goes_out_at_once_and_the_rest_as_one_summary() {
        let a = Aggregator::default();
        assert_eq!(a.record(key("Created"), "ns-0".into()), Some("ns-0".into()));
        for i in 1..1000 {
            assert_eq!(a.record(key("Created"), format!("ns-{i}")), None);
        }
        assert_eq!(a.record(key("Pruned"), "p".into()), Some("p".into()));
        let closed = a.close();
        assert_eq!(closed.len(), 1, "Pruned had no repeats: {closed:?}");
        let (k, note) = &closed[0];
        assert_eq!(k, &key("Created"));
        assert!(
            note.starts_with("999 more Created in the last 10s: ns-1; ns-2"),
            "{note}"
        );
        assert!(note.ends_with("and 994 more"), "{note}");
        // A new window opens afresh.
        assert_eq!(a.record(key("Created"), "again".into()), Some("again".into()));
    }
}
