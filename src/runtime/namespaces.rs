//! What is kept of namespaces. The **catalog** knows every namespace, as little as deciding
//! selection and scope needs: its labels (but `kubernetes.io/metadata.name`, which the API
//! server sets to the name), which of them this operator owns, its resourceVersion and whether
//! it is terminating. Thousands of namespaces carry the same few label sets: each distinct set
//! is kept once and shared. The controller's store, which kube-runtime's reconcile loop reads,
//! holds a [`CachedNamespace`] only for the namespaces in scope (`runtime::scope`), put there as
//! they come into scope: a cluster of 30,000 namespaces of which baselines select 10,000 keeps
//! 10,000 of those (each carries a whole `ObjectMeta`, and its store key copies the name and
//! resourceVersion again) and 30,000 small catalog entries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};

use crate::core::objects;
use crate::runtime::index::{revision, share_name};
use crate::runtime::interner::{Interner, Strings};

/// The label the API server sets on every namespace, to its name.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

type Labels = Vec<(Arc<str>, Arc<str>)>;

/// Where the namespaces' shared parts are kept.
#[derive(Default)]
pub struct Shared {
    strings: Strings,
    labels: Interner<Labels, Labels>,
    owned: Interner<Vec<Arc<str>>, Vec<Arc<str>>>,
}

/// What is known of one namespace, in scope or not.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// The labels but [`NAME_LABEL`] when it holds the name, sorted by key.
    labels: Arc<Labels>,
    /// Whether [`NAME_LABEL`] is set to the name.
    name_label: bool,
    /// The label keys this operator owns (server-side apply), sorted.
    owned: Arc<Vec<Arc<str>>>,
    /// The resourceVersion, when it is a number (the API server's always are).
    resource_version: Option<u64>,
    /// Set while the namespace is terminating (boxed: nearly always None).
    deletion: Option<Box<Time>>,
}

impl Known {
    /// What is kept of `meta` as listed or watched.
    fn of(meta: &ObjectMeta, shared: &Shared) -> Self {
        let owned: Vec<Arc<str>> = objects::owned_labels(meta)
            .iter()
            .map(|k| shared.strings.share(k))
            .collect();
        let name = meta.name.as_deref().unwrap_or_default();
        let all = meta.labels.iter().flatten();
        let name_label = all.clone().any(|(k, v)| k == NAME_LABEL && v == name);
        let labels: Labels = all
            .filter(|(k, v)| !(name_label && k.as_str() == NAME_LABEL && v.as_str() == name))
            .map(|(k, v)| (shared.strings.share(k), shared.strings.share(v)))
            .collect();
        Self {
            labels: shared.labels.intern(labels),
            name_label,
            owned: shared.owned.intern(owned),
            resource_version: revision(meta.resource_version.as_deref()),
            deletion: meta.deletion_timestamp.clone().map(Box::new),
        }
    }

    /// Name, labels and the owned labels (in [`objects::OWNED_LABELS_ANNOTATION`]): what the
    /// core reads to select.
    pub fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(self.labels(name)),
            annotations: (!self.owned.is_empty()).then(|| {
                BTreeMap::from([(
                    objects::OWNED_LABELS_ANNOTATION.to_string(),
                    self.owned.iter().map(|k| &**k).collect::<Vec<_>>().join(","),
                )])
            }),
            ..Default::default()
        }
    }

    /// The labels, as the API server has them.
    pub fn labels(&self, name: &str) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = self
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if self.name_label {
            labels.insert(NAME_LABEL.into(), name.to_string());
        }
        labels
    }

    /// Whether the namespace carries a label this operator owns, or the guard label (whoever
    /// set it).
    pub fn carries_operator_labels(&self) -> bool {
        !self.owned.is_empty() || self.labels.iter().any(|(k, _)| &**k == objects::GUARD_LABEL)
    }

    /// The label keys this operator owns.
    pub fn owned_labels(&self) -> BTreeSet<String> {
        self.owned.iter().map(|k| k.to_string()).collect()
    }
}

/// A namespace as the controller's store holds it (the namespaces in scope).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedNamespace {
    /// Name, resourceVersion and deletionTimestamp; nothing else.
    pub metadata: ObjectMeta,
    #[serde(skip)]
    known: Known,
}

impl kube::Resource for CachedNamespace {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "Namespace".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "namespaces".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CachedNamespace {
    pub fn of(name: &str, known: &Known) -> Self {
        Self {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                resource_version: known.resource_version.map(|rv| rv.to_string()),
                deletion_timestamp: known.deletion.as_deref().cloned(),
                ..Default::default()
            },
            known: known.clone(),
        }
    }

