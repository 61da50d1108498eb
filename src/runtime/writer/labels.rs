//! The Namespace half of the writer: the Pod Security labels and the guard label, the only parts
//! of a namespace the operator writes, applied under its field manager so that it owns exactly
//! those labels.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::json;

use super::NamespaceWriter;
use crate::core::desired::PSA_PREFIX;
use crate::core::objects::{self, GUARD_LABEL, GUARD_VALUE};
use crate::runtime::context::ObjectResult;

impl NamespaceWriter<'_> {
    /// Applies exactly `labels` as this manager's Pod Security labels, with the guard label when
    /// the namespace is guarded: labels it set before and no longer wants are released
    /// (removed); other labels are never touched.
    pub(super) async fn apply_labels(&self, labels: &BTreeMap<String, String>) -> ObjectResult {
        let labels = &self.with_guard(labels);
        let api: Api<Namespace> = Api::all(self.ctx.client.clone());
        let patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns, "labels": labels}});
        self.count_write("apply", "Namespace");
        match api.patch(self.ns, &Self::params(), &Patch::Apply(&patch)).await {
            Ok(written) => {
                if let Some(rv) = written.resource_version().and_then(|rv| rv.parse().ok()) {
                    let mut map = self.ctx.labels_written.lock().unwrap();
                    map.insert(self.ns.to_string(), (rv, labels.clone()));
                }
                let pod_security = labels.keys().any(|k| k.starts_with(PSA_PREFIX));
                ObjectResult::Repaired(if pod_security { "Updated" } else { "Pruned" })
            }
            Err(e) => self.failed("Namespace", e),
        }
    }

    /// Whether this process wrote exactly `labels` to the namespace in a version the namespace
    /// cache has not caught up with yet (then there is nothing to write).
    pub(super) fn just_wrote(&self, ns_meta: &kube::api::ObjectMeta, labels: &BTreeMap<String, String>) -> bool {
        let labels = &self.with_guard(labels);
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

    /// `labels` with the guard label when the namespace is guarded.
    fn with_guard(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut all = labels.clone();
        if self.guarded {
            all.insert(GUARD_LABEL.into(), GUARD_VALUE.into());
        }
        all
    }

    /// Makes the guard label match the plan when no Pod Security write of this pass did: set where
    /// an enforcing baseline selects the namespace, removed (only if this operator set it)
    /// elsewhere. The Pod Security labels it owns are applied again as they are, so that they
    /// stay. None when there was nothing to write.
    pub(crate) async fn ensure_guard(&self, ns_meta: &kube::api::ObjectMeta) -> Option<ObjectResult> {
        let in_sync = |m: &kube::api::ObjectMeta| {
            objects::guard_held(m) == self.guarded && (self.guarded || !objects::guard_owned(m))
        };
        // The common case, on every pass over every namespace: nothing written lately, and the
        // snapshot agrees.
        if !self.ctx.labels_written.lock().unwrap().contains_key(self.ns) && in_sync(ns_meta) {
            return None;
        }
        // Judged on the newest namespace the cache holds, as the Pod Security labels are: a
        // write of this pass may have ended the memo against it.
        let newest = self.newest(ns_meta);
        let ns_meta = newest.as_ref().unwrap_or(ns_meta);
        let seen: Option<u64> = ns_meta.resource_version.as_ref().and_then(|rv| rv.parse().ok());
        let written = {
            let mut map = self.ctx.labels_written.lock().unwrap();
            match map.get(self.ns) {
                // The cache has caught up with that write: the memo has served.
                Some((rv, _)) if seen.is_some_and(|seen| seen >= *rv) => {
                    map.remove(self.ns);
                    None
                }
                other => other.cloned(),
            }
        };
        if let Some((_, wrote)) = written {
            // This pass (or one the cache has not caught up with) applied the labels, guard included.
            if wrote.contains_key(GUARD_LABEL) == self.guarded {
                return None;
            }
        } else if in_sync(ns_meta) {
            return None;
        }
        Some(self.apply_labels(&objects::owned_pod_security_labels(ns_meta)).await)
    }
}
