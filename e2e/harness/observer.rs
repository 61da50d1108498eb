//! Latencies seen by a watch, not by polling: every Apply event of the watched kinds is stamped
//! with the instant it arrived, so "how long until the object existed" is measured from the
//! client's write to the watch reporting the object, as another client would see it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

/// (kind, namespace, name) -> arrival instants of its Apply events, in order.
type Seen = Arc<Mutex<HashMap<(&'static str, String, String), Vec<Instant>>>>;

/// Its watches stop when it is dropped.
pub struct Observer {
    seen: Seen,
    watches: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.watches.iter().for_each(|w| w.abort());
    }
}

fn observe<K>(
    api: Api<K>,
    kind: &'static str,
    seen: Seen,
    ready: tokio::sync::mpsc::Sender<()>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            let obj = match event {
                Ok(watcher::Event::Apply(o)) => o,
                Ok(watcher::Event::InitDone) => {
                    let _ = ready.send(()).await;
                    continue;
                }
                _ => continue,
            };
            let (ns, name) = match kind {
                // A namespace counts once it carries its Pod Security labels: keyed by its name.
                "Namespace" if obj.labels().contains_key("pod-security.kubernetes.io/enforce") => {
                    (obj.name_any(), String::new())
                }
                "Namespace" => continue,
                _ => (obj.namespace().unwrap_or_default(), obj.name_any()),
            };
            seen.lock()
                .unwrap()
                .entry((kind, ns, name))
                .or_default()
                .push(Instant::now());
        }
    })
}

impl Observer {
    /// Watches NetworkPolicies, RoleBindings and Namespaces (metadata only); returns once all
    /// three watches have listed.
    pub async fn start(client: &Client) -> Self {
        let seen: Seen = Arc::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel(3);
        let watches = vec![
            observe(
                Api::<NetworkPolicy>::all(client.clone()),
                "NetworkPolicy",
                seen.clone(),
                tx.clone(),
            ),
            observe(
                Api::<RoleBinding>::all(client.clone()),
                "RoleBinding",
                seen.clone(),
                tx.clone(),
            ),
            observe(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                "Namespace",
                seen.clone(),
                tx,
            ),
        ];
        for _ in 0..3 {
            rx.recv().await;
        }
        Self { seen, watches }
    }

    /// The first Apply of (kind, namespace, name) that arrived after `since`.
    pub fn first_after(&self, kind: &'static str, ns: &str, name: &str, since: Instant) -> Option<Instant> {
        let seen = self.seen.lock().unwrap();
        seen.get(&(kind, ns.to_string(), name.to_string()))?
            .iter()
            .copied()
            .find(|t| *t >= since)
    }

    /// Waits until every (kind, name) of `ns` was reported after `since` (a namespace's own
    /// update is kind "Namespace" with an empty name); returns the latest of those instants.
    pub async fn all_after(
        &self,
        ns: &str,
        objects: &[(&'static str, &str)],
        since: Instant,
        timeout: Duration,
    ) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let times: Option<Vec<Instant>> = objects
                .iter()
                .map(|(kind, name)| self.first_after(kind, ns, name, since))
                .collect();
            if let Some(times) = times {
                return times.into_iter().max().unwrap_or(since);
            }
            assert!(
                Instant::now() < deadline,
                "{ns}: {objects:?} not observed within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
