//! A cache of managed objects indexed by namespace, fed by a label-selected watch. A namespace
//! reconcile looks up only its own objects, so its cost does not grow with the cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

type ByNamespace<K> = HashMap<String, BTreeMap<String, Arc<K>>>;

/// Objects of kind `K` by namespace and name.
pub struct NamespacedIndex<K> {
    objects: RwLock<ByNamespace<K>>,
    /// The list being received during a (re)list; swapped in at `InitDone`.
    relist: RwLock<Option<ByNamespace<K>>>,
    ready: watch::Sender<bool>,
}

impl<K: Resource + Clone> Default for NamespacedIndex<K> {
    fn default() -> Self {
        Self {
            objects: RwLock::default(),
            relist: RwLock::default(),
            ready: watch::Sender::new(false),
        }
    }
}

fn insert<K: Resource>(map: &mut ByNamespace<K>, obj: K) {
    map.entry(obj.namespace().unwrap_or_default())
        .or_default()
        .insert(obj.name_any(), Arc::new(obj));
}

impl<K: Resource + Clone> NamespacedIndex<K> {
    /// Applies one watch event.
    pub fn apply(&self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(obj) => insert(&mut self.objects.write().unwrap(), obj.clone()),
            watcher::Event::Delete(obj) => {
                let mut objects = self.objects.write().unwrap();
                let ns = obj.namespace().unwrap_or_default();
                if let Some(names) = objects.get_mut(&ns) {
                    names.remove(&obj.name_any());
                    if names.is_empty() {
                        objects.remove(&ns);
                    }
                }
            }
            watcher::Event::Init => *self.relist.write().unwrap() = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                if let Some(list) = self.relist.write().unwrap().as_mut() {
                    insert(list, obj.clone());
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
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.objects.read().unwrap().get(namespace)?.get(name).cloned()
    }

    /// The objects in one namespace, by name.
    pub fn in_namespace(&self, namespace: &str) -> BTreeMap<String, Arc<K>> {
        self.objects.read().unwrap().get(namespace).cloned().unwrap_or_default()
    }

    /// The namespaces that hold at least one object matching `pred`.
    pub fn namespaces_where(&self, pred: impl Fn(&K) -> bool) -> Vec<String> {
        let objects = self.objects.read().unwrap();
        objects
            .iter()
            .filter(|(_, names)| names.values().any(|o| pred(o)))
            .map(|(ns, _)| ns.clone())
            .collect()
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
    fn apply_and_delete_update_one_namespace() {
        let index = NamespacedIndex::default();
        index.apply(&watcher::Event::Apply(np("a", "p1")));
        index.apply(&watcher::Event::Apply(np("a", "p2")));
        index.apply(&watcher::Event::Delete(np("a", "p1")));
        assert_eq!(index.in_namespace("a").keys().collect::<Vec<_>>(), vec!["p2"]);
        assert_eq!(index.namespaces_where(|p| p.name_any() == "p2"), vec!["a".to_string()]);
    }
}
