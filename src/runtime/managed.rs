//! The cache of the objects this operator manages (the NetworkPolicies and RoleBindings it made
//! or adopted). Every namespace a baseline selects holds the same content under the same labels
//! and owner, so an entry keeps that part once, shared by all the objects that have it, and on
//! its own only what differs per object: uid, resourceVersion, generation and creation time.
//! An object costs a few hundred bytes instead of a few kilobytes; readers get it whole.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use kube::runtime::watcher;
use serde::Serialize;

use crate::core::objects;
use crate::runtime::index::{NamespacedIndex, revision};
use crate::runtime::interner::Interner;

/// One cached object: the part it shares with others of the same content, and its own fields.
pub struct Slim<K> {
    shared: Arc<K>,
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    generation: Option<i64>,
    created: Option<Time>,
}

impl<K: Resource + Clone> Slim<K> {
    /// Labels, annotations, owner references: everything but name, namespace and the fields of
    /// this object alone.
    pub fn meta(&self) -> &ObjectMeta {
        self.shared.meta()
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// The object as the API server last returned it (without managedFields).
    pub fn whole(&self, ns: &str, name: &str) -> K {
        let mut obj = (*self.shared).clone();
        let meta = obj.meta_mut();
        meta.namespace = Some(ns.to_string());
        meta.name = Some(name.to_string());
        meta.uid = self.uid.as_deref().map(str::to_string);
        meta.resource_version = self.resource_version.as_deref().map(str::to_string);
        meta.generation = self.generation;
        meta.creation_timestamp = self.created.clone();
        obj
    }
}

/// The managed objects of one kind, by namespace and name.
pub struct ManagedIndex<K> {
    index: NamespacedIndex<Slim<K>>,
    shared: Interner<String, K>,
}

impl<K> Default for ManagedIndex<K> {
    fn default() -> Self {
        Self {
            index: NamespacedIndex::default(),
            shared: Interner::default(),
        }
    }
}

impl<K: Resource + Clone + Serialize> ManagedIndex<K> {
    fn slim(&self, obj: &K) -> Arc<Slim<K>> {
        let meta = obj.meta();
        let (uid, resource_version) = (meta.uid.clone(), meta.resource_version.clone());
        let (generation, created) = (meta.generation, meta.creation_timestamp.clone());
        let mut common = obj.clone();
        let m = common.meta_mut();
        m.name = None;
        m.namespace = None;
        m.uid = None;
        m.resource_version = None;
        m.generation = None;
        m.creation_timestamp = None;
        m.managed_fields = None;
        // The serialized form is the identity of the shared part (the k8s types are not Hash).
        let key = serde_json::to_string(&common).unwrap_or_default();
        Arc::new(Slim {
            shared: self.shared.share(key, || common),
            uid: uid.map(String::into_boxed_str),
            resource_version: resource_version.map(String::into_boxed_str),
            generation,
            created,
        })
    }

    /// Applies one watch event: only objects carrying the operator's labels are kept.
    pub fn apply(&self, event: &watcher::Event<K>) {
        self.index
            .apply_with(event, |o: &K| objects::is_managed(o.meta()).then(|| self.slim(o)));
    }

    /// Records the operator's own write (the API server's response) before the watch reports
    /// it; see [`NamespacedIndex::apply_own`].
    pub fn apply_own(&self, written: K) {
        let meta = written.meta();
        let Some(rv) = revision(meta.resource_version.as_deref()) else {
            return;
        };
        let ns = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        self.index
            .apply_own(&ns, &name, rv, self.slim(&written), |s| revision(s.resource_version()));
    }

