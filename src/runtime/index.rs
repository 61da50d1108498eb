//! A cache of objects indexed by namespace, fed by a watch. A namespace reconcile looks up only
//! its own objects, so its cost does not grow with the cluster. What is kept of each object is
//! chosen by the caller: the whole object, a summary, or nothing at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

type ByNamespace<V> = HashMap<String, BTreeMap<String, Arc<V>>>;

/// How long a deletion is remembered against a late write of the operator's own (the response
/// to a write can arrive after the watch already reported the object deleted).
const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

fn revision(rv: Option<&String>) -> Option<u64> {
    rv?.parse().ok()
}

/// Values kept for objects, by namespace and name.
pub struct NamespacedIndex<V> {
    objects: RwLock<ByNamespace<V>>,
    /// The list being received during a (re)list; swapped in at `InitDone`.
    relist: RwLock<Option<ByNamespace<V>>>,
    /// (namespace, name) -> resourceVersion of its deletion, and when it was seen.
    tombstones: Mutex<HashMap<(String, String), (u64, Instant)>>,
    ready: watch::Sender<bool>,
}

impl<V> Default for NamespacedIndex<V> {
    fn default() -> Self {
        Self {
            objects: RwLock::default(),
            relist: RwLock::default(),
            tombstones: Mutex::default(),
            ready: watch::Sender::new(false),
        }
    }
}

fn remove<V>(map: &mut ByNamespace<V>, ns: &str, name: &str) {
    if let Some(names) = map.get_mut(ns) {
        names.remove(name);
        if names.is_empty() {
            map.remove(ns);
        }
    }
}

/// Stores what `keep` makes of `obj`, or forgets the object when it keeps nothing (an update
/// can make an object stop mattering).
fn upsert<K: Resource, V>(map: &mut ByNamespace<V>, obj: &K, keep: impl Fn(&K) -> Option<V>) {
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    match keep(obj) {
        Some(value) => {
            map.entry(ns).or_default().insert(name, Arc::new(value));
        }
        None => remove(map, &ns, &name),
    }
}

impl<V: Resource + Clone> NamespacedIndex<V> {
    /// Applies one watch event, keeping whole objects.
    pub fn apply(&self, event: &watcher::Event<V>) {
        self.apply_with(event, |o: &V| Some(o.clone()));
    }

    /// Records the operator's own write (the API server's response) before the watch reports
    /// it, so a reconcile in between does not write the same object again. Only a newer
    /// revision than anything seen for that object counts: the response can arrive after the
    /// watch reported a later edit or the deletion, and a stale entry would hide that drift.
    pub fn apply_own(&self, obj: V) {
        let Some(written) = revision(obj.resource_version().as_ref()) else {
            return;
        };
        let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
        let mut objects = self.objects.write().unwrap();
        let cached = objects
            .get(&ns)
            .and_then(|names| names.get(&name))
            .and_then(|o| revision(o.resource_version().as_ref()));
        let deleted = self
            .tombstones
            .lock()
            .unwrap()
            .get(&(ns.clone(), name.clone()))
            .map(|t| t.0);
        if cached.max(deleted).is_some_and(|seen| seen >= written) {
            return;
        }
        objects.entry(ns).or_default().insert(name, Arc::new(obj));
    }
}

