//! `--policy-reports`: keeps one `wgpolicyk8s.io/v1alpha2` PolicyReport per selected namespace and
//! a ClusterPolicyReport summary in step with the outcomes (built by [`crate::core::report`]).
//! Reports are written after the status pass, only for namespaces whose outcome changed and
//! only when their content differs from the stored report: nothing in steady state or after a
//! restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tracing::{error, warn};

use crate::core::objects::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::core::report::{self, BaselineCounts, BaselineOutcome, REPORT_NAME};
use crate::core::status::NsState;
use crate::runtime::context::Context;
use crate::runtime::index::NamespacedIndex;
use crate::runtime::metrics::VerbLabel;
use crate::runtime::retry::WatchBackoff;

/// The stored reports this operator wrote (cluster-scoped ones under namespace "").
pub struct Reports {
    namespaced: ApiResource,
    cluster: ApiResource,
    stored: Arc<NamespacedIndex<Value>>,
    stored_cluster: Arc<NamespacedIndex<Value>>,
    missing_crd_logged: AtomicBool,
}

/// Whether the API serves PolicyReports and ClusterPolicyReports (their CRDs are installed),
/// for `--policy-reports Auto`. A discovery that fails counts as not served.
pub async fn served(client: &kube::Client) -> bool {
    let resources = tokio::time::timeout(
        Duration::from_secs(10),
        client.list_api_group_resources("wgpolicyk8s.io/v1alpha2"),
    )
    .await;
    let served = matches!(resources, Ok(Ok(list))
        if ["policyreports", "clusterpolicyreports"].iter().all(|r| list.resources.iter().any(|x| x.name == *r)));
    tracing::info!(
        served,
        "PolicyReports (--policy-reports Auto): kept when the API serves them"
    );
    served
}

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", kind))
}

impl Reports {
    pub fn new() -> Self {
        Self {
            namespaced: resource("PolicyReport"),
            cluster: resource("ClusterPolicyReport"),
            stored: Arc::default(),
            stored_cluster: Arc::default(),
            missing_crd_logged: AtomicBool::new(false),
        }
    }

    /// Watches the reports this operator wrote (by label): a report deleted or edited by someone
    /// else is written again. Runs until the process stops.
    pub async fn watch(self: Arc<Self>, ctx: Arc<Context>) {
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
        let config = watcher::Config::default().labels(&selector).timeout(25);
        let namespaced = watcher(
            Api::<DynamicObject>::all_with(ctx.client.clone(), &self.namespaced),
            config.clone(),
        )
        .backoff(WatchBackoff::default())
        .map_ok(|e| (false, e));
        let cluster = watcher(
            Api::<DynamicObject>::all_with(ctx.client.clone(), &self.cluster),
            config,
        )
        .backoff(WatchBackoff::default())
        .map_ok(|e| (true, e));
        let mut events = futures::stream::select(namespaced, cluster).boxed();
        while let Some(event) = events.next().await {
            let (is_cluster, event) = match event {
                Ok(e) => e,
                Err(e) => {
                    if !self.missing_crd_logged.swap(true, Ordering::Relaxed) {
                        error!(error = %e, "--policy-reports: cannot watch wgpolicyk8s.io/v1alpha2 reports; is the PolicyReport CRD installed? (see docs/gitops.md)");
                    }
                    continue;
                }
            };
            let index = if is_cluster { &self.stored_cluster } else { &self.stored };
            index.apply_with(&event, |o: &DynamicObject| serde_json::to_value(o).ok().map(Arc::new));
            if let watcher::Event::Delete(o) = &event {
                // Someone removed a report: it is rebuilt on the next pass.
                let mut r = ctx.results.lock().unwrap();
                match o.namespace() {
                    Some(ns) => r.reports_dirty.insert(ns),
                    None => r.reports_dirty.insert(String::new()),
                };
                drop(r);
                ctx.status_changed.notify_one();
            }
        }
    }