    /// Whether a watch event is the echo of this operator's own write: an update whose
    /// resourceVersion the cache already holds (written into it from the write's response).
    pub fn is_echo(&self, event: &watcher::Event<K>) -> bool {
        let watcher::Event::Apply(o) = event else {
            return false;
        };
        let meta = o.meta();
        let (ns, name) = (
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
        meta.resource_version.is_some()
            && self
                .index
                .get(ns, name)
                .is_some_and(|cached| cached.resource_version() == meta.resource_version.as_deref())
    }

    /// One object, whole.
    pub fn get(&self, ns: &str, name: &str) -> Option<K> {
        self.index.get(ns, name).map(|s| s.whole(ns, name))
    }

    /// The objects of one namespace, whole, by name.
    pub fn in_namespace(&self, ns: &str) -> BTreeMap<String, K> {
        self.index
            .in_namespace(ns)
            .into_iter()
            .map(|(name, s)| {
                let whole = s.whole(ns, &name);
                (name, whole)
            })
            .collect()
    }

    /// Whether one namespace holds a managed object.
    pub fn holds_any(&self, ns: &str) -> bool {
        self.index.holds_any(ns)
    }

    /// The namespaces holding an object whose labels, annotations or owners match `pred`.
    pub fn namespaces_where(&self, pred: impl Fn(&ObjectMeta) -> bool) -> Vec<String> {
        self.index.namespaces_where(|s| pred(s.meta()))
    }

    /// Whether any object's labels, annotations or owners match `pred`. Those live in the shared
    /// parts, so when no shared part still in use matches (the usual answer), no object does, and
    /// the objects themselves are not looked at.
    pub fn any(&self, pred: impl Fn(&ObjectMeta) -> bool) -> bool {
        self.shared.any_alive(|k| pred(k.meta())) && self.index.any(|s| pred(s.meta()))
    }

    /// Forgets one object (after releasing it, before the watch reports that).
    pub fn forget(&self, obj: &K) {
        self.index
            .apply_with(&watcher::Event::Delete(obj.clone()), |_: &K| None);
    }

    pub async fn wait_until_ready(&self) {
        self.index.wait_until_ready().await
    }

    /// How many distinct shared parts are held.
    pub fn shared_parts(&self) -> usize {
        self.shared.entries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use serde_json::json;

    fn managed(ns: &str, rv: &str, baseline: &str) -> NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": "restrict-instance-metadata", "namespace": ns, "uid": format!("uid-{ns}"),
                         "resourceVersion": rv, "generation": 1, "creationTimestamp": "2026-11-28T18:00:00Z",
                         "labels": {"app.kubernetes.io/managed-by": "kube-baseline", "kubebaseline.io/baseline": baseline}},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]}]}
        }))
        .unwrap()
    }

    #[test]
    fn objects_of_the_same_content_share_it_and_come_back_whole() {
        let index = ManagedIndex::default();
        for (i, ns) in ["a", "b", "c"].iter().enumerate() {
            index.apply(&watcher::Event::Apply(managed(ns, &format!("{}", 10 + i), "aks")));
        }
        index.apply(&watcher::Event::Apply(managed("d", "20", "other")));
        assert_eq!(index.shared_parts(), 2, "one shared part per distinct content");
        for (i, ns) in ["a", "b", "c"].iter().enumerate() {
            let rv = format!("{}", 10 + i);
            assert_eq!(
                index.get(ns, "restrict-instance-metadata"),
                Some(managed(ns, &rv, "aks"))
            );
        }
        let of_other = |m: &ObjectMeta| {
            m.labels
                .as_ref()
                .and_then(|l| l.get(objects::BASELINE_LABEL))
                .is_some_and(|b| b == "other")
        };
        assert_eq!(index.namespaces_where(of_other), vec!["d"]);
    }

    #[test]
    fn any_finds_an_object_by_its_shared_part_and_only_while_one_holds_it() {
        let index = ManagedIndex::default();
        let of = |baseline: &'static str| {
            move |m: &ObjectMeta| {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(objects::BASELINE_LABEL))
                    .is_some_and(|b| b == baseline)
            }
        };
        index.apply(&watcher::Event::Apply(managed("a", "1", "aks")));
        index.apply(&watcher::Event::Apply(managed("b", "2", "other")));
        assert!(index.any(of("aks")) && index.any(of("other")));
        assert!(!index.any(of("none")));
        index.forget(&managed("b", "2", "other"));
        assert!(!index.any(of("other")), "no object holds that content any more");
        assert!(index.any(of("aks")));
    }

    #[test]
    fn objects_without_the_operator_s_labels_are_not_kept() {
        let index = ManagedIndex::default();
        let mut foreign = managed("a", "1", "aks");
        foreign.metadata.labels = None;
        index.apply(&watcher::Event::Apply(foreign));
        assert!(index.get("a", "restrict-instance-metadata").is_none());
    }

    #[test]
    fn a_late_response_to_an_own_write_never_hides_a_newer_change() {
        let at = |rv: &str| managed("a", rv, "aks");
        let index = ManagedIndex::default();
        index.apply(&watcher::Event::Apply(at("10")));
        // The watch already reported the deletion (rv 12) when the response of a write (rv 11)
        // comes back: the object stays gone.
        index.apply(&watcher::Event::Delete(at("12")));
        index.apply_own(at("11"));
        assert!(index.get("a", "restrict-instance-metadata").is_none());
        // A newer own write counts, and its echo is recognised.
        index.apply_own(at("13"));
        assert!(index.is_echo(&watcher::Event::Apply(at("13"))));
        assert!(!index.is_echo(&watcher::Event::Apply(at("14"))));
        // An edit seen by the watch (rv 15) is not overwritten by an older response (rv 14).
        index.apply(&watcher::Event::Apply(at("15")));
        index.apply_own(at("14"));
        let cached = index.get("a", "restrict-instance-metadata").unwrap();
        assert_eq!(cached.metadata.resource_version.as_deref(), Some("15"));
    }
}
