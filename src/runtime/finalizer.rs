//! The release finalizer (`kubebaseline.io/release`): a baseline that has something to release
//! when it is deleted (objects it adopted, or everything with deletionPolicy Orphan) carries it,
//! so the garbage collector cannot delete those objects first. It is added before the first
//! write that makes it needed, and removed once nothing is left to release (or when no longer
//! needed). Written by server-side apply under its own field manager, so other finalizers stay.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::api::{DeletionPolicy, SecurityBaseline};
use crate::core::objects::{self, BASELINE_LABEL, RELEASE_FINALIZER};
use crate::runtime::context::Context;

const MANAGER: &str = "kube-baseline-finalizer";

fn has_finalizer(b: &SecurityBaseline) -> bool {
    b.finalizers().iter().any(|f| f == RELEASE_FINALIZER)
}

/// Whether `b` is being deleted and still waits for the operator to release what it must.
pub fn releasing(b: &SecurityBaseline) -> bool {
    b.metadata.deletion_timestamp.is_some() && has_finalizer(b)
}

async fn set(ctx: &Context, name: &str, on: bool) -> kube::Result<()> {
    // Untyped: the response of a baseline the operator cannot decode must not fail the write.
    let api: Api<kube::api::DynamicObject> = Api::all_with(
        ctx.client.clone(),
        &kube::api::ApiResource::erase::<SecurityBaseline>(&()),
    );
    let finalizers: Vec<&str> = if on { vec![RELEASE_FINALIZER] } else { vec![] };
    let patch = json!({
        "apiVersion": SecurityBaseline::api_version(&()),
        "kind": SecurityBaseline::kind(&()),
        "metadata": {"name": name, "finalizers": finalizers},
    });
    api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    info!(baseline = name, finalizer = RELEASE_FINALIZER, on, "finalizer written");
    Ok(())
}

/// Adds the finalizer unless the cached baseline already has it (or is being deleted: a
/// finalizer cannot be added then, and nothing new is adopted for it).
pub async fn ensure(ctx: &Context, baseline: &str) -> kube::Result<()> {
    match ctx.baselines.get(&ObjectRef::new(baseline)) {
        Some(b) if has_finalizer(&b) || b.metadata.deletion_timestamp.is_some() => Ok(()),
        Some(_) if ctx.finalized.lock().unwrap().contains(baseline) => Ok(()),
        Some(_) => {
            set(ctx, baseline, true).await?;
            ctx.finalized.lock().unwrap().insert(baseline.to_string());
            Ok(())
        }
        None => Ok(()),
    }
}

/// Whether anything labelled for `b` and owned by it is still to be released.
fn left_to_release(ctx: &Context, b: &SecurityBaseline) -> bool {
    let (name, uid) = (b.name_any(), b.uid().unwrap_or_default());
    let orphan = b.spec.deletion_policy == DeletionPolicy::Orphan;
    let pending = |meta: &kube::api::ObjectMeta| {
        meta.labels.as_ref().and_then(|l| l.get(BASELINE_LABEL)) == Some(&name)
            && meta.owner_references.iter().flatten().any(|o| o.uid == uid)
            && (orphan || objects::is_adopted(meta))
    };
    !ctx.policies.namespaces_where(|p| pending(&p.metadata)).is_empty()
        || !ctx.bindings.namespaces_where(|r| pending(&r.metadata)).is_empty()
}

/// One pass over the baselines (run with the status writer): removes the finalizer of a deleted
/// baseline once every namespace was reconciled after its deletion and nothing is left to
/// release, and from a live one that no longer needs it.
pub async fn settle(ctx: &Context) -> bool {
    let mut ok = true;
    for b in ctx.baselines.state() {
        if !has_finalizer(&b) {
            continue;
        }
        let name = b.name_any();
        let done = if b.metadata.deletion_timestamp.is_some() {
            let reconciled = ctx
                .results
                .lock()
                .unwrap()
                .pending
                .get(&name)
                .is_none_or(|(_, left)| left.is_empty());
            reconciled && !left_to_release(ctx, &b)
        } else {
            b.spec.deletion_policy == DeletionPolicy::Delete && !left_to_release(ctx, &b)
        };
        if done {
            ok &= set(ctx, &name, false).await.is_ok();
            ctx.finalized.lock().unwrap().remove(&name);
        }
    }
    ok
}
