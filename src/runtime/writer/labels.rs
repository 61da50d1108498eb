//! The Namespace half of the writer: the Pod Security labels, the only part of a namespace the
//! operator writes, applied under its field manager so that it owns exactly those labels.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::json;

use super::NamespaceWriter;
use crate::runtime::context::ObjectResult;

impl NamespaceWriter<'_> {
    /// Applies exactly `labels` as this manager's Pod Security labels: labels it set before and
    /// no longer wants are released (removed); other labels are never touched.
    pub(super) async fn apply_labels(&self, labels: &BTreeMap<String, String>) -> ObjectResult {
        let api: Api<Namespace> = Api::all(self.ctx.client.clone());
        let patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns, "labels": labels}});
        self.count_write("apply", "Namespace");
        match api.patch(self.ns, &Self::params(), &Patch::Apply(&patch)).await {
            Ok(written) => {
                if let Some(rv) = written.resource_version().and_then(|rv| rv.parse().ok()) {
                    let mut map = self.ctx.labels_written.lock().unwrap();
                    map.insert(self.ns.to_string(), (rv, labels.clone()));
                }
                ObjectResult::Repaired(if labels.is_empty() { "Pruned" } else { "Updated" })
            }
            Err(e) => self.failed("Namespace", e),
        }
    }

    /// Whether this process wrote exactly `labels` to the namespace in a version the namespace
    /// cache has not caught up with yet (then there is nothing to write).
    pub(super) fn just_wrote(&self, ns_meta: &kube::api::ObjectMeta, labels: &BTreeMap<String, String>) -> bool {
        let mut map = self.ctx.labels_written.lock().unwrap();
        let Some((written, wrote)) = map.get(self.ns) else {
            return false;
        };
        let seen: Option<u64> = ns_meta.resource_version.as_ref().and_then(|rv| rv.parse().ok());
        if seen.is_none_or(|seen| seen >= *written) {
            map.remove(self.ns);
            return false;
        }
        wrote == labels
    }
}