impl<V> NamespacedIndex<V> {
    /// Applies one watch event of kind `K`, keeping what `keep` makes of each object.
    pub fn apply_with<K: Resource>(&self, event: &watcher::Event<K>, keep: impl Fn(&K) -> Option<V>) {
        match event {
            watcher::Event::Apply(obj) => upsert(&mut self.objects.write().unwrap(), obj, keep),
            watcher::Event::Delete(obj) => {
                let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
                if let Some(rv) = revision(obj.resource_version().as_ref()) {
                    let mut tombstones = self.tombstones.lock().unwrap();
                    tombstones.retain(|_, (_, seen)| seen.elapsed() < TOMBSTONE_TTL);
                    tombstones.insert((ns.clone(), name.clone()), (rv, Instant::now()));
                }
                remove(&mut self.objects.write().unwrap(), &ns, &name);
            }
            watcher::Event::Init => *self.relist.write().unwrap() = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                if let Some(list) = self.relist.write().unwrap().as_mut() {
                    upsert(list, obj, keep);
                }
            }
            watcher::Event::InitDone => {
                if let Some(list) = self.relist.write().unwrap().take() {
                    *self.objects.write().unwrap() = list;
                }
                self.ready.send_replace(true);
            }
        }
    }

    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<V>> {
        self.objects.read().unwrap().get(namespace)?.get(name).cloned()
    }

    /// The objects in one namespace, by name.
    pub fn in_namespace(&self, namespace: &str) -> BTreeMap<String, Arc<V>> {
        self.objects.read().unwrap().get(namespace).cloned().unwrap_or_default()
    }

    /// The namespaces that hold at least one object matching `pred`.
    pub fn namespaces_where(&self, pred: impl Fn(&V) -> bool) -> Vec<String> {
        let objects = self.objects.read().unwrap();
        objects
            .iter()
            .filter(|(_, names)| names.values().any(|o| pred(o)))
            .map(|(ns, _)| ns.clone())
            .collect()
    }

    /// Whether the first full list has been received.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the first full list has been received.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives as long as self, so this only returns once ready.
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    fn np(ns: &str, name: &str) -> NetworkPolicy {
        let mut p = NetworkPolicy::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p
    }

    #[test]
    fn relist_replaces_contents_and_marks_ready() {
        let index = NamespacedIndex::default();
        assert!(!*index.ready.borrow());
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(np("a", "p1")));
        index.apply(&watcher::Event::InitApply(np("b", "p1")));
        index.apply(&watcher::Event::InitDone);
        assert!(*index.ready.borrow());
        assert_eq!(index.in_namespace("a").len() + index.in_namespace("b").len(), 2);

        // A relist after a watch error drops what no longer exists.
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(np("b", "p1")));
        assert_eq!(
            index.in_namespace("a").len(),
            1,
            "the old view stays until the relist completes"
        );
        index.apply(&watcher::Event::InitDone);
        assert!(index.in_namespace("a").is_empty());
        assert_eq!(index.in_namespace("b").len(), 1);
    }

    #[test]
    fn a_late_response_to_an_own_write_never_hides_a_newer_change() {
        let at = |rv: &str| {
            let mut p = np("a", "p1");
            p.metadata.resource_version = Some(rv.into());
            p
        };
        let index = NamespacedIndex::default();
        index.apply(&watcher::Event::Apply(at("10")));
        // The watch already reported the deletion (rv 12) when the response of a write (rv 11)
        // comes back: the object stays gone.
        index.apply(&watcher::Event::Delete(at("12")));
        index.apply_own(at("11"));
        assert!(index.get("a", "p1").is_none());
        // A newer own write counts.
        index.apply_own(at("13"));
        assert_eq!(index.get("a", "p1").unwrap().resource_version().as_deref(), Some("13"));
        // An edit seen by the watch (rv 15) is not overwritten by an older response (rv 14).
        index.apply(&watcher::Event::Apply(at("15")));
        index.apply_own(at("14"));
        assert_eq!(index.get("a", "p1").unwrap().resource_version().as_deref(), Some("15"));
    }

    #[test]
    fn apply_and_delete_update_one_namespace() {
        let index = NamespacedIndex::default();
        index.apply(&watcher::Event::Apply(np("a", "p1")));
        index.apply(&watcher::Event::Apply(np("a", "p2")));
        index.apply(&watcher::Event::Delete(np("a", "p1")));
        assert_eq!(index.in_namespace("a").keys().collect::<Vec<_>>(), vec!["p2"]);
        assert_eq!(index.namespaces_where(|p| p.name_any() == "p2"), vec!["a".to_string()]);
    }
}
