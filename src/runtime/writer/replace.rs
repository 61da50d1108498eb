//! Replacing an object whose immutable fields change (a binding's roleRef): it is deleted and
//! made again. The API server must first accept the new object (a dry run under a scratch
//! name: for a binding the escalation check and validation run, nothing is stored), so a refused
//! role never leaves the namespace without the old binding; and only what a baseline made is
//! deleted.

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use tracing::warn;

use super::{Cached, NamespaceWriter};
use crate::core::objects::{self, FIELD_MANAGER};
use crate::runtime::context::ObjectResult;

impl NamespaceWriter<'_> {
    /// Deletes `existing` so that `desired`, whose immutable fields differ, can be written; Err
    /// is the result to report when it may not or cannot be.
    pub(super) async fn make_way_for<K: Cached>(
        &self,
        api: &Api<K>,
        name: &str,
        existing: &K,
        desired: &K,
    ) -> Result<(), ObjectResult> {
        let kind = K::kind(&()).to_string();
        // Replacing deletes, and the operator deletes only what a baseline made: a hand-made
        // object stays, reported, until someone removes it.
        if !objects::has_baseline_owner(existing.meta()) {
            return Err(ObjectResult::Failed {
                reason: "Bypassed".into(),
                message: format!(
                    "{kind} {name} exists, made by someone else, and {}; the baseline's {kind} {}, which cannot change in place. kube-baseline deletes only what it made: delete this {kind} and the baseline's is created",
                    existing.immutable_summary(),
                    desired.immutable_summary(),
                ),
            });
        }
        let old = existing;
        let mut probe = desired.clone();
        probe.meta_mut().name = Some(format!(
            "{}-kube-baseline-probe",
            name.chars().take(200).collect::<String>()
        ));
        let dry_run = PostParams {
            dry_run: true,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        self.count_write("create", &kind);
        if let Err(e) = api.create(&dry_run, &probe).await {
            // The replacement is refused; the rest still follows the baseline (a binding's
            // subjects under its old role), so a group removed from the baseline does not stay
            // bound.
            if objects::is_managed(old.meta()) {
                let in_place = K::keeping_immutable_of(desired, old);
                if !K::in_sync(old, &in_place) {
                    self.count_write("apply", &kind);
                    match api
                        .patch(name, &NamespaceWriter::params(), &Patch::Apply(&in_place))
                        .await
                    {
                        Ok(written) => K::managed(self.ctx).apply_own(written),
                        Err(e) => {
                            warn!(namespace = self.ns, error = %e, "could not update what may change in place")
                        }
                    }
                }
            }
            return Err(self.failed(&kind, e));
        }
        // The fence lets the operator's identity delete only bindings that carry its labels:
        // one a baseline made whose labels were stripped gets them back first.
        if !objects::is_managed(old.meta()) {
            let mark = json!({"metadata": {"labels": desired.meta().labels}});
            self.count_write("patch", &kind);
            if let Err(e) = api.patch(name, &PatchParams::default(), &Patch::Merge(&mark)).await {
                return Err(self.failed(&kind, e));
            }
        }
        self.count_write("delete", &kind);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: old.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = api.delete(name, &dp).await
            && !matches!(&e, kube::Error::Api(s) if s.code == 404)
        {
            return Err(self.failed(&kind, e));
        }
        Ok(())
    }
}