    fn count(ctx: &Context, verb: &str, kind: &str) {
        ctx.metrics
            .writes
            .get_or_create(&VerbLabel {
                verb: verb.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// Writes the reports of every namespace whose outcome changed, and the summary. False when
    /// something could not be written (it is kept dirty and tried again).
    pub async fn sync(&self, ctx: &Context) -> bool {
        if !self.stored.is_ready() || !self.stored_cluster.is_ready() {
            return false;
        }
        let now = Timestamp::now();
        let modes: BTreeMap<String, crate::api::Mode> = ctx
            .baselines
            .state()
            .iter()
            .map(|b| (b.name_any(), b.spec.mode))
            .collect();
        // Desired reports of the dirty namespaces, computed under the lock, written outside it.
        let (work, summary) = {
            let mut r = ctx.results.lock().unwrap();
            let dirty: BTreeSet<String> = std::mem::take(&mut r.reports_dirty);
            let mut work = Vec::new();
            for ns in dirty.iter().filter(|ns| !ns.is_empty()) {
                let outcomes: Vec<BaselineOutcome> = r
                    .outcomes
                    .iter()
                    .filter_map(|(b, by_ns)| {
                        by_ns.get(ns).map(|outcome| BaselineOutcome {
                            baseline: b,
                            mode: modes.get(b).copied().unwrap_or_default(),
                            outcome,
                        })
                    })
                    .collect();
                let previous = self.stored.get(ns, REPORT_NAME);
                let desired = report::namespace_report(ns, &outcomes, previous.as_deref(), now);
                match (desired, previous) {
                    (Some(d), Some(p)) if report::same(&p, &d) => {}
                    (None, None) => {}
                    (d, _) => work.push((ns.clone(), d)),
                }
            }
            let mut counts: BTreeMap<String, BaselineCounts> = BTreeMap::new();
            // From the counts kept with the outcomes: no walk over every namespace per pass.
            for (b, by_ns) in &r.outcomes {
                let c = counts.entry(b.clone()).or_default();
                c.mode = modes.get(b).copied();
                let n = by_ns.counts();
                let by_state = [
                    (NsState::Compliant, n.compliant),
                    (NsState::Drifted, n.drifted),
                    (NsState::Bypassed, n.bypassed),
                    (NsState::Exempted, n.exempted),
                    (NsState::Conflicted, n.conflicted),
                    (NsState::Failed, n.failed),
                ];
                for (state, count) in by_state.into_iter().filter(|(_, count)| *count > 0) {
                    c.by_state.insert(state.as_str().to_string(), count as usize);
                }
                c.selected = by_ns.len();
                c.complying = (n.compliant + n.exempted) as usize;
                c.failing = by_ns.not_complying().take(20).cloned().collect();
            }
            (work, counts)
        };
        let ok = futures::stream::iter(work)
            .map(|(ns, desired)| async move {
                let done = self.write(ctx, &ns, desired).await;
                if !done {
                    ctx.results.lock().unwrap().reports_dirty.insert(ns);
                }
                done
            })
            .buffer_unordered(ctx.settings.concurrency.max(1) as usize)
            .fold(true, |all, one| futures::future::ready(all && one))
            .await;
        let previous = self.stored_cluster.get("", REPORT_NAME);
        let desired = report::cluster_report(&summary, previous.as_deref(), now);
        let cluster_ok = if previous.is_some_and(|p| report::same(&p, &desired)) {
            true
        } else {
            let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &self.cluster);
            Self::count(ctx, "apply", "ClusterPolicyReport");
            self.apply(api, desired, true).await
        };
        ok && cluster_ok
    }

    async fn write(&self, ctx: &Context, ns: &str, desired: Option<Value>) -> bool {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &self.namespaced);
        match desired {
            Some(d) => {
                Self::count(ctx, "apply", "PolicyReport");
                self.apply(api, d, false).await
            }
            None => {
                Self::count(ctx, "delete", "PolicyReport");
                match api.delete(REPORT_NAME, &DeleteParams::default()).await {
                    Ok(_) => true,
                    Err(kube::Error::Api(s)) if s.code == 404 => true,
                    Err(e) => {
                        warn!(namespace = ns, error = %e, "could not delete the PolicyReport");
                        false
                    }
                }
            }
        }
    }

    async fn apply(&self, api: Api<DynamicObject>, desired: Value, cluster: bool) -> bool {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(REPORT_NAME, &params, &Patch::Apply(&desired)).await {
            Ok(written) => {
                // Known at once, so the next pass does not write it again before the watch says so.
                let index = if cluster { &self.stored_cluster } else { &self.stored };
                if let Ok(v) = serde_json::to_value(&written) {
                    index.apply_with(&watcher::Event::Apply(written), |_| Some(Arc::new(v.clone())));
                }
                true
            }
            Err(e) => {
                if matches!(&e, kube::Error::Api(s) if s.code == 404)
                    && !self.missing_crd_logged.swap(true, Ordering::Relaxed)
                {
                    error!(
                        "--policy-reports: the wgpolicyk8s.io/v1alpha2 PolicyReport CRDs are not installed; install them (see docs/gitops.md)"
                    );
                } else {
                    warn!(error = %e, "could not write a policy report");
                }
                false
            }
        }
    }
}

impl Default for Reports {
    fn default() -> Self {
        Self::new()
    }
}

/// Asks for another pass in a while (never a hot loop) after a report could not be written.
pub fn retry_later(ctx: Arc<Context>) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        ctx.status_changed.notify_one();
    });
}
