//! The release finalizer (`kubebaseline.io/release`): a baseline that has something to release
//! when it is deleted (objects it adopted, or everything with deletionPolicy Orphan) carries it,
//! so the garbage collector cannot delete those objects first. It is added before the first
//! write that makes it needed, and removed once nothing is left to release (or when no longer
//! needed). Written by server-side apply under its own field manager, so other finalizers stay.
//!
//! The writer and the settling pass run concurrently, and both read caches that lag behind this
//! process's own writes. Two rules keep them from undoing each other: while a write that needs
//! the finalizer is in flight ([`Adopting`]), the finalizer is not removed; and this process's
//! last finalizer write counts over a cache that does not show it yet.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::api::{DeletionPolicy, SecurityBaseline};
use crate::core::disposal::has_finalizer;
use crate::core::objects::{self, BASELINE_LABEL, RELEASE_FINALIZER};
use crate::runtime::context::Context;

const MANAGER: &str = "kube-baseline-finalizer";

/// What this process knows about the finalizers before its caches do.
#[derive(Default)]
pub struct Tracker {
    inner: Mutex<TrackerState>,
}

#[derive(Default)]
struct TrackerState {
    /// Baseline -> whether this process's last write set (true) or removed (false) its finalizer.
    written: HashMap<String, bool>,
    /// Baseline -> writes in flight that need its finalizer.
    in_flight: HashMap<String, usize>,
}

impl Tracker {
    fn written(&self, baseline: &str) -> Option<bool> {
        self.inner.lock().unwrap().written.get(baseline).copied()
    }

    fn record(&self, baseline: &str, on: bool) {
        self.inner.lock().unwrap().written.insert(baseline.to_string(), on);
    }

    /// Whether the baseline has the finalizer, by this process's last write until the cache
    /// (`cached`) shows the same, then by the cache.
    fn settled(&self, baseline: &str, cached: bool) -> bool {
        let mut state = self.inner.lock().unwrap();
        match state.written.get(baseline).copied() {
            Some(on) if on == cached => {
                state.written.remove(baseline);
                on
            }
            Some(on) => on,
            None => cached,
        }
    }

    fn begin(&self, baseline: &str) -> Adopting<'_> {
        let mut state = self.inner.lock().unwrap();
        *state.in_flight.entry(baseline.to_string()).or_default() += 1;
        Adopting {
            tracker: self,
            baseline: baseline.to_string(),
        }
    }

    fn in_flight(&self, baseline: &str) -> bool {
        self.inner.lock().unwrap().in_flight.contains_key(baseline)
    }
}

/// A write in flight that needs the baseline's finalizer (an adoption, or any write for an
/// Orphan baseline): until it is dropped, after the write is in the cache, the finalizer stays.
#[must_use = "the finalizer is protected only while the guard lives"]
pub struct Adopting<'a> {
    tracker: &'a Tracker,
    baseline: String,
}

impl Drop for Adopting<'_> {
    fn drop(&mut self) {
        let mut state = self.tracker.inner.lock().unwrap();
        if let Some(n) = state.in_flight.get_mut(&self.baseline) {
            *n -= 1;
            if *n == 0 {
                state.in_flight.remove(&self.baseline);
            }
        }
    }
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
    ctx.finalizers.record(name, on);
    info!(baseline = name, finalizer = RELEASE_FINALIZER, on, "finalizer written");
    Ok(())
}

/// Adds the finalizer unless the baseline already has it (by this process's last write, else
/// by the cache), or is being deleted: a finalizer cannot be added then, and nothing new is
/// adopted for it. The guard keeps the finalizer in place until the write it protects is done.
pub async fn ensure<'a>(ctx: &'a Context, baseline: &str) -> kube::Result<Adopting<'a>> {
    let guard = ctx.finalizers.begin(baseline);
    if let Some(b) = ctx.baselines.get(&ObjectRef::new(baseline))
        && b.metadata.deletion_timestamp.is_none()
        && !ctx.finalizers.written(baseline).unwrap_or_else(|| has_finalizer(&b))
    {
        set(ctx, baseline, true).await?;
    }
    Ok(guard)
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
    // Every status pass asks, for every baseline: it must not walk every managed object.
    ctx.any_managed(pending)
}

/// One pass over the baselines (run with the status writer): removes the finalizer of a deleted
/// baseline once every namespace was reconciled after its deletion and nothing is left to
/// release, and from a live one that no longer needs it; gives it back to a live one that has
/// something to release but lost it.
pub async fn settle(ctx: &Context) -> bool {
    let mut ok = true;
    for b in ctx.baselines.state() {
        let name = b.name_any();
        let has = ctx.finalizers.settled(&name, has_finalizer(&b));
        let deleting = b.metadata.deletion_timestamp.is_some();
        if !has {
            if !deleting && left_to_release(ctx, &b) && !ctx.finalizers.in_flight(&name) {
                ok &= set(ctx, &name, true).await.is_ok();
            }
            continue;
        }
        if ctx.finalizers.in_flight(&name) {
            continue;
        }
        let done = if deleting {
            let reconciled = ctx
                .results
                .lock()
                .unwrap()
                .pending
                .get(&name)
                .is_none_or(|(_, left)| left.is_empty());
            reconciled && !left_to_release(ctx, &b)
        } else {
            !left_to_release(ctx, &b)
        };
        if done {
            ok &= set(ctx, &name, false).await.is_ok();
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finalizer_is_protected_while_any_write_that_needs_it_is_in_flight() {
        let t = Tracker::default();
        let first = t.begin("aks");
        let second = t.begin("aks");
        drop(first);
        assert!(t.in_flight("aks"));
        assert!(!t.in_flight("other"));
        drop(second);
        assert!(!t.in_flight("aks"));
    }

    #[test]
    fn this_process_s_last_write_counts_until_the_cache_shows_it() {
        let t = Tracker::default();
        assert!(!t.settled("aks", false), "nothing written: the cache decides");
        t.record("aks", true);
        assert!(t.settled("aks", false), "the cache lags behind the write");
        assert!(t.settled("aks", true));
        assert!(!t.settled("aks", false), "caught up: the cache decides again");
        t.record("aks", false);
        assert!(!t.settled("aks", true));
    }
}
