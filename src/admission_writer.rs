//! The one task that keeps each baseline's ValidatingAdmissionPolicyBindings as
//! [`crate::admission`] wants them: on a baseline change, on any change to the bindings
//! themselves, and when an exemption expires. Writes only on difference; deletes only bindings
//! it made for baselines that no longer want them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{debug, info, warn};

use crate::admission;
use crate::controller::Context;
use crate::metrics::{ErrorLabel, VerbLabel};
use crate::objects::{self, BASELINE_LABEL, FIELD_MANAGER};

const KIND: &str = "ValidatingAdmissionPolicyBinding";

/// Runs until the process stops (the caller aborts it).
pub async fn run(ctx: Arc<Context>) {
    let api: Api<ValidatingAdmissionPolicyBinding> = Api::all(ctx.client.clone());
    let (store, writer) = reflector::store();
    let wake = Arc::new(tokio::sync::Notify::new());
    let on_event = wake.clone();
    let watch = watcher(
        api.clone(),
        watcher::Config::default().labels(&objects::managed_selector()),
    )
    .default_backoff()
    .reflect(writer)
    .for_each(move |event| {
        if let Err(e) = event {
            debug!(error = %e, "admission binding watch");
        }
        on_event.notify_one();
        futures::future::ready(())
    });
    tokio::spawn(watch);

    ctx.wait_until_synced().await;
    let _ = store.wait_until_ready().await;
    loop {
        let (ok, next) = sync(&ctx, &api, &store).await;
        // A failed write is retried, capped; an exemption expiry rewrites the bindings on time.
        let mut sleep = next
            .map(|t| t.duration_since(Timestamp::now()).unsigned_abs() + Duration::from_millis(500))
            .unwrap_or(Duration::from_secs(3600));
        if !ok {
            sleep = sleep.min(Duration::from_secs(5));
        }
        tokio::select! {
            _ = ctx.admission_changed.notified() => {}
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
        // Gather a burst of events into one pass.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One pass over every baseline; returns whether every write succeeded and when to look again.
async fn sync(
    ctx: &Context,
    api: &Api<ValidatingAdmissionPolicyBinding>,
    store: &Store<ValidatingAdmissionPolicyBinding>,
) -> (bool, Option<Timestamp>) {
    let now = Timestamp::now();
    let mut ok = true;
    let mut next: Option<Timestamp> = None;
    let mut keep: BTreeSet<String> = BTreeSet::new();
    let mut hands_off: BTreeSet<String> = BTreeSet::new();
    let actual: BTreeMap<String, Arc<ValidatingAdmissionPolicyBinding>> =
        store.state().into_iter().map(|b| (b.name_any(), b)).collect();
    for baseline in ctx.baselines.state() {
        let Some(wanted) = admission::wanted(&baseline, &ctx.settings.system_namespaces, now) else {
            hands_off.insert(baseline.name_any());
            continue;
        };
        next = [next, wanted.next_change].into_iter().flatten().min();
        for desired in wanted.bindings {
            let name = desired.name_any();
            keep.insert(name.clone());
            if actual.get(&name).is_some_and(|a| admission::in_sync(a, &desired)) {
                continue;
            }
            count_write(ctx, "apply");
            match api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await
            {
                Ok(_) => info!(binding = %name, "admission binding applied"),
                Err(e) => ok &= failed(ctx, &name, e),
            }
        }
    }
    for (name, binding) in &actual {
        let baseline = binding.labels().get(BASELINE_LABEL).cloned().unwrap_or_default();
        if keep.contains(name) || hands_off.contains(&baseline) {
            continue;
        }
        count_write(ctx, "delete");
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: binding.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => info!(binding = %name, "admission binding removed"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => ok &= failed(ctx, name, e),
        }
    }
    (ok, next)
}

fn count_write(ctx: &Context, verb: &str) {
    ctx.metrics
        .writes
        .get_or_create(&VerbLabel {
            verb: verb.into(),
            kind: KIND.into(),
        })
        .inc();
}

fn failed(ctx: &Context, name: &str, e: kube::Error) -> bool {
    warn!(binding = %name, error = %e, "could not write admission binding");
    ctx.metrics
        .errors
        .get_or_create(&ErrorLabel {
            error: crate::error::kube_error_label(&e).into(),
        })
        .inc();
    false
}