    /// The metadata the core reads: name, labels, deletion, and the owned labels (in
    /// [`objects::OWNED_LABELS_ANNOTATION`]).
    pub fn meta_with_labels(&self) -> ObjectMeta {
        let meta = &self.metadata;
        ObjectMeta {
            resource_version: meta.resource_version.clone(),
            deletion_timestamp: meta.deletion_timestamp.clone(),
            ..self.known.meta(meta.name.as_deref().unwrap_or_default())
        }
    }

    pub fn known(&self) -> &Known {
        &self.known
    }

    /// The label keys this operator owns.
    pub fn owned_labels(&self) -> BTreeSet<String> {
        self.known.owned_labels()
    }
}

type ByName = HashMap<Arc<str>, Known>;

/// Every namespace ([`Known`]), and the controller's store of those in scope.
pub struct Catalog {
    shared: Shared,
    known: RwLock<ByName>,
    /// The list being received during a (re)list; swapped in at `InitDone`.
    relist: Mutex<Option<ByName>>,
    store: Mutex<Writer<CachedNamespace>>,
    reader: Store<CachedNamespace>,
}

impl Catalog {
    pub fn new(store: Writer<CachedNamespace>) -> Self {
        Self {
            shared: Shared::default(),
            known: RwLock::default(),
            relist: Mutex::default(),
            reader: store.as_reader(),
            store: Mutex::new(store),
        }
    }

    /// Records one event of the watch of every namespace. Returns the namespace an update
    /// (`Apply`) or deletion is about; the caller decides whether the store holds it. At
    /// `InitDone` the store is emptied: the caller restocks it ([`Catalog::restock`]).
    pub fn record(&self, event: &watcher::Event<PartialObjectMeta<Namespace>>) -> Option<(Arc<str>, Option<Known>)> {
        use watcher::Event::*;
        match event {
            Apply(o) => {
                let (name, known) = self.entry(&o.metadata);
                self.known.write().unwrap().insert(name.clone(), known.clone());
                Some((name, Some(known)))
            }
            Delete(o) => {
                let name = share_name(o.metadata.name.as_deref().unwrap_or_default());
                self.known.write().unwrap().remove(&name);
                if let Some(list) = self.relist.lock().unwrap().as_mut() {
                    list.remove(&name);
                }
                Some((name, None))
            }
            Init => {
                *self.relist.lock().unwrap() = Some(HashMap::new());
                None
            }
            InitApply(o) => {
                let (name, known) = self.entry(&o.metadata);
                if let Some(list) = self.relist.lock().unwrap().as_mut() {
                    list.insert(name, known);
                }
                None
            }
            InitDone => {
                if let Some(list) = self.relist.lock().unwrap().take() {
                    *self.known.write().unwrap() = list;
                }
                None
            }
        }
    }

    fn entry(&self, meta: &ObjectMeta) -> (Arc<str>, Known) {
        // The same string as the indexes' key for the namespace.
        let name = share_name(meta.name.as_deref().unwrap_or_default());
        (name, Known::of(meta, &self.shared))
    }

    /// The controller's store (the namespaces in scope).
    pub fn store(&self) -> Store<CachedNamespace> {
        self.reader.clone()
    }

    pub fn get(&self, name: &str) -> Option<Known> {
        self.known.read().unwrap().get(name).cloned()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.known.read().unwrap().contains_key(name)
    }

    /// Every namespace known, at this moment.
    pub fn all(&self) -> Vec<(Arc<str>, Known)> {
        self.known
            .read()
            .unwrap()
            .iter()
            .map(|(name, known)| (name.clone(), known.clone()))
            .collect()
    }

    /// Puts a namespace in the controller's store (unless it holds that version already) and
    /// returns its key there.
    pub fn admit(&self, name: &str, known: &Known) -> ObjectRef<CachedNamespace> {
        let key = ObjectRef::new(name);
        let held = self.reader.get(&key);
        let same = |h: &CachedNamespace| {
            h.known.resource_version == known.resource_version && Arc::ptr_eq(&h.known.labels, &known.labels)
        };
        if held.is_none_or(|h| !same(&h)) {
            let cached = CachedNamespace::of(name, known);
            self.store
                .lock()
                .unwrap()
                .apply_watcher_event(&watcher::Event::Apply(cached));
        }
        key
    }

    /// Takes a namespace out of the controller's store.
    pub fn evict(&self, name: &str) {
        let key = ObjectRef::new(name);
        if self.reader.get(&key).is_some() {
            let gone = CachedNamespace::of(name, &Known::default());
            self.store
                .lock()
                .unwrap()
                .apply_watcher_event(&watcher::Event::Delete(gone));
        }
    }

