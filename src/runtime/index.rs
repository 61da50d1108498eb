//! A cache of objects indexed by namespace, fed by a watch. A namespace reconcile looks up only
//! its own objects, so its cost does not grow with the cluster. What is kept of each object is
//! chosen by the caller: the whole object, a summary, or nothing at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::runtime::interner::Strings;

/// One namespace's values, sorted by name. A namespace holds a handful of objects: a sorted
/// vector costs a few words per entry where a map would allocate a node sized for eleven.
type Names<V> = Vec<(Arc<str>, Arc<V>)>;
type ByNamespace<V> = HashMap<Arc<str>, Names<V>>;

/// Namespace and object names, kept once for every index: each namespace's name is a key in
/// several, and object names repeat from namespace to namespace.
static NAMES: std::sync::LazyLock<Strings> = std::sync::LazyLock::new(Strings::default);

/// A namespace or object name, kept once for every cache that holds it.
pub(crate) fn share_name(name: &str) -> Arc<str> {
    NAMES.share(name)
}

/// How long a deletion is remembered against a late write of the operator's own (the response
/// to a write can arrive after the watch already reported the object deleted).
const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

pub(crate) fn revision(rv: Option<&str>) -> Option<u64> {
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
        if let Ok(i) = names.binary_search_by(|(n, _)| (**n).cmp(name)) {
            names.remove(i);
        }
        if names.is_empty() {
            map.remove(ns);
        } else if names.capacity() > 2 * names.len() {
            names.shrink_to_fit();
        }
    }
}

fn insert<V>(map: &mut ByNamespace<V>, ns: &str, name: &str, value: Arc<V>) {
    let names = match map.get_mut(ns) {
        Some(names) => names,
        None => map.entry(NAMES.share(ns)).or_insert_with(|| Vec::with_capacity(1)),
    };
    match names.binary_search_by(|(n, _)| (**n).cmp(name)) {
        Ok(i) => names[i].1 = value,
        Err(i) => names.insert(i, (NAMES.share(name), value)),
    }
}

/// Stores what `keep` makes of `obj`, or forgets the object when it keeps nothing (an update
/// can make an object stop mattering).
fn upsert<K: kube::Resource, V>(map: &mut ByNamespace<V>, obj: &K, keep: impl Fn(&K) -> Option<Arc<V>>) {
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    match keep(obj) {
        Some(value) => insert(map, &ns, &name, value),
        None => remove(map, &ns, &name),
    }
}

impl<V> NamespacedIndex<V> {
    /// Applies one watch event of kind `K`, keeping what `keep` makes of each object (shared:
    /// equal values may be one allocation).
    pub fn apply_with<K: kube::Resource>(&self, event: &watcher::Event<K>, keep: impl Fn(&K) -> Option<Arc<V>>) {
        match event {
            watcher::Event::Apply(obj) => upsert(&mut self.objects.write().unwrap(), obj, keep),
            watcher::Event::Delete(obj) => {
                let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
                if let Some(rv) = revision(obj.resource_version().as_deref()) {
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

    /// Records the operator's own write (`value`, made from the API server's response, at
    /// resourceVersion `written`) before the watch reports it, so a reconcile in between does not
    /// write the same object again. Only a newer revision than anything seen for that object
    /// counts: the response can arrive after the watch reported a later edit or the deletion,
    /// and a stale entry would hide that drift. `revision_of` reads a cached value's revision.
    pub fn apply_own(
        &self,
        ns: &str,
        name: &str,
        written: u64,
        value: Arc<V>,
        revision_of: impl Fn(&V) -> Option<u64>,
    ) {
        let mut objects = self.objects.write().unwrap();
        let cached = objects
            .get(ns)
            .and_then(|names| {
                names
                    .binary_search_by(|(n, _)| (**n).cmp(name))
                    .ok()
                    .map(|i| &names[i].1)
            })
            .and_then(|v| revision_of(v));
        let deleted = self
            .tombstones
            .lock()
            .unwrap()
            .get(&(ns.to_string(), name.to_string()))
            .map(|t| t.0);
        if cached.max(deleted).is_some_and(|seen| seen >= written) {
            return;
        }
        insert(&mut objects, ns, name, value);
    }

    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<V>> {
        let objects = self.objects.read().unwrap();
        let names = objects.get(namespace)?;
        let i = names.binary_search_by(|(n, _)| (**n).cmp(name)).ok()?;
        Some(names[i].1.clone())
    }

    /// The objects in one namespace, by name.
    pub fn in_namespace(&self, namespace: &str) -> BTreeMap<String, Arc<V>> {
        let objects = self.objects.read().unwrap();
        objects
            .get(namespace)
            .into_iter()
            .flatten()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    /// The namespaces that hold at least one object matching `pred`.
    pub fn namespaces_where(&self, pred: impl Fn(&V) -> bool) -> Vec<String> {
        let objects = self.objects.read().unwrap();
        objects
            .iter()
            .filter(|(_, names)| names.iter().any(|(_, o)| pred(o)))
            .map(|(ns, _)| ns.to_string())
            .collect()
    }

    /// Whether one namespace holds anything.
    pub fn holds_any(&self, namespace: &str) -> bool {
        self.objects.read().unwrap().contains_key(namespace)
    }

    /// Whether any kept value satisfies `pred` (stops at the first).
    pub fn any(&self, pred: impl Fn(&V) -> bool) -> bool {
        let objects = self.objects.read().unwrap();
        objects.values().any(|names| names.iter().any(|(_, o)| pred(o)))
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

    fn apply(index: &NamespacedIndex<NetworkPolicy>, event: watcher::Event<NetworkPolicy>) {
        index.apply_with(&event, |o| Some(Arc::new(o.clone())));
    }

    #[test]
    fn relist_replaces_contents_and_marks_ready() {
        let index = NamespacedIndex::default();
        assert!(!index.is_ready());
        apply(&index, watcher::Event::Init);
        apply(&index, watcher::Event::InitApply(np("a", "p1")));
        apply(&index, watcher::Event::InitApply(np("b", "p1")));
        apply(&index, watcher::Event::InitDone);
        assert!(index.is_ready());
        assert_eq!(index.in_namespace("a").len() + index.in_namespace("b").len(), 2);

        // A relist after a watch error drops what no longer exists.
        apply(&index, watcher::Event::Init);
        apply(&index, watcher::Event::InitApply(np("b", "p1")));
        assert_eq!(
            index.in_namespace("a").len(),
            1,
            "the old view stays until the relist completes"
        );
        apply(&index, watcher::Event::InitDone);
        assert!(index.in_namespace("a").is_empty());
        assert_eq!(index.in_namespace("b").len(), 1);
    }

    #[test]
    fn apply_and_delete_update_one_namespace_in_name_order() {
        let index = NamespacedIndex::default();
        for name in ["p3", "p1", "p2"] {
            apply(&index, watcher::Event::Apply(np("a", name)));
        }
        apply(&index, watcher::Event::Delete(np("a", "p1")));
        assert_eq!(index.in_namespace("a").keys().collect::<Vec<_>>(), vec!["p2", "p3"]);
        assert!(index.get("a", "p1").is_none());
        assert_eq!(index.get("a", "p3").unwrap().name_any(), "p3");
        assert_eq!(index.namespaces_where(|p| p.name_any() == "p2"), vec!["a".to_string()]);
        apply(&index, watcher::Event::Delete(np("a", "p2")));
        apply(&index, watcher::Event::Delete(np("a", "p3")));
        assert!(
            index.namespaces_where(|_| true).is_empty(),
            "an emptied namespace is forgotten"
        );
    }
}
