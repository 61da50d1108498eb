//! What the namespace cache keeps of each namespace: its name, uid, resourceVersion and deletion
//! mark, its labels (strings shared across namespaces: thousands of namespaces carry the same few
//! keys and values) and which of them this operator owns. The controller's store holds these;
//! a reconcile asks for the metadata the core reads ([`CachedNamespace::meta_with_labels`]), built when needed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PartialObjectMeta;
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};

use crate::core::objects;
use crate::runtime::interner::Strings;

/// A namespace as the controller caches it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedNamespace {
    /// Name, uid, resourceVersion and deletionTimestamp; nothing else.
    pub metadata: ObjectMeta,
    #[serde(skip)]
    labels: Box<[(Arc<str>, Arc<str>)]>,
    /// The label keys this operator owns (server-side apply), sorted.
    #[serde(skip)]
    owned: Box<[Arc<str>]>,
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
    pub fn of(ns: PartialObjectMeta<Namespace>, strings: &Strings) -> Self {
        let owned = objects::owned_labels(&ns.metadata);
        let meta = ns.metadata;
        Self {
            labels: meta
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| (strings.share(k), strings.share(v)))
                .collect(),
            owned: owned.iter().map(|k| strings.share(k)).collect(),
            metadata: ObjectMeta {
                name: meta.name,
                uid: meta.uid,
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
        meta.labels = Some(
            self.labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        meta.annotations = (!self.owned.is_empty()).then(|| {
            BTreeMap::from([(
                objects::OWNED_LABELS_ANNOTATION.to_string(),
                self.owned.iter().map(|k| &**k).collect::<Vec<_>>().join(","),
            )])
        });
        meta
    }

    /// The label keys this operator owns.
    pub fn owned_labels(&self) -> BTreeSet<String> {
        self.owned.iter().map(|k| k.to_string()).collect()
    }
}

/// The watch's events, as cached namespaces.
pub fn cached(
    event: watcher::Event<PartialObjectMeta<Namespace>>,
    strings: &Strings,
) -> watcher::Event<CachedNamespace> {
    use watcher::Event::*;
    match event {
        Apply(o) => Apply(CachedNamespace::of(o, strings)),
        Delete(o) => Delete(CachedNamespace::of(o, strings)),
        Init => Init,
        InitApply(o) => InitApply(CachedNamespace::of(o, strings)),
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
                "labels": {"team": "a", "pod-security.kubernetes.io/enforce": "baseline"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": objects::FIELD_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {"f:pod-security.kubernetes.io/enforce": {}}}}}]}
        }))
        .unwrap();
        let strings = Strings::default();
        let cached = CachedNamespace::of(listed.clone(), &strings);
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
            (Some("team-a".into()), Some("u1".into()), Some("7".into()))
        );
        // A second namespace with the same labels shares their strings.
        let other = CachedNamespace::of(listed, &strings);
        assert!(Arc::ptr_eq(&cached.labels[0].0, &other.labels[0].0));
    }
}