    /// Fills the controller's store anew with the namespaces `in_scope` chooses (after a
    /// re-list of all of them), in one step: its readers see the old contents until then.
    pub fn restock(&self, in_scope: impl Fn(&str, &Known) -> bool) {
        let chosen: Vec<CachedNamespace> = self
            .all()
            .iter()
            .filter(|(name, known)| in_scope(name, known))
            .map(|(name, known)| CachedNamespace::of(name, known))
            .collect();
        let mut store = self.store.lock().unwrap();
        store.apply_watcher_event(&watcher::Event::Init);
        for ns in chosen {
            store.apply_watcher_event(&watcher::Event::InitApply(ns));
        }
        store.apply_watcher_event(&watcher::Event::InitDone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listed(name: &str, rv: &str, labels: serde_json::Value) -> PartialObjectMeta<Namespace> {
        serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "uid": "u1", "resourceVersion": rv, "labels": labels}
        }))
        .unwrap()
    }

    #[test]
    fn the_core_reads_the_same_labels_and_owned_labels_as_from_the_api() {
        let listed: PartialObjectMeta<Namespace> = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "team-a", "uid": "u1", "resourceVersion": "7",
                "labels": {"team": "a", "pod-security.kubernetes.io/enforce": "baseline", NAME_LABEL: "team-a"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": objects::FIELD_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {"f:pod-security.kubernetes.io/enforce": {}}}}}]}
        }))
        .unwrap();
        let shared = Shared::default();
        let known = Known::of(&listed.metadata, &shared);
        let cached = CachedNamespace::of("team-a", &known);
        let meta = cached.meta_with_labels();
        assert_eq!(
            objects::selectable_labels(&meta),
            objects::selectable_labels(&listed.metadata)
        );
        assert_eq!(objects::owned_labels(&meta), objects::owned_labels(&listed.metadata));
        assert_eq!(cached.owned_labels(), objects::owned_labels(&listed.metadata));
        assert!(known.carries_operator_labels());
        assert_eq!(meta.labels, listed.metadata.labels);
        assert_eq!(
            (meta.name, meta.uid, meta.resource_version),
            (Some("team-a".into()), None, Some("7".into()))
        );
        // Another namespace with the same labels (but its name) shares them.
        let mut other = listed;
        other.metadata.name = Some("team-b".into());
        other
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(NAME_LABEL.into(), "team-b".into());
        let other = Known::of(&other.metadata, &shared);
        assert!(Arc::ptr_eq(&known.labels, &other.labels));
        assert_eq!(other.labels("team-b")[NAME_LABEL], "team-b");
    }

    #[test]
    fn the_catalog_knows_every_namespace_and_the_store_holds_the_admitted_ones() {
        let (reader, writer) = kube::runtime::reflector::store::<CachedNamespace>();
        let catalog = Catalog::new(writer);
        catalog.record(&watcher::Event::Init);
        for (name, team) in [("a", "x"), ("b", "y"), ("c", "x")] {
            catalog.record(&watcher::Event::InitApply(listed(name, "1", json!({"team": team}))));
        }
        catalog.record(&watcher::Event::InitDone);
        let in_x = |_: &str, k: &Known| k.labels.iter().any(|(k, v)| &**k == "team" && &**v == "x");
        catalog.restock(in_x);
        let mut held: Vec<String> = reader
            .state()
            .iter()
            .map(|n| n.metadata.name.clone().unwrap())
            .collect();
        held.sort();
        assert_eq!(held, ["a", "c"]);
        assert_eq!(catalog.all().len(), 3);

        // An update is recorded; the store gets it only when admitted, at its new version.
        let (name, known) = catalog
            .record(&watcher::Event::Apply(listed("b", "2", json!({"team": "x"}))))
            .unwrap();
        let known = known.unwrap();
        assert!(reader.get(&ObjectRef::new("b")).is_none());
        catalog.admit(&name, &known);
        let b = reader.get(&ObjectRef::new("b")).unwrap();
        assert_eq!(b.metadata.resource_version.as_deref(), Some("2"));
        assert_eq!(b.meta_with_labels().labels.unwrap()["team"], "x");

        // Evicted from the store, still known; deleted, forgotten.
        catalog.evict("a");
        assert!(reader.get(&ObjectRef::new("a")).is_none());
        assert!(catalog.contains("a"));
        catalog.record(&watcher::Event::Delete(listed("a", "3", json!({}))));
        assert!(!catalog.contains("a"));
    }
}
