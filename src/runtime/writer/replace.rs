//! Replacing a binding whose role changes: roleRef is immutable, so the binding is deleted and
//! made again. The API server must first accept the new binding (a dry run under a scratch
//! name: the escalation check and validation run, nothing is stored), so a refused role never
//! leaves the namespace without the old binding; and only what a baseline made is deleted.

use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use tracing::warn;

use super::NamespaceWriter;
use crate::core::objects::{self, FIELD_MANAGER};
use crate::runtime::context::ObjectResult;

impl NamespaceWriter<'_> {
    /// Deletes `existing` so that `desired`, bound to another role, can be written; Err is the
    /// result to report when it may not or cannot be.
    pub(super) async fn make_way_for(
        &self,
        api: &Api<RoleBinding>,
        name: &str,
        existing: &RoleBinding,
        desired: &RoleBinding,
    ) -> Result<(), ObjectResult> {
        // Replacing deletes, and the operator deletes only what a baseline made: a hand-made
        // binding to another role stays, reported, until someone removes it.
        if !objects::has_baseline_owner(&existing.metadata) {
            return Err(ObjectResult::Failed {
                reason: "Bypassed".into(),
                message: format!(
                    "RoleBinding {name} exists, made by someone else, and binds {} {}; the baseline binds {} {} and a binding's role cannot change in place. kube-baseline deletes only what it made: delete this binding and the baseline's is created",
                    existing.role_ref.kind, existing.role_ref.name, desired.role_ref.kind, desired.role_ref.name
                ),
            });
        }
        let old = existing;
        let mut probe = desired.clone();
        probe.metadata.name = Some(format!(
            "{}-kube-baseline-probe",
            name.chars().take(200).collect::<String>()
        ));
        let dry_run = PostParams {
            dry_run: true,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        self.count_write("create", "RoleBinding");
        if let Err(e) = api.create(&dry_run, &probe).await {
            // The new role is refused; the subjects still follow the baseline under the old
            // role, so a group removed from the baseline does not stay bound.
            if objects::is_managed(&old.metadata) {
                let mut keep_role = desired.clone();
                keep_role.role_ref = old.role_ref.clone();
                if !objects::binding_in_sync(old, &keep_role) {
                    self.count_write("apply", "RoleBinding");
                    match api
                        .patch(name, &NamespaceWriter::params(), &Patch::Apply(&keep_role))
                        .await
                    {
                        Ok(written) => self.ctx.bindings.apply_own(written),
                        Err(e) => {
                            warn!(namespace = self.ns, error = %e, "could not update subjects under the old role")
                        }
                    }
                }
            }
            return Err(self.failed("RoleBinding", e));
        }
        // The fence lets the operator's identity delete only bindings that carry its labels:
        // one a baseline made whose labels were stripped gets them back first.
        if !objects::is_managed(&old.metadata) {
            let mark = json!({"metadata": {"labels": desired.metadata.labels}});
            self.count_write("patch", "RoleBinding");
            if let Err(e) = api.patch(name, &PatchParams::default(), &Patch::Merge(&mark)).await {
                return Err(self.failed("RoleBinding", e));
            }
        }
        self.count_write("delete", "RoleBinding");
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
            return Err(self.failed("RoleBinding", e));
        }
        Ok(())
    }
}
