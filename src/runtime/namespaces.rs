//! What the namespace cache keeps of each namespace: its name, resourceVersion and deletion mark
//! (not its uid: nothing reads it, and the controller's store would keep it twice), its labels
//! and which of them this operator owns. Thousands of namespaces carry the same few label sets
//! (but for `kubernetes.io/metadata.name`, which the API server sets to the name): each distinct
//! set is kept once and shared. The controller's store holds these; a reconcile asks for the
//! metadata the core reads ([`CachedNamespace::meta_with_labels`]), built when needed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PartialObjectMeta;
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};

use crate::core::objects;
use crate::runtime::interner::{Interner, Strings};

/// The label the API server sets on every namespace, to its name.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

type Labels = Vec<(Arc<str>, Arc<str>)>;

/// Where the cached namespaces' shared parts are kept.
#[derive(Default)]
pub struct Shared {
    strings: Strings,
    labels: Interner<Labels, Labels>,
    owned: Interner<Vec<Arc<str>>, Vec<Arc<str>>>,
}

/// A namespace as the controller caches it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedNamespace {
    /// Name, resourceVersion and deletionTimestamp; nothing else.
    pub metadata: ObjectMeta,
    /// The labels but [`NAME_LABEL`] when it holds the name, sorted by key.
    #[serde(skip)]
    labels: Arc<Labels>,
    /// Whether [`NAME_LABEL`] is set to the name.
    #[serde(skip)]
    name_label: bool,
    /// The label keys this operator owns (server-side apply), sorted.
    #[serde(skip)]
    owned: Arc<Vec<Arc<str>>>,
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
    /// What is kept of `ns` as listed or watched.
    pub fn of(ns: PartialObjectMeta<Namespace>, shared: &Shared) -> Self {
        let owned: Vec<Arc<str>> = objects::owned_labels(&ns.metadata)
            .iter()
            .map(|k| shared.strings.share(k))
            .collect();
        let meta = ns.metadata;
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
            metadata: ObjectMeta {
                name: meta.name,
                resource_version: meta.resource_version,
                deletion_timestamp: meta.deletion_timestamp,
                ..Default::default()
            },
        }
    }

    /// The metadata the core reads: name, labels, deletion, and the owned labels (in
    /// [`objects::OWNED_LABELS_ANNOTATION`]).
    pub fn meta_with_labels(&self) -> ObjectMeta {
        let mut meta = self.metadata.clone();
        let mut labels: BTreeMap<String, String> = self
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if self.name_label {
            labels.insert(NAME_LABEL.into(), meta.name.clone().unwrap_or_default());
        }
        meta.labels = Some(labels);
        meta.annotations = (!self.owned.is_empty()).then(|| {
            BTreeMap::from([(
                objects::OWNED_LABELS_ANNOTATION.to_string(),
                self.owned.iter().map(|k| &**k).collect::<Vec<_>>().join(","),
            )])
        });
        meta
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

/// The watch's events, as cached namespaces.
pub fn cached(event: watcher::Event<PartialObjectMeta<Namespace>>, shared: &Shared) -> watcher::Event<CachedNamespace> {
    use watcher::Event::*;
    match event {
        Apply(o) => Apply(CachedNamespace::of(o, shared)),
        Delete(o) => Delete(CachedNamespace::of(o, shared)),
        Init => Init,
        InitApply(o) => InitApply(CachedNamespace::of(o, shared)),
        InitDone => InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let cached = CachedNamespace::of(listed.clone(), &shared);
        let meta = cached.meta_with_labels();
        assert_eq!(
            objects::selectable_labels(&meta),
            objects::selectable_labels(&listed.metadata)
        );
        assert_eq!(objects::owned_labels(&meta), objects::owned_labels(&listed.metadata));
        assert_eq!(cached.owned_labels(), objects::owned_labels(&listed.metadata));
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
        let other = CachedNamespace::of(other, &shared);
        assert!(Arc::ptr_eq(&cached.labels, &other.labels));
        assert_eq!(other.meta_with_labels().labels.unwrap()[NAME_LABEL], "team-b");
    }
}
